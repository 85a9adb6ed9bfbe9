"""Input of the linear classifiers: augmented, resumable train batches and one pass of test.

Both splits come from ``ssl_jax.data.make_source`` (TFDS, image folder, file list, demo), so the
decoding, skip counting and per-process sharding are the pretraining pipeline's. What differs:

- train (PROTOCOLS.md, "Linear classifiers"): random-resized crop (area 8-100%, aspect 3/4-4/3,
  as torchvision / VISSL) to ``size`` and a flip; or, for Colorization trunks, resize the short
  side, random ``size`` crop and flip (``pipeline.resize_crop_flip``). Randomness is stateless,
  keyed by (seed, epoch, index) like pretraining, so a resumed run sees the same crops;
- test: resize the short side to ``resize_short`` (256), centre ``size`` crop (224 / 227), every
  image once. The order of a test pass does not matter for accuracy, so it reuses the source's
  epoch 0 (a fixed permutation) without the TFDS element shuffle.

Batches: {"image": uint8 (B, size, size, 3), "label": int32 (B,), ...}; train batches carry
"epoch"/"index" (the resume position), test batches "valid" (bool (B,), False for padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from ssl_jax import data as data_lib
from ssl_jax.data import decode as decode_lib
from ssl_jax.data import pipeline as pipeline_lib
from ssl_jax.evals.linear_config import AUGMENTATIONS

RRC_AREA = (0.08, 1.0)  # fraction of the image's area (torchvision's RandomResizedCrop)
RRC_ASPECT = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class LabelledSource:
    """A source with its label space. source: an ``ssl_jax.data`` source (num_examples,
    epoch_records, decode, shard_size); num_classes: labels are in [0, num_classes)."""

    source: data_lib.Source
    num_classes: int
    class_names: tuple[str, ...] | None
    description: str


def _renamed(error: Exception, config_key: str) -> Exception:
    """The data package's error with its config key (config.data.*) replaced by ``config_key``."""
    return type(error)(str(error).replace("config.data.", f"{config_key}."))


def _slice(source: data_lib.Source, first: int, max_examples: int, config_key: str):
    """Records [first, ...) of the source's fixed order, at most ``max_examples`` of them."""
    total = source.num_examples
    if first < 0 or first >= total:
        raise ValueError(
            f"{config_key}.first={first} is outside the {total} records of this set; use a "
            f"value in [0, {total})."
        )
    count = total - first
    if max_examples > 0:
        count = min(count, max_examples)
    if first == 0 and count == total:
        return source
    if isinstance(source, data_lib.TfdsSource):
        if "[" in source.split:
            raise ValueError(
                f"{config_key}.split={source.split!r} is already a slice; give "
                f"{config_key}.first / max_examples on a whole split instead."
            )
        # TFDS records are in shuffled order already, so a contiguous slice is a fair sample.
        split = f"{source.split}[{first}:{first + count}]"
        return dataclasses.replace(source, split=split, num_examples=count)
    # Folders are sorted by class: spread the subset evenly so that every class keeps images.
    rows = first + np.round(np.linspace(0, total - first - 1, count)).astype(np.int64)
    rows = np.unique(rows)
    if isinstance(source, data_lib.DemoSource):
        return dataclasses.replace(source, boxes=source.boxes[rows], labels=source.labels[rows])
    return dataclasses.replace(source, paths=source.paths[rows], labels=source.labels[rows])


