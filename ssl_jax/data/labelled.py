"""Labelled sets for every benchmark: VOC07 (TFDS or a VOCdevkit), folders, file lists, the demo.

A ``LabelledSet`` is a data source of ``ssl_jax.data`` (the pretraining readers: ``FileSource``,
``DemoSource``, ``TfdsSource``, with their robust decoding and per-process sharding) in a fixed,
seed-independent record order, plus one label matrix over that order:

    labelled = make_labelled(config.data.train, config_key="config.data.train")
    labelled.labels        # (N, C) int8: 1 present, 0 absent, -1 difficult (VOC only)
    labelled.ids           # (N,) str
    labelled.images(size=224, process_index=p, process_count=n)   # frozen features
    pipeline.labelled_train_iterator(labelled, ...)               # linear classifiers
    pipeline.labelled_test_batches(labelled, ...)

One split config (``ssl_jax.evals.base.labelled_split``) describes every set: ``source`` (
voc07_tfds | vocdevkit | tfds | folder | filelist | demo), ``split``, ``path``, ``name``,
``data_dir``, ``year``, ``names_file``, ``demo_size``, then ``first`` / ``max_examples`` for a
fixed subset (``subset``).
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

from ssl_jax import paths
from ssl_jax.data.demo import demo_source
from ssl_jax.data.files import FileSource, filelist_source, folder_source
from ssl_jax.data.tfds_source import TfdsSource, stored_order, tfds_source
from ssl_jax.detection.voc import devkit_root
from ssl_jax.evals.base import LABELLED_SOURCES

_log = logging.getLogger(__name__)

SOURCES = LABELLED_SOURCES

# The order of VOC's classes, as in the devkit and TFDS (ImageSets/Main/<class>_<split>.txt).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

PRESENT, ABSENT, DIFFICULT = 1, 0, -1

# VOCdevkit's per-class files write 1 present, -1 absent, 0 difficult (only difficult objects).
_DEVKIT_VALUES = {"1": PRESENT, "-1": ABSENT, "0": DIFFICULT}

# TFDS voc/2007 splits per benchmark split; "trainval" is the paper's training set (5011).
VOC07_TFDS_SPLITS = {
    "trainval": ("train", "validation"),
    "test": ("test",),
    "train": ("train",),
    "validation": ("validation",),
}

DEFAULT_KEY = "config.dataset"

# The names of VOC sets (voc07_tfds, vocdevkit), whose rows the SVMs take in image-id order.
_VOC_NAME = re.compile(r"voc\d{4}/")


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledSet:
    """A labelled set in a fixed, seed-independent order.

    Attributes:
        name: what the set is, for logs and results, e.g. "voc2007/trainval", "folder:/data/x".
        source: the records, position i being row i (a FileSource, DemoSource or TfdsSource).
        labels: (N, C) int8, 1 present, 0 absent, -1 difficult (VOC only; single-label sets
            are one-hot).
        class_names: the C class names, in column order.
        ids: (N,) str, unique per image (VOC: "<tfds split>/<image id>" from TFDS, "<image id>"
            from a VOCdevkit; folders and lists: the path; demo: "demo/<index>").
    """

    name: str
    source: Any
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    ids: np.ndarray | None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        fix = "check the dataset's files (its config .path / .split / .data_dir)"
        if self.source.num_examples == 0:
            raise ValueError(f"The labelled set {self.name!r} has no images: {fix}.")
        if self.labels is None:  # labels stream with the records (a large TFDS set)
            return
        ids = np.asarray(self.ids).astype(str)
        labels = np.asarray(self.labels)
        if labels.ndim != 2 or labels.shape != (len(ids), len(self.class_names)):
            raise ValueError(
                f"The labelled set {self.name!r} has labels of shape {labels.shape}, expected "
                f"(N={len(ids)} images, C={len(self.class_names)} classes)."
            )
        if self.source.num_examples != len(ids):
            raise ValueError(
                f"The labelled set {self.name!r} has {len(ids)} labelled images but its source "
                f"holds {self.source.num_examples}."
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

    def with_labels(self) -> LabelledSet:
        """This set with its label matrix and ids in memory (read from a TFDS split's label
        column, without its images, where they were left to stream with the records)."""
        if self.labels is not None:
            return self
        classes = _tfds_labels(self.source)
        return dataclasses.replace(
            self,
            labels=_one_hot(classes, self.num_classes),
            ids=np.asarray([f"{self.source.split}/{i}" for i in range(len(classes))]),
        )

    @property
    def num_examples(self) -> int:
        return self.source.num_examples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def single_label(self) -> bool:
        """Whether every image has exactly one class (and no difficult label)."""
        if self.labels is None:  # a TFDS ClassLabel: one class per image
            return True
        return bool(self.labels.min() >= 0 and np.all((self.labels == PRESENT).sum(1) == 1))

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
        full = self.with_labels()
        return LabelledSet(
            name=self.name,
            source=self.source.take(positions),
            labels=full.labels[positions],
            class_names=self.class_names,
            ids=full.ids[positions],
        )

    def subset(self, first: int, max_examples: int, config_key: str = DEFAULT_KEY) -> LabelledSet:
        """A fixed subset: images from position ``first`` on, at most ``max_examples`` of them
        (0: all). Spread evenly over the rest of the set (folders are sorted by class, so every
        class keeps images: positions first + floor(i * rest / count)), except for one TFDS split,
        whose records are stored shuffled: there the first ``max_examples`` after ``first``,
        which TFDS reads as a slice of the split."""
        total = self.num_examples
        if first < 0 or first >= total:
            raise ValueError(
                f"{config_key}.first={first} is outside the {total} images of {self.name}; use "
                f"a value in [0, {total})."
            )
        if max_examples < 0:
            raise ValueError(f"{config_key}.max_examples={max_examples} must be >= 0 (0: all).")
        rest = total - first
        count = min(rest, max_examples) if max_examples else rest
        if count == total:
            return self
        _log.info(
            "Using %d of the %d images of %s (%s.first=%d, .max_examples=%d).",
            count, total, self.name, config_key, first, max_examples,
        )  # fmt: skip
        if self.labels is None:  # one TFDS split: a slice of its stored (shuffled) order
            rows = first + np.arange(count, dtype=np.int64)
            return dataclasses.replace(self, source=self.source.take(rows))
        return self.take(first + (np.arange(count, dtype=np.int64) * rest) // count)

    def check_single_label(self, config_key: str = DEFAULT_KEY) -> None:
        """Raises ValueError unless every image has exactly one class (classifier benchmarks)."""
        if not self.single_label:
            raise ValueError(
                f"{self.name} ({config_key}) is not single-label (images with several classes "
                "or difficult labels): this benchmark needs one class per image, e.g. a folder "
                "of class subfolders or a list of 'path label' lines."
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
        source = self.source

        @tf.autograph.experimental.do_not_convert
        def load(record):
            # Full-size decode (min_short=0): the resize must see the same pixels as a plain
            # decode, so that features match other implementations of the protocol.
            image, ok = source.decode(record, min_short=0)
            image = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
            return {"position": record["position"], "image": image, "ok": ok}

        records = source.ordered_records(process_index, process_count)
        return records.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------------------------
# VOC2007 from TFDS.


def voc07_tfds(
    split: str, data_dir: str | None = None, *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """VOC2007 classification labels from the prepared TFDS dataset ``voc/2007``.

    Per image and class: 1 if the class is among the image's `labels_no_difficult` (it has a
    non-difficult object of the class), -1 (difficult) if it is among `labels` only (all its
    objects of the class are marked difficult), else 0. Records are in TFDS's stored order
    (not id order; the SVM benchmarks sort VOC rows by image id, ``svm_row_order``);
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
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    if split not in VOC07_TFDS_SPLITS:
        raise ValueError(
            f"{config_key}.split={split!r} is not a VOC2007 split for source 'voc07_tfds'; "
            f"allowed: {', '.join(VOC07_TFDS_SPLITS)}."
        )
    splits = VOC07_TFDS_SPLITS[split]
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
    # Objects (boxes, poses) are not read, images not decoded: only the image-level labels.
    decoders = tfds.decode.PartialDecoding(
        {"image": True, "image/filename": True, "labels": True, "labels_no_difficult": True},
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    ids, rows = [], []
    for which in splits:
        for example in stored_order(builder, which, decoders).as_numpy_iterator():
            row = np.zeros(len(class_names), np.int8)
            row[np.asarray(example["labels"], np.int64)] = DIFFICULT
            row[np.asarray(example["labels_no_difficult"], np.int64)] = PRESENT
            stem = re.sub(r"\.[^./]*$", "", example["image/filename"].decode("utf-8"))
            ids.append(f"{which}/{stem}")
            rows.append(row)
    if not ids:
        raise ValueError(
            f"The prepared TFDS voc/2007 splits {'+'.join(splits)} hold no images "
            f"({config_key}.data_dir={data_dir!r}): rebuild it with `tfds build voc/2007`."
        )
    source = TfdsSource(
        builder=builder,
        split="+".join(splits),
        num_examples=len(ids),
        class_names=None,
        has_label=False,  # multi-label: the matrix below
    )
    return LabelledSet(
        name=f"voc2007/{split}",
        source=source,
        labels=np.stack(rows),
        class_names=class_names,
        ids=np.asarray(ids),
    )


# ----------------------------------------------------------------------------------------------
# VOC from an extracted VOCdevkit folder.


def _read_devkit_class_file(list_path: str) -> tuple[list[str], list[int]]:
    """Parses ImageSets/Main/<class>_<split>.txt: lines "<id> <1|-1|0>" -> (ids, our labels)."""
    ids, labels = [], []
    for number, line in enumerate(paths.read_text(list_path).splitlines(), start=1):
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
    """VOC classification labels from a VOCdevkit folder (local or gs://).

    Reads ImageSets/Main/<class>_<split>.txt for the 20 VOC classes, whose values 1 (present),
    -1 (absent), 0 (difficult: only difficult objects of the class) become 1 / 0 / -1, and the
    images JPEGImages/<id>.jpg. Records are in the order of the class files (VOC's id order;
    the SVM benchmarks sort VOC rows by image id whatever the files' order, ``svm_row_order``);
    ids are VOC image ids ("000005").

    Args:
        path: VOCdevkit/ or VOCdevkit/VOC<year>/.
        split: the ImageSets split: "trainval" or "test" for the paper; "train", "val" too.
        year: the VOC year, to find VOC<year>/ inside VOCdevkit/.
        config_key: where the dataset's config sits, for error messages.

    Raises:
        FileNotFoundError: no ImageSets/Main, a missing class file, or missing JPEGs (named).
        ValueError: malformed lines, or class files that list different images.
    """
    root = devkit_root(path, year, config_key)
    main = paths.join(root, "ImageSets", "Main")
    missing = [c for c in VOC_CLASSES if not paths.exists(paths.join(main, f"{c}_{split}.txt"))]
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
        list_path = paths.join(main, f"{c}_{split}.txt")
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
            f"{paths.join(main, f'{VOC_CLASSES[0]}_{split}.txt')} lists no images; check "
            f"{config_key}.split={split!r}."
        )
    images = paths.join(root, "JPEGImages")
    image_paths = [paths.join(images, f"{i}.jpg") for i in ids]
    if not paths.is_url(root):  # a listing of a remote bucket would cost more than it saves
        absent = [p for p in image_paths if not paths.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of the {len(image_paths)} images of VOC{year} {split} are "
                f"missing, e.g. {absent[0]}: extract the images into {images} "
                f"({config_key}.path={path!r})."
            )
    labels = np.stack(columns, axis=1)
    source = FileSource(
        kind="filelist",
        location=path,
        paths=np.asarray([p.encode("utf-8") for p in image_paths], dtype=object),
        labels=np.full(len(ids), -1, np.int32),
        class_names=None,
        ids=np.asarray([i.encode("utf-8") for i in ids], dtype=object),
    )
    return LabelledSet(
        name=f"voc{year}/{split}",
        source=source,
        labels=labels,
        class_names=VOC_CLASSES,
        ids=np.asarray(ids),
    )


