"""Labelled evaluation sets for frozen-feature benchmarks (VOC07 SVMs, low-shot, Places205).

Every set is a `LabelledSet`: one label matrix over a fixed, seed-independent record order, and
a tf.data reader of the images for feature extraction.

    dataset = make_labelled(config.data.train)   # or voc07_tfds("trainval"), vocdevkit(...), ...
    dataset.labels         # (N, C) int8: 1 present, 0 absent, -1 difficult
    dataset.ids            # (N,) str
    for e in dataset.images(size=224, process_index=p, process_count=n).batch(64): ...
        # e["position"] (B,) int64 rows of ids/labels, e["image"] (B, 224, 224, 3) uint8,
        # e["ok"] (B,) bool (False: the file could not be decoded, the image is zeros)

Sources:
- "voc07_tfds": TFDS ``voc/2007`` (prepared beforehand; nothing here downloads);
- "vocdevkit": an extracted VOCdevkit folder (the per-class ImageSets/Main files);
- "folder" / "filelist": single-label sets (class subfolders, or "path label" lines), one-hot;
- "demo": crops of the photos shipped with the package, labelled by the photo they come from.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from ssl_jax.data import decode as decode_lib
from ssl_jax.data import demo as demo_lib
from ssl_jax.data import files as files_lib

_log = logging.getLogger(__name__)

SOURCES = ("voc07_tfds", "vocdevkit", "folder", "filelist", "demo")

# The order of VOC's classes, as in the devkit and TFDS (ImageSets/Main/<class>_<split>.txt).
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

PRESENT, ABSENT, DIFFICULT = 1, 0, -1

# VOCdevkit's per-class files write 1 present, -1 absent, 0 difficult (only difficult objects).
_DEVKIT_VALUES = {"1": PRESENT, "-1": ABSENT, "0": DIFFICULT}

# TFDS voc/2007 split names per benchmark split; "trainval" is the paper's training set (5011).
VOC07_TFDS_SPLITS = {
    "trainval": ("train", "validation"),
    "test": ("test",),
    "train": ("train",),
    "validation": ("validation",),
}

DEMO_NUM_EXAMPLES = 120  # per split: 20 crops of each of the 6 photos
DEMO_SPLITS = ("train", "test")

DEFAULT_KEY = "config.dataset"


# ----------------------------------------------------------------------------------------------
# Image readers: each yields {"position", "image" (H, W, 3) uint8 decoded, "ok"} for positions.


@dataclasses.dataclass(frozen=True, eq=False)
class _FileImages:
    """Images named by path. paths: (N,) object array of UTF-8 encoded paths."""

    paths: np.ndarray

    def take(self, positions: np.ndarray) -> _FileImages:
        return _FileImages(self.paths[positions])

    def read(self, positions: np.ndarray) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "position": positions.astype(np.int64),
                "path": tf.constant(list(self.paths[positions]), tf.string, shape=[len(positions)]),
            }
        )

        def load(record):
            # Full-size decode (min_short=0): the resize that follows must see the same pixels
            # as a plain decode, so that features match other implementations of the protocol.
            image, ok = decode_lib.tf_decode(
                record["path"], record["path"], is_path=True, min_short=0
            )
            return {"position": record["position"], "image": image, "ok": ok}

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@dataclasses.dataclass(frozen=True, eq=False)
class _TfdsImages:
    """Images of a prepared TFDS dataset, streamed in stored order.

    Attributes:
        builder: the prepared tfds DatasetBuilder.
        splits: TFDS split names, read one after the other (e.g. train then validation).
        records: (N,) int64 index of each row in that concatenated stream (increasing).
        ids: (N,) str ids, checked against the stream to catch a changed record order.
    """

    builder: Any
    splits: tuple[str, ...]
    records: np.ndarray
    ids: np.ndarray

    def take(self, positions: np.ndarray) -> _TfdsImages:
        return _TfdsImages(self.builder, self.splits, self.records[positions], self.ids[positions])

    def read(self, positions: np.ndarray) -> tf.data.Dataset:
        # TFRecords cannot be read at an index: every process streams all records (bytes only,
        # not decoded) and keeps its own. Fine for evaluation sets of a few thousand images.
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.records[positions], tf.int64),
                tf.constant(positions, tf.int64),
            ),
            default_value=-1,
        )
        expected = tf.constant([i.encode("utf-8") for i in self.ids], tf.string, [len(self.ids)])

        def with_position(record, example):
            return {
                "position": table.lookup(record),
                "bytes": example["image"],
                "id": example["id"],
            }

        def load(record):
            check = tf.debugging.assert_equal(
                tf.gather(expected, record["position"]),
                record["id"],
                message="TFDS voc/2007 returned its records in a different order than when the "
                "labels were read; the prepared data changed underneath",
            )
            with tf.control_dependencies([check]):
                image, ok = decode_lib.tf_decode(
                    record["bytes"], record["id"], is_path=False, min_short=0
                )
            return {"position": record["position"], "image": image, "ok": ok}

        ds = (
            _voc_tfds_stream(self.builder, self.splits)
            .enumerate()
            .map(with_position)
            .filter(lambda r: r["position"] >= 0)
        )
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@dataclasses.dataclass(frozen=True, eq=False)
class _DemoImages:
    """Crops of the packaged demo photos. examples: (N,) index into the DemoSource's crops."""

    source: demo_lib.DemoSource
    examples: np.ndarray

    def take(self, positions: np.ndarray) -> _DemoImages:
        return _DemoImages(self.source, self.examples[positions])

    def read(self, positions: np.ndarray) -> tf.data.Dataset:
        source = self.source

        def crop(example):
            top, left, height, width = (int(v) for v in source.boxes[example])
            photo = source.photos[source.labels[example]]
            return np.ascontiguousarray(photo[top : top + height, left : left + width])

        def load(record):
            image = tf.numpy_function(crop, [record["example"]], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            return {"position": record["position"], "image": image, "ok": tf.constant(True)}

        ds = tf.data.Dataset.from_tensor_slices(
            {
                "position": positions.astype(np.int64),
                "example": self.examples[positions].astype(np.int64),
            }
        )
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


_Images = _FileImages | _TfdsImages | _DemoImages


# ----------------------------------------------------------------------------------------------
# The labelled set.


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledSet:
    """A labelled evaluation set in a fixed, seed-independent order.

    Attributes:
        name: what the set is, for logs and results, e.g. "voc2007/trainval", "folder:/data/x".
        ids: (N,) str, unique per image (VOC: "<tfds split>/<image id>" for TFDS,
            "<image id>" for a VOCdevkit; files: the path).
        labels: (N, C) int8, 1 present, 0 absent, -1 difficult (VOC only; single-label sets
            are one-hot).
        class_names: the C class names, in column order.
    """

    name: str
    ids: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    _images: _Images | None = dataclasses.field(repr=False, default=None)

    def __post_init__(self):
        ids = np.asarray(self.ids).astype(str)
        labels = np.asarray(self.labels)
        fix = "check the dataset's files (its config .path / .split / .data_dir)"
        if len(ids) == 0:
            raise ValueError(f"The labelled set {self.name!r} has no images: {fix}.")
        if labels.ndim != 2 or labels.shape != (len(ids), len(self.class_names)):
            raise ValueError(
                f"The labelled set {self.name!r} has labels of shape {labels.shape}, expected "
                f"(N={len(ids)} images, C={len(self.class_names)} classes)."
            )
        bad = ~np.isin(labels, (PRESENT, ABSENT, DIFFICULT))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"The labelled set {self.name!r} has label {labels[row, col]} for image "
                f"{str(ids[row])!r}, class {self.class_names[col]!r}; allowed: 1 present, "
                f"0 absent, -1 difficult: {fix}."
            )
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != len(ids):
            repeated = unique[counts > 1]
            raise ValueError(
                f"The labelled set {self.name!r} lists {len(repeated)} image ids more than once "
                f"(e.g. {repeated[:3].tolist()}); each image must appear once: {fix}."
            )
        labels = labels.astype(np.int8)
        # Read-only: the arrays are shared with subsets and with callers that cache features.
        ids.setflags(write=False)
        labels.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def num_examples(self) -> int:
        return len(self.ids)

    def take(self, positions: np.ndarray) -> LabelledSet:
        """The subset at `positions` (strictly increasing, so the set's order is kept).

        Args:
            positions: (M,) integer rows of this set.

        Returns:
            A LabelledSet of M images whose position i is this set's `positions[i]`.
        """
        positions = np.asarray(positions)
        if positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
            raise ValueError(
                f"take() needs a 1-D array of integer positions, got dtype {positions.dtype} "
                f"and shape {positions.shape}."
            )
        if len(positions) and (positions[0] < 0 or positions[-1] >= self.num_examples):
            raise ValueError(
                f"take() positions must lie in [0, {self.num_examples}) for {self.name!r}; "
                f"got {positions.min()}..{positions.max()}."
            )
        if np.any(np.diff(positions) <= 0):
            raise ValueError(
                f"take() positions for {self.name!r} must be strictly increasing (the subset "
                "keeps the set's order): pass np.unique(positions)."
            )
        return LabelledSet(
            name=self.name,
            ids=self.ids[positions],
            labels=self.labels[positions],
            class_names=self.class_names,
            _images=self._images.take(positions),
        )

    def images(
        self, *, size: int, process_index: int = 0, process_count: int = 1
    ) -> tf.data.Dataset:
        """This process's images, resized to size x size, for feature extraction.

        Process p of n reads positions p, p + n, p + 2n, ... in increasing order (a process may
        get none when n > N). Each image is decoded at full size and resized to size x size
        ignoring its aspect ratio (PROTOCOLS.md, "Frozen features"), with tf.image.resize's
        bilinear interpolation without antialiasing (as OpenCV's INTER_LINEAR), rounded to
        uint8. A file that cannot be decoded gives ok=False and a zero image; it is counted in
        `ssl_jax.data.skip_counts()` and logged, never raised.

        Args:
            size: output side in pixels (224 for ResNet, 227 for AlexNet).
            process_index: this process, in [0, process_count).
            process_count: number of processes reading the set.

        Returns:
            Unbatched dataset of {"position": int64 scalar (row of ids/labels), "image":
            (size, size, 3) uint8 RGB, "ok": bool scalar}.
        """
        if size <= 0:
            raise ValueError(f"images(size={size}): the image side must be positive.")
        if not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index={process_index} is not in [0, process_count={process_count})."
            )
        positions = np.arange(process_index, self.num_examples, process_count, dtype=np.int64)

        def resize(record):
            image = tf.image.resize(
                record["image"], (size, size), method="bilinear", antialias=False
            )
            image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
            return {"position": record["position"], "image": image, "ok": record["ok"]}

        ds = self._images.read(positions)
        return ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------------------------