def labelled_source(split: ml_collections.ConfigDict, config_key: str) -> LabelledSource:
    """The source of ``split`` (a ``split_config``), checked to carry integer labels.

    Raises:
      ValueError / FileNotFoundError: naming ``config_key``'s field to change.
    """
    try:
        source = data_lib.make_source(split)
    except (ValueError, FileNotFoundError) as e:
        raise _renamed(e, config_key) from e
    source = _slice(source, int(split.first), int(split.max_examples), config_key)
    what = {
        "tfds": f"TFDS {split.name!r} split {split.split!r}",
        "demo": f"demo set ({split.demo_size} crops)",
    }.get(split.source, f"{split.source} {split.path!r}")
    if isinstance(source, data_lib.TfdsSource):
        if not source.has_label:
            raise ValueError(
                f"{what} has no 'label' feature ({config_key}.name={split.name!r}); a linear "
                "classifier needs a labelled dataset."
            )
        label = source.builder.info.features["label"]
        num_classes = int(getattr(label, "num_classes", 0) or 0)
        if not num_classes:
            raise ValueError(
                f"{what}: its 'label' feature is not a ClassLabel; set {config_key}.name to a "
                "classification dataset."
            )
        return LabelledSource(source, num_classes, source.class_names, what)
    labels = np.asarray(source.labels)
    unlabelled = int(np.sum(labels < 0))
    if unlabelled == len(labels):
        raise ValueError(
            f"{what} has no labels ({config_key}.path={split.path!r}): a linear classifier "
            "needs class subfolders (folder) or 'path label' lines (file list)."
        )
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of the {len(labels)} images of {what} have no label "
            f"({config_key}.path={split.path!r}); move loose images into class folders or add "
            "a label to every line of the file list."
        )
    names = source.class_names
    num_classes = len(names) if names else int(labels.max()) + 1
    return LabelledSource(source, num_classes, names, what)


def check_compatible(train: LabelledSource, test: LabelledSource) -> None:
    """Raises ValueError when the test labels are not in the train label space."""
    if train.class_names and test.class_names and train.class_names != test.class_names:
        extra = sorted(set(test.class_names) ^ set(train.class_names))[:5]
        raise ValueError(
            f"The classes of {train.description} and {test.description} differ (e.g. {extra}); "
            "config.data.train and config.data.test must share one label space."
        )
    if test.num_classes > train.num_classes:
        raise ValueError(
            f"{test.description} has labels up to {test.num_classes - 1}, {train.description} "
            f"only {train.num_classes} classes; config.data.test must use the train labels."
        )


def random_resized_crop(image: tf.Tensor, key: tf.Tensor, *, size: int, flip: bool) -> tf.Tensor:
    """A random crop of 8-100% of the area and aspect 3/4-4/3, resized to size x size; flip.

    Args:
      image: (H, W, 3) uint8.
      key: [2] int64 stateless-RNG key of this element.
    Returns:
      (size, size, 3) uint8.
    """
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=key,
        min_object_covered=0.0,
        aspect_ratio_range=RRC_ASPECT,
        area_range=RRC_AREA,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    out = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
    if flip:
        coin = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(key, 2), dtype=tf.float32
        )
        out = tf.cond(coin < 0.5, lambda: tf.reverse(out, axis=[1]), lambda: out)
    out = tf.saturate_cast(tf.round(out), tf.uint8)
    return tf.ensure_shape(out, [size, size, 3])