# ----------------------------------------------------------------------------------------------
# Single-label sets: an image folder, a file list, a TFDS classification set, the demo photos.


def _read_names(names_file: str, config_key: str) -> tuple[str, ...]:
    if not paths.exists(names_file):
        raise FileNotFoundError(
            f"{config_key}.names_file={names_file!r} does not exist (one class name per line, "
            "in label order)."
        )
    return tuple(line.strip() for line in paths.read_text(names_file).splitlines() if line.strip())


def _one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.zeros((len(classes), num_classes), np.int8)
    labels[np.arange(len(classes)), classes] = PRESENT
    return labels


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
        files = folder_source(path) if source == "folder" else filelist_source(path)
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
    return LabelledSet(
        name=name or f"{source}:{path}",
        source=files,
        labels=_one_hot(files.labels, len(class_names)),
        class_names=class_names,
        ids=np.asarray([p.decode("utf-8") for p in files.paths]),
    )


def tfds_classification(
    name: str, split: str, data_dir: str | None, *, config_key: str = DEFAULT_KEY
) -> LabelledSet:
    """A prepared TFDS dataset with a ClassLabel "label" feature (e.g. imagenet2012), in its
    stored order; its labels stream with the records (``with_labels`` reads them all)."""
    try:
        source = tfds_source(name, split, data_dir)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(str(e).replace("config.data.", f"{config_key}.")) from e
    feature = source.builder.info.features["label"] if source.has_label else None
    num_classes = int(getattr(feature, "num_classes", 0) or 0)
    if not num_classes:
        raise ValueError(
            f"TFDS {name!r} split {split!r} has no ClassLabel 'label' feature "
            f"({config_key}.name={name!r}); a classifier benchmark needs a labelled dataset."
        )
    names = source.class_names or tuple(str(c) for c in range(num_classes))
    # The labels stream with the records; with_labels() reads the column when a benchmark needs
    # the matrix (frozen features of a small set).
    return LabelledSet(
        name=f"tfds:{name}/{split}", source=source, labels=None, class_names=names, ids=None
    )


