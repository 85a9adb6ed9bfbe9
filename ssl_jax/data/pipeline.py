"""The per-process pretraining input pipeline: records -> decode -> resize -> crop -> flip -> batch.

Each process reads its own shard and yields local batches; the trainer assembles the global
array. The stream is a pure function of (seed, process_index, process_count, source), so a run
resumed from a checkpointed (epoch, index) position sees exactly the images, crops and flips it
would have seen without the interruption:
- the record order of each epoch is shuffled from (seed, epoch, process_index) (see sources.py);
- each record's crop offset and flip are drawn with stateless TF random ops keyed by
  (seed, epoch, index), where index is the record's position in the epoch's shuffled order;
- resuming drops the records before the position before they are read or decoded.
Records that fail to decode are dropped (and counted, see decode.py), so a batch may hold
records with gaps between their indices; epochs run into each other with no partial batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ssl_jax.data import decode as decode_lib
from ssl_jax.data import sources as sources_lib

_log = logging.getLogger(__name__)

# JAX owns the accelerators; TF only runs the input pipeline on the host CPU.
try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # devices already initialised by someone else
    _log.debug("Could not hide GPUs from TensorFlow.")

_MAX_EPOCHS = np.iinfo(np.int64).max  # "forever"


def parallel_calls(value: int) -> int:
    return tf.data.AUTOTUNE if value is None or int(value) < 0 else max(1, int(value))


def augment_key(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """A stateless-RNG key (shape [2], int64) unique to (seed, epoch, index)."""
    base = tf.constant([seed & 0x7FFFFFFFFFFFFFFF, 0x5EED], tf.int64)
    key = tf.random.experimental.stateless_fold_in(base, epoch)
    return tf.random.experimental.stateless_fold_in(key, index)


def resize_crop_flip(
    image: tf.Tensor, key: tf.Tensor, *, resize_short: int, crop: int, flip: bool
) -> tf.Tensor:
    """The host-side augmentation of one image: resize the short side, random crop, flip.

    Only the crop window of the resized image is computed (ScaleAndTranslate with a triangle
    kernel and antialiasing, the op behind tf.image.resize(..., "bilinear", antialias=True)),
    which gives the same pixels as resizing the whole image and cropping, for less work.

    Args:
        image: (H, W, 3) uint8, any size from 1x1 up.
        key: [2] int64 stateless-RNG key of this element.
        resize_short: the short side after resizing (bilinear, antialiased when shrinking;
            small images are upscaled); the long side keeps the aspect ratio.
        crop: side of the square random crop, <= resize_short.
        flip: whether to flip horizontally with probability 1/2.

    Returns:
        (crop, crop, 3) uint8.
    """
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    ratio = resize_short / tf.minimum(height, width)
    new_height = tf.maximum(resize_short, tf.cast(tf.round(height * ratio), tf.int32))
    new_width = tf.maximum(resize_short, tf.cast(tf.round(width * ratio), tf.int32))

    def offset(limit, k):
        seed = tf.random.experimental.stateless_fold_in(key, k)
        return tf.random.stateless_uniform([], seed, minval=0, maxval=limit + 1, dtype=tf.int32)

    top = offset(new_height - crop, 0)
    left = offset(new_width - crop, 1)
    scale = tf.stack(
        [
            tf.cast(new_height, tf.float32) / tf.cast(shape[0], tf.float32),
            tf.cast(new_width, tf.float32) / tf.cast(shape[1], tf.float32),
        ]
    )
    out = tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=tf.constant([crop, crop], tf.int32),
        scale=scale,
        translation=-tf.cast(tf.stack([top, left]), tf.float32),
        kernel_type="triangle",
        antialias=True,
    )[0]
    if flip:
        coin = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(key, 2), dtype=tf.float32
        )
        out = tf.cond(coin < 0.5, lambda: tf.reverse(out, axis=[1]), lambda: out)
    out = tf.saturate_cast(tf.round(out), tf.uint8)
    return tf.ensure_shape(out, [crop, crop, 3])


def pretrain_dataset(
    data_config,
    input_config,
    *,
    local_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start: tuple[int, int] | None = None,
    source: sources_lib.Source | None = None,
) -> tf.data.Dataset:
    """The tf.data pipeline behind `pretrain_iterator` (same arguments); batches of tensors."""
    source = source if source is not None else sources_lib.make_source(data_config)
    resize_short, crop = int(input_config.resize_short), int(input_config.crop)
    flip = bool(input_config.flip)
    if crop > resize_short:
        raise ValueError(
            f"config.input.crop={crop} is larger than config.input.resize_short={resize_short}; "
            "the crop must fit in the resized image."
        )
    if local_batch_size <= 0:
        raise ValueError(f"local_batch_size={local_batch_size} must be positive.")
    return training_stream(
        source,
        data_config,
        lambda image, key: resize_crop_flip(
            image, key, resize_short=resize_short, crop=crop, flip=flip
        ),
        min_short=resize_short,
        local_batch_size=local_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        start=start,
    )


def training_stream(
    source: sources_lib.Source,
    data_config,
    augment,
    *,
    min_short: int,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    start: tuple[int, int] | None,
) -> tf.data.Dataset:
    """This process's endless, resumable batches of augmented records of ``source``.

    Records come epoch after epoch in each epoch's shuffled order, from right after ``start``
    (the (epoch, index) of the last record consumed before an interruption); each is decoded
    (JPEGs at a reduced DCT scale down to ``min_short``), augmented by ``augment(image, key)``
    with a stateless key of (seed, epoch, index), and dropped if it could not be decoded.

    Args:
      data_config: shuffle_buffer, num_parallel_calls, prefetch, cache_decoded.

    Returns:
      Batches of "image" uint8 (B, S, S, 3), "label" int32 (B,), "epoch" / "index" int64 (B,).
    """
    if local_batch_size <= 0:
        raise ValueError(f"local_batch_size={local_batch_size} must be positive.")
    shard_size = source.shard_size(process_index, process_count)
    start_epoch, first = 0, 0
    if start is not None:
        start_epoch, first = int(start[0]), int(start[1]) + 1
    if first >= shard_size:  # the interruption came right at the end of an epoch
        start_epoch, first = start_epoch + 1, 0
    shuffle_buffer = int(data_config.get("shuffle_buffer", 10_000) or 0)
    parallel = parallel_calls(data_config.get("num_parallel_calls", -1))
    cache = {} if data_config.get("cache_decoded", False) else None
    watch = decode_lib.FailureWatch(shard_size, f"process {process_index}/{process_count}")

    @tf.autograph.experimental.do_not_convert
    def epoch_records(epoch):
        epoch_first = tf.where(epoch == start_epoch, tf.constant(first, tf.int64), 0)
        return source.epoch_records(
            epoch,
            epoch_first,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            shuffle_buffer=shuffle_buffer,
        )

    @tf.autograph.experimental.do_not_convert
    def decode_and_augment(record):
        image, ok = source.decode(record, min_short=min_short, watch=watch, cache=cache)
        image = augment(image, augment_key(seed, record["epoch"], record["index"]))
        return {
            "image": image,
            "label": tf.cast(record["label"], tf.int32),
            "epoch": record["epoch"],
            "index": record["index"],
            "ok": ok,
        }

    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch_records)
    ds = ds.map(decode_and_augment, num_parallel_calls=parallel, deterministic=True)
    ds = ds.filter(_decoded).map(_drop_ok)
    ds = ds.batch(local_batch_size, drop_remainder=True)
    prefetch = data_config.get("prefetch", 2)
    if prefetch:
        ds = ds.prefetch(parallel_calls(prefetch))
    return ds.with_options(_options())


@tf.autograph.experimental.do_not_convert
def _decoded(example):
    return example["ok"]


@tf.autograph.experimental.do_not_convert
def _drop_ok(example):
    return {k: v for k, v in example.items() if k != "ok"}


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Many small elements decode in parallel; one thread per op avoids oversubscribing cores.
    options.threading.max_intra_op_parallelism = 1
    return options


def pretrain_iterator(
    data_config,
    input_config,
    *,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    start: tuple[int, int] | None = None,
    source: sources_lib.Source | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless stream of pretraining batches.

    Args:
        data_config: config.data (source, name, split, data_dir, path, shuffle_buffer,
            num_parallel_calls, prefetch, cache_decoded, demo_size).
        input_config: config.input (resize_short, crop, flip).
        local_batch_size: images per batch from this process.
        seed: the run's seed (config.seed); shuffles and augmentation derive from it.
        process_index: this process (jax.process_index()).
        process_count: number of processes (jax.process_count()).
        start: (epoch, index) of the last record consumed before an interruption: the stream
            continues right after it. None starts at epoch 0, index 0.
        source: an already built `make_source(data_config)`, to avoid listing files twice.

    Yields:
        dicts of NumPy arrays: "image" (B, crop, crop, 3) uint8 RGB; "label" (B,) int32, -1 if
        unlabelled; "epoch" (B,) int64 and "index" (B,) int64, each record's position in this
        process's shuffled, pre-filter record stream.
    """
    ds = pretrain_dataset(
        data_config,
        input_config,
        local_batch_size=local_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        start=start,
        source=source,
    )
    return ds.as_numpy_iterator()


