"""Nested data-size subsets of any source (config.data.data_size), as the paper's YFCC subsets.

Every image has an id, and every source is put in one deterministic order, the subset order:
ascending key, ties by id (bytes order), where

    key(id) = first 8 bytes, big-endian, of blake2b("ssl_jax-subset-v1:" + id)  (HASH_METHOD).

The subset of size n is the first n images in that order. So the first 1M images are inside the
first 10M, which are inside the first 50M, and the subset depends only on the ids: not on listing
order, file-system, machine or seed.

Ids (UTF-8):
- folder: the image's path relative to the folder, with "/" separators ("cat/001.jpg"), so a
  copy of the folder at another root gives the same subset;
- filelist: the list entry as written (before relative entries are resolved against the list's
  folder, label excluded): relative entries survive moving the list with its images;
- tfds: the record's tfds_id ("<dataset>-<split>.tfrecord-00003-of-01024__517"): the file
  name and the position in it. It needs no reading of the data, but depends on how the dataset
  was prepared (TFDS version and shard count); the same prepared files give the same subset,
  and the run's record shows any difference;
- demo: the example's index in the full demo set ("17").

config.data.data_size, read by value (so 10_000_000 and 10_000_000.0 mean the same):
- 0: the whole source, untouched (its own fixed order);
- a number in (0, 1]: that fraction of the source, floor(fraction * N) images, at least 1
  (1 therefore means all of it, in subset order);
- an integer > 1: that many images; more than the source holds is an error.

Folder, file list and demo subsets are exact and held in memory: the kept records are kept in
subset order (so a list given in another order still gives the same training stream), and each
process then takes every process_count-th of them, as without a subset.

A TFDS subset is exact too, without reading any image: the split's ids are computed from its
file instructions (file names and example counts), the key of the n-th one in subset order is the
threshold, and the records stream through a filter `(key, id) <= threshold` before shuffling.
Each process's count (for epochs and resumption) is counted the same way on its even split.
Listing costs about a microsecond per id, once per run start: seconds for ImageNet, minutes for
a 100M-image split.

The record (`record_subset`, written in the run's workdir at start-up):
- data_subset.json: source kind, location, data_size requested, count, HASH_METHOD, how ids are
  formed, and ids_sha256 = sha256 of the kept ids in subset order, one per line, each followed
  by "\\n" (for a TFDS subset also the threshold; for a whole TFDS split, where listing could be
  costly, no ids_sha256: its name, version, split and size stand for it);
- data_subset_ids.txt (over 1M ids: data_subset_ids.txt.gz), those lines themselves, for folder,
  file list and demo sources.
A run started again in the same workdir compares the record with its data (kind, count, hash
method, ids_sha256; not the location, so data moved elsewhere is fine) and refuses to go on when
they differ.
"""

from __future__ import annotations

import dataclasses
import fractions
import gzip
import hashlib
import json
import math
import os
import posixpath

import numpy as np

from ssl_jax import paths

HASH_PREFIX = b"ssl_jax-subset-v1:"
HASH_METHOD = 'blake2b(b"ssl_jax-subset-v1:" + id), first 8 bytes big-endian; ties by id'
RECORD_FILE = "data_subset.json"
IDS_FILE = "data_subset_ids.txt"
IDS_GZIP_ABOVE = 1_000_000  # more ids than this are written gzip'd

ID_MEANING = {
    "folder": "path relative to the folder, '/' separators",
    "filelist": "list entry as written",
    "tfds": "tfds_id",
    "demo": "index in the full demo set",
}

ALLOWED = "0 (all images), a fraction in (0, 1], or an integer count > 1"