def _tfds_labels(source: TfdsSource) -> np.ndarray:
    """The "label" column of a TFDS split in stored order (images are not read)."""
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    stream = source.builder.as_dataset(
        split=source.split,
        decoders=tfds.decode.PartialDecoding({"label": True}),
        read_config=tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False),
        shuffle_files=False,
    )
    return np.fromiter(
        (int(e["label"]) for e in stream.as_numpy_iterator()), np.int32, source.num_examples
    )


def demo_labelled(num_examples: int = 120, *, config_key: str = DEFAULT_KEY) -> LabelledSet:
    """The first ``num_examples`` crops of the packaged demo photos, labelled by the photo they
    come from (6 classes; crop i shows photo i % 6). The crops are prefix-stable (a fixed seed,
    drawn in order), so ``first`` / ``max_examples`` cut disjoint train and test splits: e.g.
    train = demo_size 120, test = demo_size 240 from first 120."""
    if num_examples <= 0:
        raise ValueError(f"{config_key}.demo_size={num_examples} must be positive.")
    source = demo_source(num_examples)
    return LabelledSet(
        name=f"demo/{num_examples}",
        source=source,
        labels=_one_hot(source.labels, len(source.class_names)),
        class_names=source.class_names,
        ids=np.asarray([f"demo/{i:05d}" for i in range(num_examples)]),
    )