# VOC2007 from TFDS.


def _voc_stem(filename: str) -> str:
    """The VOC image id of an image file name: "000005.jpg" -> "000005"."""
    return re.sub(r"\.[^./]*$", "", filename)


def _voc_tfds_stream(builder, splits: tuple[str, ...]) -> tf.data.Dataset:
    """The examples of `splits`, one split after the other, each in stored order.

    Elements: {"id": "<split>/<image id>", "image": encoded bytes, "labels": (L,) int64,
    "labels_no_difficult": (M,) int64}. Images stay encoded (decoded later, skipping bad ones).
    """
    import tensorflow_datasets as tfds

    # Objects (boxes, poses) are not read: only the image-level labels matter here.
    decoders = tfds.decode.PartialDecoding(
        {"image": True, "image/filename": True, "labels": True, "labels_no_difficult": True},
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    # One file at a time, unshuffled: the stored order, identical for every read.
    read_config = tfds.ReadConfig(
        interleave_cycle_length=1, try_autocache=False, skip_prefetch=True
    )
    streams = []
    for split in splits:

        def with_id(example, split=split):
            stem = tf.strings.regex_replace(example["image/filename"], r"\.[^./]*$", "")
            return {
                "id": tf.strings.join([split, "/", stem]),
                "image": example["image"],
                "labels": example["labels"],
                "labels_no_difficult": example["labels_no_difficult"],
            }

        ds = builder.as_dataset(
            split=split, decoders=decoders, read_config=read_config, shuffle_files=False
        )
        streams.append(ds.map(with_id))
    stream = streams[0]
    for ds in streams[1:]:
        stream = stream.concatenate(ds)
    return stream


def voc07_tfds(
    split: str, data_dir: str | None = None, *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """VOC2007 classification labels from the prepared TFDS dataset ``voc/2007``.

    Per image and class: 1 if the class is among the image's `labels_no_difficult` (it has a
    non-difficult object of the class), -1 (difficult) if it is among `labels` only (all its
    objects of the class are marked difficult), else 0. Records are in TFDS's stored order;
    "trainval" is TFDS "train" (2501) followed by "validation" (2510). Ids are
    "<tfds split>/<VOC image id>", e.g. "train/000012".

    Args:
        split: "trainval" (5011 images) or "test" (4952); also "train" or "validation".
        data_dir: the TFDS data_dir holding voc/2007 (None: TFDS's default).
        config_key: where the dataset's config sits, for error messages.

    Raises:
        ValueError: an unknown split.
        FileNotFoundError: voc/2007 is not prepared in data_dir; the message says how to
            prepare it. Nothing is ever downloaded.
    """
    import tensorflow_datasets as tfds

    if split not in VOC07_TFDS_SPLITS:
        raise ValueError(
            f"{config_key}.split={split!r} is not a VOC2007 split for source 'voc07_tfds'; "
            f"allowed: {', '.join(VOC07_TFDS_SPLITS)}."
        )
    builder = tfds.builder("voc/2007", data_dir=data_dir)
    if not builder.is_prepared():
        searched = os.fspath(builder.data_dir)
        marker = "/voc/"
        root = data_dir or (searched[: searched.rfind(marker)] if marker in searched else searched)
        raise FileNotFoundError(
            f"The TFDS dataset 'voc/2007' is not prepared: nothing at {searched} "
            f"({config_key}.data_dir={data_dir!r}). Evaluation never downloads datasets. "
            f"Prepare it once with\n  tfds build voc/2007 --data_dir={root}\nand set "
            f"{config_key}.data_dir={root}; or extract VOCtrainval_06-Nov-2007.tar and "
            f"VOCtest_06-Nov-2007.tar and use {config_key}.source='vocdevkit' with "
            f"{config_key}.path=<the VOCdevkit folder>."
        )
    class_names = tuple(builder.info.features["labels"].feature.names)
    splits = VOC07_TFDS_SPLITS[split]
    ids, rows = [], []
    for example in _voc_tfds_stream(builder, splits).as_numpy_iterator():
        row = np.zeros(len(class_names), np.int8)
        row[np.asarray(example["labels"], np.int64)] = DIFFICULT
        row[np.asarray(example["labels_no_difficult"], np.int64)] = PRESENT
        ids.append(example["id"].decode("utf-8"))
        rows.append(row)
    name = f"voc2007/{split}"
    if not ids:
        raise ValueError(
            f"The prepared TFDS voc/2007 splits {'+'.join(splits)} hold no images "
            f"({config_key}.data_dir={data_dir!r}): rebuild it with `tfds build voc/2007`."
        )
    labels = np.stack(rows)
    return LabelledSet(
        name=name,
        ids=np.asarray(ids),
        labels=labels,
        class_names=class_names,
        _images=_TfdsImages(
            builder=builder,
            splits=splits,
            records=np.arange(len(ids), dtype=np.int64),
            ids=np.asarray(ids),
        ),
    )


# ----------------------------------------------------------------------------------------------
# VOC from an extracted VOCdevkit folder.


def _devkit_root(path: str, year: str, config_key: str) -> str:
    """The VOC<year> folder: `path` itself or path/VOC<year>."""
    path = path.rstrip("/") or "/"
    candidates = (path, os.path.join(path, f"VOC{year}"))
    for root in candidates:
        if tf.io.gfile.isdir(os.path.join(root, "ImageSets", "Main")):
            return root
    raise FileNotFoundError(
        f"{config_key}.path={path!r} is not a VOCdevkit: found no ImageSets/Main in "
        f"{' or '.join(candidates)}. Point {config_key}.path at VOCdevkit/ or "
        f"VOCdevkit/VOC{year}/ (set {config_key}.year for another year)."
    )


def _read_devkit_class_file(list_path: str) -> tuple[list[str], list[int]]:
    """Parses ImageSets/Main/<class>_<split>.txt: lines "<id> <1|-1|0>" -> (ids, our labels)."""
    ids, labels = [], []
    with tf.io.gfile.GFile(list_path, "r") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in _DEVKIT_VALUES:
                raise ValueError(
                    f"{list_path} line {number}: {line.strip()!r} is not '<image id> <1|-1|0>' "
                    "(1 present, -1 absent, 0 difficult)."
                )
            ids.append(parts[0])
            labels.append(_DEVKIT_VALUES[parts[1]])
    return ids, labels


def vocdevkit(
    path: str, split: str, year: str = "2007", *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """VOC classification labels from a local VOCdevkit folder.

    Reads ImageSets/Main/<class>_<split>.txt for the 20 VOC classes, whose values 1 (present),
    -1 (absent), 0 (difficult: only difficult objects of the class) become 1 / 0 / -1, and the
    images JPEGImages/<id>.jpg. Records are in the order of the class files (VOC's id order);
    ids are VOC image ids ("000005").

    Args:
        path: VOCdevkit/ or VOCdevkit/VOC<year>/ (local, or a URL tf.io.gfile reads).
        split: the ImageSets split: "trainval" or "test" for the paper; "train", "val" too.
        year: the VOC year, to find VOC<year>/ inside VOCdevkit/.
        config_key: where the dataset's config sits, for error messages.

    Raises:
        FileNotFoundError: no ImageSets/Main, a missing class file, or missing JPEGs (named).
        ValueError: malformed lines, or class files that list different images.
    """
    root = _devkit_root(path, year, config_key)
    main = os.path.join(root, "ImageSets", "Main")
    missing = [
        c for c in VOC_CLASSES if not tf.io.gfile.exists(os.path.join(main, f"{c}_{split}.txt"))
    ]
    if missing:
        raise FileNotFoundError(
            f"{config_key}.split={split!r}: {len(missing)} of the 20 VOC class files are missing "
            f"in {main}, e.g. {missing[0]}_{split}.txt. Check {config_key}.split (trainval | "
            f"test | train | val) and that the {split} archive was extracted into "
            f"{config_key}.path={path!r}."
        )
    ids: list[str] | None = None
    columns = []
    for c in VOC_CLASSES:
        list_path = os.path.join(main, f"{c}_{split}.txt")
        class_ids, class_labels = _read_devkit_class_file(list_path)
        if ids is None:
            ids = class_ids
            order = {image_id: i for i, image_id in enumerate(ids)}
        if len(class_ids) != len(ids) or set(class_ids) != set(ids):
            extra = sorted(set(class_ids) ^ set(ids))[:3]
            raise ValueError(
                f"{list_path} lists {len(class_ids)} images, {VOC_CLASSES[0]}_{split}.txt "
                f"{len(ids)}; they must list the same images (differing: {extra}). The "
                "VOCdevkit is incomplete or mixed: extract it again."
            )
        column = np.zeros(len(ids), np.int8)
        column[[order[i] for i in class_ids]] = class_labels
        columns.append(column)
    if not ids:
        raise ValueError(
            f"{os.path.join(main, f'{VOC_CLASSES[0]}_{split}.txt')} lists no images; check "
            f"{config_key}.split={split!r}."
        )
    images = os.path.join(root, "JPEGImages")
    paths = [os.path.join(images, f"{i}.jpg") for i in ids]
    if "://" not in root:  # a listing of a remote bucket would cost more than it saves
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of the {len(paths)} images of VOC{year} {split} are missing, "
                f"e.g. {absent[0]}: extract the images into {images} "
                f"({config_key}.path={path!r})."
            )
    return LabelledSet(
        name=f"voc{year}/{split}",
        ids=np.asarray(ids),
        labels=np.stack(columns, axis=1),
        class_names=VOC_CLASSES,
        _images=_FileImages(np.asarray([p.encode("utf-8") for p in paths], dtype=object)),
    )


# ----------------------------------------------------------------------------------------------
# Single-label sets: an image folder or a file list.


def _read_names(names_file: str, config_key: str) -> tuple[str, ...]:
    if not tf.io.gfile.exists(names_file):
        raise FileNotFoundError(
            f"{config_key}.names_file={names_file!r} does not exist (one class name per line, "
            "in label order)."
        )
    with tf.io.gfile.GFile(names_file, "r") as f:
        return tuple(line.strip() for line in f if line.strip())


def single_label(
    source: str,
    path: str,
    *,
    names_file: str | None = None,
    name: str | None = None,
    config_key: str = DEFAULT_KEY,
) -> LabelledSet:
    """A single-label set as one-hot labels: an image folder or a list of "path label" lines.

    "folder": one subfolder per class, class names = sorted subfolder names (as
    `ssl_jax.data.folder_source`). "filelist": lines "path label" with integer labels in
    [0, C); class names "0" ... "C-1" with C = max label + 1, or the lines of `names_file`.
    Records are in sorted path order (folder) or list order (file list); ids are the paths.

    Args:
        source: "folder" or "filelist".
        path: the folder, or the list file (relative paths in it are relative to its folder).
        names_file: optional class names, one per line in label order (file lists only).
        name: the set's name; default "<source>:<path>".
        config_key: where the dataset's config sits, for error messages.

    Raises:
        ValueError: images without labels (a benchmark needs labels), labels outside the
            names, or no images.
        FileNotFoundError: no such folder / list file.
    """
    if source not in ("folder", "filelist"):
        raise ValueError(
            f"{config_key}.source={source!r}: single-label sets are 'folder' or 'filelist'."
        )
    if not path:
        raise ValueError(
            f"{config_key}.source={source!r} needs {config_key}.path (the image "
            f"{'folder' if source == 'folder' else 'list file'})."
        )
    try:
        files = (
            files_lib.folder_source(path) if source == "folder" else files_lib.filelist_source(path)
        )
    except (FileNotFoundError, ValueError) as e:
        # The pretraining sources name the pretraining key; here the path is an eval key.
        raise type(e)(str(e).replace("config.data.", f"{config_key}.")) from e
    unlabelled = np.flatnonzero(files.labels < 0)
    if len(unlabelled):
        first = files.paths[unlabelled[0]].decode("utf-8")
        how = (
            "put every image in a class subfolder"
            if source == "folder"
            else "end every line with an integer label >= 0 ('path label')"
        )
        raise ValueError(
            f"{len(unlabelled)} of the {files.num_examples} images of {config_key}.path="
            f"{path!r} have no label (e.g. {first}); a benchmark needs labels: {how}."
        )
    if source == "folder":
        class_names = files.class_names
    elif names_file:
        class_names = _read_names(names_file, config_key)
    else:
        class_names = tuple(str(c) for c in range(int(files.labels.max()) + 1))
    if files.labels.max() >= len(class_names):
        raise ValueError(
            f"{config_key}.path={path!r} has label {files.labels.max()}, but "
            f"{config_key}.names_file={names_file!r} names only {len(class_names)} classes."
        )
    labels = np.zeros((files.num_examples, len(class_names)), np.int8)
    labels[np.arange(files.num_examples), files.labels] = PRESENT
    return LabelledSet(
        name=name or f"{source}:{path}",
        ids=np.asarray([p.decode("utf-8") for p in files.paths]),
        labels=labels,
        class_names=class_names,
        _images=_FileImages(files.paths),
    )


# ----------------------------------------------------------------------------------------------
# The built-in demo photos.


def demo_labelled(
    num_examples: int = DEMO_NUM_EXAMPLES, split: str = "train", *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """Crops of the packaged demo photos, labelled by the photo they come from (6 classes).

    Offline and deterministic (ssl_jax.data.demo's fixed seed): the crops are the first
    2 * num_examples of `ssl_jax.data.demo_source`; "train" takes the first half, "test" the
    second, so the two splits are different crops. Crop i shows photo i % 6; ids are
    "demo/<split>/<i>".

    Args:
        num_examples: crops per split.
        split: "train" or "test".
        config_key: where the dataset's config sits, for error messages.
    """
    if split not in DEMO_SPLITS:
        raise ValueError(f"{config_key}.split={split!r} for source 'demo': allowed train, test.")
    if num_examples <= 0:
        raise ValueError(f"{config_key}.num_examples={num_examples} must be positive.")
    source = demo_lib.demo_source(2 * num_examples)
    first = 0 if split == "train" else num_examples
    examples = np.arange(first, first + num_examples, dtype=np.int64)
    labels = np.zeros((num_examples, len(source.class_names)), np.int8)
    labels[np.arange(num_examples), source.labels[examples]] = PRESENT
    return LabelledSet(
        name=f"demo/{split}",
        ids=np.asarray([f"demo/{split}/{i:05d}" for i in range(num_examples)]),
        labels=labels,
        class_names=source.class_names,
        _images=_DemoImages(source, examples),
    )


# ----------------------------------------------------------------------------------------------
# From a config.


def spread_positions(total: int, count: int) -> np.ndarray:
    """`count` increasing positions spread evenly over [0, total): a fixed, class-mixed subset.

    Evenly spaced rather than the first `count`, because folder sets are sorted by class.
    """
    return (np.arange(count, dtype=np.int64) * total) // count


def make_labelled(
    dataset_config: Mapping[str, Any], *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """The labelled set a dataset config describes.

    Fields (an ml_collections.ConfigDict or a dict): source ("voc07_tfds" | "vocdevkit" |
    "folder" | "filelist" | "demo"); split (VOC: trainval | test; demo: train | test); path
    (VOCdevkit folder, image folder or list file); data_dir (TFDS); optional name (the set's
    name in results), year (vocdevkit, "2007"), names_file (filelist), num_examples (demo),
    max_examples (> 0: a fixed subset of that many images spread evenly over the set).

    Args:
        dataset_config: the fields above.
        config_key: where the config sits (e.g. "config.data.train"), for error messages.

    Returns:
        LabelledSet.
    """

    def get(field: str, default: Any = None) -> Any:
        value = dataset_config.get(field, default)
        return default if value is None else value

    source = get("source")
    split = get("split", "")
    path = get("path", "")
    if source == "voc07_tfds":
        dataset = voc07_tfds(split, get("data_dir") or None, config_key=config_key)
    elif source == "vocdevkit":
        if not path:
            raise ValueError(
                f"{config_key}.source='vocdevkit' needs {config_key}.path (the VOCdevkit folder)."
            )
        dataset = vocdevkit(path, split, str(get("year", "2007")), config_key=config_key)
    elif source in ("folder", "filelist"):
        dataset = single_label(
            source, path, names_file=get("names_file") or None, config_key=config_key
        )
    elif source == "demo":
        dataset = demo_labelled(
            int(get("num_examples", DEMO_NUM_EXAMPLES)), split or "train", config_key=config_key
        )
    else:
        raise ValueError(f"{config_key}.source={source!r} is not one of {', '.join(SOURCES)}.")
    name = get("name")
    if name:
        dataset = dataclasses.replace(dataset, name=str(name))
    max_examples = int(get("max_examples", 0))
    if max_examples < 0:
        raise ValueError(f"{config_key}.max_examples={max_examples} must be >= 0 (0: all).")
    if 0 < max_examples < dataset.num_examples:
        _log.info(
            "Using %d of the %d images of %s (%s.max_examples).",
            max_examples,
            dataset.num_examples,
            dataset.name,
            config_key,
        )
        dataset = dataset.take(spread_positions(dataset.num_examples, max_examples))
    return dataset
