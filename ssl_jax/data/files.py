"""Images named by path: an image folder ("folder") or a text file of paths ("filelist").

Local paths and gs:// URLs work (``ssl_jax.paths``). The records are sorted (folder)
or kept in list order (file list), a fixed order independent of the seed; process p of n takes
records p, p + n, p + 2n, ...
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow as tf

from ssl_jax import paths
from ssl_jax.data import decode as decode_lib
from ssl_jax.data import records

_log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True, eq=False)
class FileSource:
    """Images named by path: an image folder ("folder") or a text file of paths ("filelist").

    Attributes:
        kind: "folder" or "filelist".
        location: the folder or list it came from (config.data.path).
        paths: (N,) object array of UTF-8 encoded paths, in a fixed, seed-independent order.
        labels: (N,) int32, -1 where unlabelled.
        class_names: folder class names in label order; None for a file list or a flat folder.
        ids: (N,) object array of UTF-8 image ids (see subsets.py): the path relative to the
            folder (POSIX), or the list entry as written; None means the paths themselves.
        data_size: config.data.data_size this source was cut to (0: all of it).
    """

    kind: str
    location: str
    paths: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] | None
    ids: np.ndarray | None = None
    data_size: float = 0

    @property
    def num_examples(self) -> int:
        return len(self.paths)

    def shard_size(self, process_index: int, process_count: int) -> int:
        return records.strided_shard_size(self.num_examples, process_index, process_count)

    def epoch_records(
        self,
        epoch: tf.Tensor,
        first: tf.Tensor,
        *,
        seed: int,
        process_index: int,
        process_count: int,
        shuffle_buffer: int,
    ) -> tf.data.Dataset:
        del shuffle_buffer  # the whole shard is permuted
        return records.strided_epoch(
            {"path": self.paths, "label": self.labels},
            epoch,
            first,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            what=f"{self.kind} {self.location}",
        )

    def ordered_records(self, process_index: int, process_count: int) -> tf.data.Dataset:
        """This process's records in the fixed order (rows p, p + n, ...), with "position"."""
        return records.ordered_shard(
            {"path": self.paths, "label": self.labels}, process_index, process_count
        )

    def take(self, rows: np.ndarray) -> FileSource:
        """The records at ``rows``, in that order (ids follow)."""
        return dataclasses.replace(
            self,
            paths=self.paths[rows],
            labels=self.labels[rows],
            ids=None if self.ids is None else self.ids[rows],
        )

    def decode(self, record, *, min_short: int, watch=None, cache=None):
        return decode_lib.tf_decode(
            record["path"],
            record["path"],
            is_path=True,
            min_short=min_short,
            watch=watch,
            cache=cache,
        )


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(root: str) -> list[str]:
    """Every image file under root, recursively; hidden files and folders (".x") are ignored."""
    found = []
    for dirpath, dirnames, filenames in paths.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            paths.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and _has_image_extension(f)
        )
    return found


def folder_source(path: str) -> FileSource:
    """All images under `path`; labels from class subfolders when there are any.

    Layout rule (as torchvision's ImageFolder): if any non-hidden subfolder of `path` holds an
    image (at any depth), every non-hidden subfolder is a class, labelled by its rank in sorted
    name order, and its images (at any depth) get that label. Images lying directly in `path`
    next to class folders get label -1 (with a warning). With no such subfolder the folder is
    flat and every label is -1. Collections sharded into numbered subfolders (YFCC style) would
    look like classes: give those as a file list.
    """
    root = path.rstrip("/") if len(path) > 1 else path
    if not paths.isdir(root):
        raise FileNotFoundError(
            f"config.data.path={path!r} is not a folder (config.data.source='folder' needs a "
            "folder of images, flat or with one subfolder per class)."
        )
    files = sorted(_list_images(root))
    if not files:
        raise ValueError(
            f"No image files under config.data.path={path!r} (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}, any case)."
        )
    separator = "/" if paths.is_url(root) else os.sep
    prefix = root if root.endswith(separator) else root + separator
    subfolders = sorted(
        d.rstrip("/")
        for d in paths.listdir(root)
        if not d.startswith(".") and paths.isdir(paths.join(root, d.rstrip("/")))
    )
    relative = [f[len(prefix) :] for f in files]
    in_subfolder = [os.sep in r or "/" in r for r in relative]
    if not any(in_subfolder):
        labels = np.full(len(files), -1, np.int32)
        class_names = None
    else:
        class_index = {name: i for i, name in enumerate(subfolders)}
        top = [
            r.replace(os.sep, "/").split("/", 1)[0] if sub else None
            for r, sub in zip(relative, in_subfolder, strict=True)
        ]
        labels = np.asarray([class_index.get(t, -1) for t in top], np.int32)
        class_names = tuple(subfolders)
        loose = int(np.sum(labels < 0))
        if loose:
            _log.warning(
                "%d images lie directly in %s next to %d class folders: they get label -1.",
                loose,
                path,
                len(subfolders),
            )
    return FileSource(
        kind="folder",
        location=path,
        paths=np.asarray([f.encode("utf-8") for f in files], dtype=object),
        labels=labels,
        class_names=class_names,
        ids=np.asarray([r.replace(os.sep, "/").encode("utf-8") for r in relative], dtype=object),
    )


def parse_file_list(text: str, list_path: str) -> tuple[list[str], list[int]]:
    """Parses a file list: one path per line, optionally whitespace and an integer label.

    Blank lines and lines starting with '#' are ignored. Relative paths are resolved against the
    list's folder. A path that itself ends in whitespace and an integer must carry a label.

    Returns:
        (paths, labels), labels -1 where a line has none.
    """
    entries, labels = _parse_entries(text)
    return [_resolve(e, list_path) for e in entries], labels


def _resolve(entry: str, list_path: str) -> str:
    """A list entry as a path: relative entries are relative to the list's folder."""
    if paths.is_url(entry) or os.path.isabs(entry):
        return entry
    return paths.join(paths.dirname(list_path), entry)


def _parse_entries(text: str) -> tuple[list[str], list[int]]:
    """(entries as written, labels) of a file list; see `parse_file_list`."""
    entries, labels = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label = -1
        parts = line.rsplit(None, 1)
        if len(parts) == 2:
            try:
                label = int(parts[1])
                line = parts[0].rstrip()
            except ValueError:
                pass
        entries.append(line)
        labels.append(label)
    return entries, labels


def filelist_source(path: str) -> FileSource:
    """Images listed in the text file `path` (local or gs://); see `parse_file_list`."""
    if not paths.isfile(path):
        raise FileNotFoundError(
            f"config.data.path={path!r} is not a file (config.data.source='filelist' needs a "
            "text file with one image path per line, optionally followed by an integer label)."
        )
    entries, labels = _parse_entries(paths.read_text(path))
    resolved = [_resolve(e, path) for e in entries]
    if not resolved:
        raise ValueError(f"The file list config.data.path={path!r} names no images.")
    return FileSource(
        kind="filelist",
        location=path,
        paths=np.asarray([p.encode("utf-8") for p in resolved], dtype=object),
        labels=np.asarray(labels, np.int32),
        class_names=None,
        ids=np.asarray([e.encode("utf-8") for e in entries], dtype=object),
    )