def key(image_id: bytes) -> int:
    """The subset-order key of one id: a uint64 in [0, 2**64)."""
    digest = hashlib.blake2b(HASH_PREFIX + image_id, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def keys(ids: np.ndarray) -> np.ndarray:
    """(N,) uint64 keys of (N,) object array of bytes ids."""
    return np.fromiter((key(i) for i in ids), dtype=np.uint64, count=len(ids))


def subset_order(ids: np.ndarray) -> np.ndarray:
    """(N,) int64 indices that put `ids` in subset order: ascending key, ties by id."""
    ids = np.asarray(ids, dtype=object)
    k = keys(ids)
    order = np.argsort(k, kind="stable")
    sorted_keys = k[order]
    # Equal keys: a repeated list entry, or (rarely) a 64-bit collision; order them by id.
    equal = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    for start in equal[np.r_[True, np.diff(equal) > 1]] if equal.size else ():
        stop = start + 1
        while stop < len(k) and sorted_keys[stop] == sorted_keys[start]:
            stop += 1
        run = order[start:stop]
        order[start:stop] = run[np.argsort(ids[run], kind="stable")]
    return order


def below(ids: np.ndarray, threshold: tuple[int, bytes]) -> np.ndarray:
    """(N,) bool: whether each id comes at or before `threshold` = (key, id) in subset order."""
    threshold_key, threshold_id = int(threshold[0]), bytes(threshold[1])
    out = np.zeros(len(ids), bool)
    for n, image_id in enumerate(ids):
        k = key(image_id)
        out[n] = k < threshold_key or (k == threshold_key and image_id <= threshold_id)
    return out


def check_data_size(data_size) -> None:
    """Raises ValueError unless config.data.data_size is one of the ALLOWED values."""
    ok = isinstance(data_size, (int, float)) and not isinstance(data_size, bool)
    ok = ok and math.isfinite(data_size) and data_size >= 0
    if ok and data_size > 1:
        ok = float(data_size).is_integer()
    if not ok:
        raise ValueError(
            f"config.data.data_size={data_size!r} is not allowed: it must be {ALLOWED}."
        )


def subset_size(data_size, total: int, what: str = "the source") -> int:
    """How many of `total` images config.data.data_size asks for (see the module docstring)."""
    check_data_size(data_size)
    if data_size == 0:
        return total
    if data_size <= 1:
        # Exact decimal arithmetic: floor(0.29 * 100) is 29, not 28.
        return max(1, math.floor(fractions.Fraction(repr(float(data_size))) * total))
    count = int(data_size)
    if count > total:
        raise ValueError(
            f"config.data.data_size={data_size!r} asks for {count} images but {what} has only "
            f"{total}: use a count <= {total}, a fraction in (0, 1], or 0 for all of them."
        )
    return count


def tfds_ids(builder, split: str) -> np.ndarray:
    """(N,) object array of the tfds_ids of a prepared split, from its file instructions.

    They match the "tfds_id" that reading with ReadConfig(add_tfds_id=True) gives: the shard's
    file name, "__", and the example's position in the shard.
    """
    out = []
    for instruction in builder.info.splits[split].file_instructions:
        name = posixpath.basename(os.fspath(instruction.filename)).encode("utf-8")
        start = int(instruction.skip)
        out.extend(name + b"__%d" % i for i in range(start, start + int(instruction.take)))
    return np.asarray(out, dtype=object)


def image_ids(source) -> np.ndarray:
    """(N,) object array of the UTF-8 ids of a folder, file list or demo source's records."""
    if source.kind == "tfds":
        raise TypeError("TFDS ids come from tfds_ids(builder, split), not from the records.")
    if source.ids is not None:
        return source.ids
    if source.kind == "demo":
        return np.asarray([b"%d" % i for i in range(source.num_examples)], dtype=object)
    return source.paths


def _describe(source) -> str:
    if source.kind == "tfds":
        return f"TFDS {source.builder.name} split {source.split!r}"
    if source.kind == "demo":
        return "the demo set"
    return f"the {source.kind} {source.location}"


def take_subset(source, data_size):
    """The first n images of `source` in subset order, n given by config.data.data_size.

    data_size 0 returns `source` itself. Otherwise the result is a source of the same type whose
    num_examples is n; see the module docstring.
    """
    check_data_size(data_size)
    if data_size == 0:
        return source
    if source.kind == "tfds":
        ids = tfds_ids(source.builder, source.split)
        n = subset_size(data_size, len(ids), _describe(source))
        last = ids[subset_order(ids)[n - 1]]
        return dataclasses.replace(
            source,
            num_examples=n,
            data_size=data_size,
            threshold=(key(last), bytes(last)),
            _shard_sizes={},
        )
    ids = image_ids(source)
    n = subset_size(data_size, len(ids), _describe(source))
    kept = subset_order(ids)[:n]
    return dataclasses.replace(source.take(kept), ids=ids[kept], data_size=data_size)


def _ids_text(ids: np.ndarray) -> bytes:
    return b"".join(bytes(i) + b"\n" for i in ids)


def subset_record(source) -> tuple[dict, bytes | None]:
    """(record, ids file content or None) describing exactly which images `source` holds."""
    kind = source.kind
    record = {
        "source": kind,
        "data_size": source.data_size,
        "count": int(source.num_examples),
        "hash": HASH_METHOD,
        "id": ID_MEANING[kind],
    }
    if kind == "tfds":
        record["location"] = {
            "name": source.builder.name,
            "version": str(source.builder.version),
            "split": source.split,
            "data_dir": os.fspath(source.builder.data_dir),
        }
        if source.threshold is None:
            return record, None
        ids = tfds_ids(source.builder, source.split)
        kept = ids[below(ids, source.threshold)]
        text = _ids_text(kept[subset_order(kept)])
        record["threshold"] = [str(source.threshold[0]), source.threshold[1].decode("utf-8")]
        record["ids_sha256"] = hashlib.sha256(text).hexdigest()
        return record, None
    record["location"] = source.location if kind != "demo" else "built-in demo photos"
    ids = image_ids(source)
    text = _ids_text(ids[subset_order(ids)])
    record["ids_sha256"] = hashlib.sha256(text).hexdigest()
    return record, text


def _identity(record: dict) -> dict:
    """What must match for a run to go on: the images, not where they lie or how asked for."""
    out = {k: record.get(k) for k in ("source", "count", "hash", "ids_sha256")}
    if record.get("source") == "tfds" and "ids_sha256" not in record:
        location = record.get("location") or {}
        out.update({k: location.get(k) for k in ("name", "version", "split")})
    return out


def record_subset(workdir: str, source, *, write: bool = True) -> dict:
    """Records the images `source` holds in `workdir`, or checks them against an earlier record.

    With no workdir/data_subset.json yet, writes it (and the ids file, see the module docstring)
    when `write` (the trainer writes on process 0 only). With one, raises ValueError if this
    source's images differ from those recorded.

    Returns:
        The record of `source`.
    """
    record, text = subset_record(source)
    path = paths.join(workdir, RECORD_FILE)
    if paths.exists(path):
        old = paths.read_json(path)
        then, now = _identity(old), _identity(record)
        changed = [f"{k}: {then[k]!r} then, {now[k]!r} now" for k in now if then[k] != now[k]]
        if changed:
            raise ValueError(
                f"The run in {workdir} was started on other images than config.data now gives "
                f"({'; '.join(changed)}). "
                "Restore the data and config.data (source, path, name, split, data_dir, "
                f"data_size) it was started with (see {path}), or use a new workdir."
            )
        return record
    if write:
        if text is not None:
            name = IDS_FILE + (".gz" if record["count"] > IDS_GZIP_ABOVE else "")
            content = gzip.compress(text, mtime=0) if name.endswith(".gz") else text
            paths.write_bytes(paths.join(workdir, name), content)
            record["ids_file"] = name
        paths.write_text(path, json.dumps(record, indent=2) + "\n")
    return record