# ----------------------------------------------------------------------------------------------
# From a split config.


def make_labelled(split_config: Mapping[str, Any], *, config_key: str = DEFAULT_KEY) -> LabelledSet:
    """The labelled set a split config describes (``ssl_jax.evals.base.labelled_split``).

    Fields (an ml_collections.ConfigDict or a dict): source; split (VOC: trainval | test; TFDS:
    a split); path (VOCdevkit folder, image folder or list file); name (TFDS name);
    data_dir (TFDS); year (vocdevkit); names_file (filelist); demo_size (demo); first and
    max_examples (a fixed subset, ``LabelledSet.subset``).

    Args:
        split_config: the fields above.
        config_key: where the config sits (e.g. "config.data.train"), for error messages.
    """

    def get(field: str, default: Any = None) -> Any:
        value = split_config.get(field, default)
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
    elif source == "tfds":
        dataset = tfds_classification(
            get("name", ""), split, get("data_dir") or None, config_key=config_key
        )
    elif source == "demo":
        dataset = demo_labelled(int(get("demo_size", 120)), config_key=config_key)
    else:
        raise ValueError(f"{config_key}.source={source!r} is not one of {', '.join(SOURCES)}.")
    first, max_examples = int(get("first", 0)), int(get("max_examples", 0))
    if first or max_examples:
        dataset = dataset.subset(first, max_examples, config_key)
    return dataset


def svm_row_order(name: str, ids: Any) -> np.ndarray:
    """Positions of a labelled set's rows in the order the SVM benchmarks take them.

    A VOC set (named "voc<year>/<split>", from TFDS or a VOCdevkit) in VOC image-id order
    ("000005" before "000012"; a TFDS id's "<tfds split>/" prefix is left out), whatever order
    its source stores: FAIR's benchmark lists a split's images sorted by id
    (create_voc_data_files.py), and both the unshuffled cross-validation folds and the
    low-shot draws depend on the order (PROTOCOLS.md, "Where FAIR's code departs"). Any other
    set in its own order.

    Args:
        name: the set's name (``LabelledSet.name``, meta.json's "dataset" of stored features).
        ids: (N,) the set's ids in its order.

    Returns:
        (N,) int64 positions: row i of the SVMs' order is the set's ``positions[i]``.
    """
    ids = np.asarray(ids).astype(str)
    if not _VOC_NAME.match(name):
        return np.arange(len(ids), dtype=np.int64)
    image_ids = np.asarray([i.rsplit("/", 1)[-1] for i in ids.tolist()])
    return np.argsort(image_ids, kind="stable").astype(np.int64)


def check_compatible(train: LabelledSet, test: LabelledSet) -> None:
    """Raises ValueError when train and test do not share one label space."""
    if train.class_names != test.class_names:
        extra = sorted(set(test.class_names) ^ set(train.class_names))[:5]
        raise ValueError(
            f"The classes of {train.name} and {test.name} differ (e.g. {extra}); "
            "config.data.train and config.data.test must share one label space."
        )