def resize_centre_crop(image: tf.Tensor, *, resize_short: int, size: int) -> tf.Tensor:
    """Short side to ``resize_short`` (bilinear, antialiased), centre size x size crop; uint8."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    ratio = resize_short / tf.minimum(height, width)
    new_height = tf.maximum(resize_short, tf.cast(tf.round(height * ratio), tf.int32))
    new_width = tf.maximum(resize_short, tf.cast(tf.round(width * ratio), tf.int32))
    resized = tf.image.resize(image, [new_height, new_width], "bilinear", antialias=True)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    out = tf.saturate_cast(tf.round(resized[top : top + size, left : left + size]), tf.uint8)
    return tf.ensure_shape(out, [size, size, 3])


@tf.autograph.experimental.do_not_convert
def _decoded(example):
    return example["ok"]


@tf.autograph.experimental.do_not_convert
def _drop_ok(example):
    return {k: v for k, v in example.items() if k != "ok"}


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return options


def train_iterator(
    labelled: LabelledSource,
    split: ml_collections.ConfigDict,
    *,
    augment: str,
    size: int,
    resize_short: int,
    flip: bool,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    start: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless, resumable stream of augmented train batches.

    Args:
      augment: "random_resized_crop" or "resize_crop" (Colorization: resize_short, crop, flip).
      start: (epoch, index) of the last record consumed before an interruption, as the
        pretraining pipeline (``pipeline.pretrain_dataset``).

    Yields:
      "image" uint8 (B, size, size, 3), "label" int32 (B,), "epoch" / "index" int64 (B,).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(
            f"config.input.train_augment={augment!r}; allowed: 'auto', {', '.join(AUGMENTATIONS)}."
        )
    source = labelled.source
    shard_size = source.shard_size(process_index, process_count)
    start_epoch, first = 0, 0
    if start is not None:
        start_epoch, first = int(start[0]), int(start[1]) + 1
    if first >= shard_size:
        start_epoch, first = start_epoch + 1, 0
    watch = decode_lib.FailureWatch(shard_size, f"process {process_index}/{process_count}")
    cache = {} if split.cache_decoded else None
    # Decoding JPEGs at reduced size is only safe down to the short side crops are taken from.
    min_short = resize_short if augment == "resize_crop" else 0

    @tf.autograph.experimental.do_not_convert
    def epoch_records(epoch):
        epoch_first = tf.where(epoch == start_epoch, tf.constant(first, tf.int64), 0)
        return source.epoch_records(
            epoch,
            epoch_first,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            shuffle_buffer=int(split.shuffle_buffer or 0),
        )

    @tf.autograph.experimental.do_not_convert
    def decode_and_augment(record):
        image, ok = source.decode(record, min_short=min_short, watch=watch, cache=cache)
        key = pipeline_lib._augment_key(seed, record["epoch"], record["index"])
        if augment == "resize_crop":
            image = pipeline_lib.resize_crop_flip(
                image, key, resize_short=resize_short, crop=size, flip=flip
            )
        else:
            image = random_resized_crop(image, key, size=size, flip=flip)
        return {
            "image": image,
            "label": tf.cast(record["label"], tf.int32),
            "epoch": record["epoch"],
            "index": record["index"],
            "ok": ok,
        }

    parallel = pipeline_lib._parallel(split.num_parallel_calls)
    ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_records)
    ds = ds.map(decode_and_augment, num_parallel_calls=parallel, deterministic=True)
    ds = ds.filter(_decoded).map(_drop_ok)
    ds = ds.batch(local_batch_size, drop_remainder=True)
    if split.prefetch:
        ds = ds.prefetch(pipeline_lib._parallel(split.prefetch))
    return ds.with_options(_options()).as_numpy_iterator()


def test_batches(
    labelled: LabelledSource,
    split: ml_collections.ConfigDict,
    *,
    size: int,
    resize_short: int,
    local_batch_size: int,
    process_index: int,
    process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Every image of this process's shard once, centre-cropped, in padded batches.

    Every process yields the same number of batches (that of the largest shard), so a jitted
    global step can run on all of them; padding rows have "valid" False.

    Yields:
      "image" uint8 (B, size, size, 3), "label" int32 (B,), "valid" bool (B,).
    """
    source = labelled.source
    shards = [source.shard_size(p, process_count) for p in range(process_count)]
    num_batches = -(-max(shards) // local_batch_size)
    watch = decode_lib.FailureWatch(shards[process_index], f"test process {process_index}")

    @tf.autograph.experimental.do_not_convert
    def decode(record):
        image, ok = source.decode(record, min_short=resize_short, watch=watch)
        image = resize_centre_crop(image, resize_short=resize_short, size=size)
        return {"image": image, "label": tf.cast(record["label"], tf.int32), "valid": ok}

    records = source.epoch_records(
        tf.constant(0, tf.int64),
        tf.constant(0, tf.int64),
        seed=0,
        process_index=process_index,
        process_count=process_count,
        shuffle_buffer=0,
    )
    parallel = pipeline_lib._parallel(split.num_parallel_calls)
    ds = records.map(decode, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(local_batch_size).prefetch(2).with_options(_options())
    blank = {
        "image": np.zeros((local_batch_size, size, size, 3), np.uint8),
        "label": np.zeros((local_batch_size,), np.int32),
        "valid": np.zeros((local_batch_size,), bool),
    }
    produced = 0
    for batch in ds.as_numpy_iterator():
        count = len(batch["label"])
        if count < local_batch_size:
            batch = {k: np.concatenate([v, blank[k][count:]]) for k, v in batch.items()}
        # An undecodable image is a zero image: it counts as neither right nor wrong.
        yield batch
        produced += 1
    for _ in range(num_batches - produced):
        yield blank