# ---------------------------------------------------------------------------------------------
# Labelled sets for the linear classifiers: augmented, resumable train batches, one test pass.

RRC_AREA = (0.08, 1.0)  # fraction of the image's area (torchvision's RandomResizedCrop)
RRC_ASPECT = (3 / 4, 4 / 3)


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


def labelled_train_iterator(
    labelled,
    split,
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
    """This process's endless, resumable stream of augmented batches of a single-label set.

    PROTOCOLS.md, "Linear classifiers": random-resized crop (area 8-100%, aspect 3/4-4/3, as
    torchvision / VISSL) to ``size`` and a flip; or, for Colorization trunks ("resize_crop"),
    resize the short side, random ``size`` crop and flip. Randomness is stateless, keyed by
    (seed, epoch, index) as in pretraining, so a resumed run sees the same crops.

    Args:
      labelled: an ``ssl_jax.data.labelled.LabelledSet`` (single-label).
      split: its split config (shuffle_buffer, num_parallel_calls, prefetch, cache_decoded).
      start: (epoch, index) of the last record consumed before an interruption.

    Yields:
      "image" uint8 (B, size, size, 3), "label" int32 (B,), "epoch" / "index" int64 (B,).
    """
    if augment not in ("random_resized_crop", "resize_crop"):
        raise ValueError(
            f"config.input.train_augment={augment!r}; allowed: random_resized_crop, resize_crop."
        )
    # Decoding JPEGs at reduced size is only safe down to the short side crops are taken from.
    if augment == "resize_crop":
        min_short = resize_short

        def augment_fn(image, key):
            return resize_crop_flip(image, key, resize_short=resize_short, crop=size, flip=flip)
    else:
        min_short = 0

        def augment_fn(image, key):
            return random_resized_crop(image, key, size=size, flip=flip)

    ds = training_stream(
        labelled.source,
        split,
        augment_fn,
        min_short=min_short,
        local_batch_size=local_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        start=start,
    )
    return ds.as_numpy_iterator()


def labelled_test_batches(
    labelled,
    split,
    *,
    size: int,
    resize_short: int,
    local_batch_size: int,
    process_index: int,
    process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Every image of this process's share of a single-label set once, centre-cropped, in
    padded batches: short side to ``resize_short`` (256), centre ``size`` crop (224 / 227).

    Every process yields the same number of batches (that of the largest share), so a jitted
    global step can run on all of them; padding rows, and images that could not be decoded,
    have "valid" False.

    Yields:
      "image" uint8 (B, size, size, 3), "label" int32 (B,), "valid" bool (B,).
    """
    source = labelled.source
    total = source.num_examples
    shares = [len(range(p, total, process_count)) for p in range(process_count)]
    num_batches = -(-max(shares) // local_batch_size)
    watch = decode_lib.FailureWatch(shares[process_index], f"test process {process_index}")

    @tf.autograph.experimental.do_not_convert
    def decode(record):
        image, ok = source.decode(record, min_short=resize_short, watch=watch)
        image = resize_centre_crop(image, resize_short=resize_short, size=size)
        return {"image": image, "label": tf.cast(record["label"], tf.int32), "valid": ok}

    records = source.ordered_records(process_index, process_count)
    parallel = parallel_calls(split.get("num_parallel_calls", -1))
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
