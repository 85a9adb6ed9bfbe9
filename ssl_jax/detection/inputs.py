"""The detector's input pipeline: resize, flip and pad VOC images into static-shape batches.

Detectron's preprocessing (PROTOCOLS.md, "Detection"): each image is scaled so that its short side
is ``short_side`` (600) unless its long side would exceed ``max_side`` (1000) (``resize_scale``,
Detectron's ``prep_im_for_blob``), resized with bilinear interpolation, flipped at random in
training, and pasted at the top-left of a zero canvas.

Static shapes: Detectron pads each batch to its largest image and groups images of one aspect
(landscape or portrait) per batch. Here every image has a fixed padded shape, its bucket
(``bucket_shape``): the short side padded up to a multiple of ``size_divisor``, the long side up to
a multiple of ``bucket_step``, capped at the padded ``max_side``. A batch holds images of one
bucket, so a jitted step compiles once per bucket (a handful on VOC).

Boxes: annotations are VOC's 1-based inclusive pixels ``[xmin, ymin, xmax, ymax]``; the model
sees continuous pixels of the resized image, ``(xmin - 1, ymin - 1, xmax, ymax) * scale``
(``to_resized``), and ``to_original`` maps detections back for the devkit's scoring.

Images are decoded with OpenCV ignoring EXIF orientation (VOC's annotated sizes are those of the
stored pixels), converted to RGB, and each must have its annotated size. Decoding runs ahead of
the consumer in a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures

import cv2
import numpy as np

from ssl_jax.detection.voc import DetectionSet

_log = logging.getLogger(__name__)

# Batches decoded ahead of the one being consumed.
_BATCHES_AHEAD = 2

_lock = threading.Lock()
_truncated = 0


class ImageDecodeError(RuntimeError):
    """An image of a detection set could not be read, decoded, or had the wrong size."""


def truncated_count() -> int:
    """Images whose boxes were cut to ``max_boxes`` so far in this process (once per use: an
    image in every epoch counts once per epoch)."""
    with _lock:
        return _truncated


def reset_truncated_count() -> None:
    global _truncated
    with _lock:
        _truncated = 0


def _count_truncated(image_id: str, num_boxes: int, max_boxes: int) -> None:
    global _truncated
    with _lock:
        _truncated += 1
        first = _truncated == 1
    if first:
        _log.warning(
            "Image %s has %d boxes; only the first %d are kept (config max_boxes; further "
            "truncations are only counted).",
            image_id,
            num_boxes,
            max_boxes,
        )


def resize_scale(height: int, width: int, short_side: int, max_side: int) -> float:
    """The factor that brings the short side to ``short_side`` unless the long side would then
    exceed ``max_side`` (Detectron's ``prep_im_for_blob``)."""
    return min(short_side / min(height, width), max_side / max(height, width))


def resized_shape(height: int, width: int, short_side: int, max_side: int) -> tuple[int, int]:
    """(height, width) after resizing by ``resize_scale``."""
    scale = resize_scale(height, width, short_side, max_side)
    return round(height * scale), round(width * scale)


def bucket_shape(
    height: int,
    width: int,
    short_side: int,
    max_side: int,
    size_divisor: int = 32,
    bucket_step: int = 128,
) -> tuple[int, int]:
    """The padded (Hp, Wp) of an image of the original size (height, width).

    Landscape (width >= height) or portrait as the original; the resized short side is padded up
    to a multiple of ``size_divisor``, the long side up to a multiple of ``bucket_step`` but at
    most ``max_side`` padded up to a multiple of ``size_divisor``.
    """
    _check_padding(size_divisor, bucket_step)
    h, w = resized_shape(height, width, short_side, max_side)
    short, long = min(h, w), max(h, w)
    cap = _round_up(max_side, size_divisor)
    short_padded = _round_up(short, size_divisor)
    long_padded = min(_round_up(long, bucket_step), cap)
    if width >= height:
        return short_padded, long_padded
    return long_padded, short_padded


def to_resized(boxes: np.ndarray, scale: float) -> np.ndarray:
    """VOC 1-based inclusive (n, 4) boxes -> continuous pixels of the image resized by ``scale``."""
    boxes = np.asarray(boxes, np.float64)
    continuous = np.concatenate([boxes[:, :2] - 1.0, boxes[:, 2:]], axis=1)
    return continuous * scale


def to_original(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Continuous resized-pixel (n, 4) boxes -> VOC 1-based ``[xmin, ymin, xmax, ymax]`` in the
    original (height, width) image, clipped to ``[1, width] x [1, height]``; the inverse of
    ``to_resized`` for boxes inside the image. float64."""
    original = np.asarray(boxes, np.float64) / scale
    original[:, :2] += 1.0
    original[:, 0::2] = np.clip(original[:, 0::2], 1.0, width)
    original[:, 1::2] = np.clip(original[:, 1::2], 1.0, height)
    return original


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Per image of a set: resize scale (n,), resized (n, 2) (h, w), bucket (n, 2) (Hp, Wp)."""

    scale: np.ndarray
    resized: np.ndarray
    bucket: np.ndarray

    def groups(self, order: Sequence[int]) -> dict[tuple[int, int], list[int]]:
        """Image indices by bucket, in ``order`` within a bucket; buckets sorted."""
        by_bucket: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
        for i in order:
            by_bucket[(int(self.bucket[i, 0]), int(self.bucket[i, 1]))].append(int(i))
        return dict(sorted(by_bucket.items()))


def _layout(
    dataset: DetectionSet, short_side: int, max_side: int, size_divisor: int, bucket_step: int
) -> _Layout:
    scale, resized, bucket = [], [], []
    for a in dataset.annotations:
        scale.append(resize_scale(a.height, a.width, short_side, max_side))
        resized.append(resized_shape(a.height, a.width, short_side, max_side))
        bucket.append(
            bucket_shape(a.height, a.width, short_side, max_side, size_divisor, bucket_step)
        )
    return _Layout(
        np.asarray(scale, np.float64).reshape(-1),
        np.asarray(resized, np.int64).reshape(-1, 2),
        np.asarray(bucket, np.int64).reshape(-1, 2),
    )


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One global batch: this process's rows (image index, -1 for padding; flip)."""

    epoch: int
    index: int
    bucket: tuple[int, int]
    images: list[int]
    flips: list[bool]


def _epoch_batches(
    layout: _Layout, epoch: int, seed: int, global_batch: int
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """The global batches of a training epoch: (bucket, image indices), in training order."""
    n = len(layout.scale)
    order = np.random.default_rng([seed, epoch, 0]).permutation(n)
    batches = []
    for bucket, members in layout.groups(order).items():
        for start in range(0, len(members) - global_batch + 1, global_batch):
            batches.append((bucket, np.asarray(members[start : start + global_batch])))
    shuffle = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[j] for j in shuffle]


def train_steps_per_epoch(
    dataset: DetectionSet,
    *,
    global_batch: int,
    short_side: int = 600,
    max_side: int = 1000,
    size_divisor: int = 32,
    bucket_step: int = 128,
) -> int:
    """Global batches per training epoch (the same in every epoch; see ``train_batches``)."""
    layout = _layout(dataset, short_side, max_side, size_divisor, bucket_step)
    groups = layout.groups(range(dataset.num_images))
    return sum(len(members) // global_batch for members in groups.values())


def train_batches(
    dataset: DetectionSet,
    *,
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    short_side: int = 600,
    max_side: int = 1000,
    size_divisor: int = 32,
    bucket_step: int = 128,
    flip: bool = True,
    max_boxes: int = 64,
    seed: int = 0,
    start: tuple[int, int] | None = None,
    workers: int = 4,
    proposals: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's training batches, epoch after epoch, without end.

    Epoch e: the images in a permutation drawn from (seed, e), grouped by bucket in that order;
    each bucket cut into full global batches, and the batches shuffled from (seed, e). A bucket's
    last ``len(bucket) % global_batch`` images wait out the epoch (static shapes need full
    batches), so an epoch sees ``sum over buckets of len(bucket) % global_batch`` images fewer than
    the set holds (below ``global_batch`` times the number of buckets; a different draw each
    epoch). Flips are drawn from (seed, e) per image. Batch k of epoch e carries "epoch" e and
    "index" k in every row; ``start=(e, k)`` resumes with the batch after it. The global batch is
    the same for any ``process_count``; process p gets its rows ``[p * b, (p + 1) * b)``,
    ``b = global_batch // process_count``.

    Yields dicts of NumPy arrays (b rows, bucket (Hp, Wp), G = ``max_boxes``):
      image: (b, Hp, Wp, 3) uint8 RGB, the resized image at the top-left, zeros elsewhere.
      image_hw: (b, 2) int32, the resized (height, width).
      boxes: (b, G, 4) float32, continuous resized pixels ``[x1, y1, x2, y2]``; zeros if padding.
      classes: (b, G) int32, the annotation's class + 1 (1..K), 0 for padding.
      box_valid, difficult: (b, G) bool.
      image_index: (b,) int32, the row's index into ``dataset.annotations``.
      epoch, index: (b,) int64.
      proposals, proposal_valid: (b, P, 4) float32 / (b, P) bool, with ``proposals``
        (``ssl_jax.detection.proposals.load``: (num_images, P, 4) continuous original pixels and
        their validity) given: resized and flipped as the ground truth.
    Images with more than ``max_boxes`` boxes keep the first ones (``truncated_count``).

    Raises:
      ValueError: a batch size that does not split, or no bucket that fills a global batch.
      ImageDecodeError: (from ``next``) an image that could not be decoded.
    """
    local = _local_batch(global_batch, process_index, process_count)
    if seed < 0:
        raise ValueError(f"seed={seed}: the input seed must be >= 0.")
    if max_boxes <= 0:
        raise ValueError(f"max_boxes={max_boxes}: must be positive.")
    layout = _layout(dataset, short_side, max_side, size_divisor, bucket_step)
    sizes = {b: len(m) for b, m in layout.groups(range(dataset.num_images)).items()}
    steps = sum(s // global_batch for s in sizes.values())
    if steps == 0:
        raise ValueError(
            f"No bucket of {dataset.name} holds global_batch={global_batch} images (bucket sizes "
            f"{sizes}); lower the batch size or raise bucket_step={bucket_step}."
        )
    left_out = sum(s % global_batch for s in sizes.values())
    _log.info(
        "%s: %d buckets, %d batches of %d per epoch; %d of %d images wait out each epoch.",
        dataset.name,
        len(sizes),
        steps,
        global_batch,
        left_out,
        dataset.num_images,
    )
    rows = slice(process_index * local, (process_index + 1) * local)

    def plans() -> Iterator[_Plan]:
        epoch, first = (0, 0) if start is None else (int(start[0]), int(start[1]) + 1)
        while True:
            batches = _epoch_batches(layout, epoch, seed, global_batch)
            flips = np.random.default_rng([seed, epoch, 2]).random(dataset.num_images) < 0.5
            for k in range(first, len(batches)):
                bucket, members = batches[k]
                mine = [int(i) for i in members[rows]]
                yield _Plan(epoch, k, bucket, mine, [bool(flip and flips[i]) for i in mine])
            epoch, first = epoch + 1, 0

    for plan, images in _decoded(dataset, layout, plans(), workers):
        batch = _train_batch(dataset, layout, plan, images, max_boxes)
        if proposals is not None:
            _add_proposals(batch, layout, plan, proposals)
        yield batch


def _add_proposals(
    batch: dict[str, np.ndarray],
    layout: _Layout,
    plan: _Plan,
    proposals: tuple[np.ndarray, np.ndarray],
) -> None:
    """Each row's proposals in its resized (and flipped) image; zeros for padding rows."""
    boxes, valid = proposals
    b = len(plan.images)
    batch["proposals"] = np.zeros((b, *boxes.shape[1:]), np.float32)
    batch["proposal_valid"] = np.zeros((b, boxes.shape[1]), bool)
    for row, (i, flipped) in enumerate(zip(plan.images, plan.flips, strict=True)):
        if i < 0:
            continue
        resized = np.asarray(boxes[i], np.float32) * layout.scale[i]
        if flipped:
            width = layout.resized[i, 1]
            resized[:, [0, 2]] = width - resized[:, [2, 0]]
        batch["proposals"][row] = resized
        batch["proposal_valid"][row] = valid[i]


def _train_batch(
    dataset: DetectionSet,
    layout: _Layout,
    plan: _Plan,
    images: list[np.ndarray | None],
    max_boxes: int,
) -> dict[str, np.ndarray]:
    b = len(plan.images)
    batch = _canvas(b, plan.bucket)
    batch.update(
        boxes=np.zeros((b, max_boxes, 4), np.float32),
        classes=np.zeros((b, max_boxes), np.int32),
        box_valid=np.zeros((b, max_boxes), bool),
        difficult=np.zeros((b, max_boxes), bool),
        image_index=np.asarray(plan.images, np.int32),
        epoch=np.full((b,), plan.epoch, np.int64),
        index=np.full((b,), plan.index, np.int64),
    )
    for row, (i, flipped, image) in enumerate(zip(plan.images, plan.flips, images, strict=True)):
        _paste(batch, row, image)
        a = dataset.annotations[i]
        g = len(a.boxes)
        if g > max_boxes:
            _count_truncated(a.image_id, g, max_boxes)
            g = max_boxes
        boxes = to_resized(np.asarray(a.boxes).reshape(-1, 4)[:g], layout.scale[i])
        if flipped:
            width = layout.resized[i, 1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        batch["boxes"][row, :g] = boxes
        batch["classes"][row, :g] = np.asarray(a.classes)[:g] + 1
        batch["box_valid"][row, :g] = True
        batch["difficult"][row, :g] = np.asarray(a.difficult)[:g]
    return batch


def num_test_batches(
    dataset: DetectionSet,
    *,
    global_batch: int,
    short_side: int = 600,
    max_side: int = 1000,
    size_divisor: int = 32,
    bucket_step: int = 128,
) -> int:
    """Global batches of ``test_batches`` (every process runs this many steps)."""
    layout = _layout(dataset, short_side, max_side, size_divisor, bucket_step)
    groups = layout.groups(range(dataset.num_images))
    return sum(math.ceil(len(members) / global_batch) for members in groups.values())


def test_batches(
    dataset: DetectionSet,
    *,
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
    short_side: int = 600,
    max_side: int = 1000,
    size_divisor: int = 32,
    bucket_step: int = 128,
    workers: int = 4,
    proposals: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's evaluation batches: every image once, unflipped, in ``num_test_batches``
    global batches.

    Buckets in sorted order, images of a bucket in the set's order; the last batch of a bucket
    is filled with padding rows (zero images of the bucket's full shape, scale 1, "valid" False,
    "image_index" -1). Process p gets rows ``[p * b, (p + 1) * b)``.

    Yields dicts of NumPy arrays (b rows, bucket (Hp, Wp)):
      image: (b, Hp, Wp, 3) uint8; image_hw: (b, 2) int32 resized (height, width);
      valid: (b,) bool; image_index: (b,) int32 into ``dataset.annotations``, -1 for padding;
      scale: (b,) float32, resized / original pixels (``to_original`` maps boxes back).
      proposals, proposal_valid: with ``proposals`` given, as in ``train_batches``.
    """
    local = _local_batch(global_batch, process_index, process_count)
    layout = _layout(dataset, short_side, max_side, size_divisor, bucket_step)
    rows = slice(process_index * local, (process_index + 1) * local)

    def plans() -> Iterator[_Plan]:
        k = 0
        for bucket, members in layout.groups(range(dataset.num_images)).items():
            for first in range(0, len(members), global_batch):
                chunk = members[first : first + global_batch]
                chunk = chunk + [-1] * (global_batch - len(chunk))
                mine = chunk[rows]
                yield _Plan(0, k, bucket, mine, [False] * len(mine))
                k += 1

    for plan, images in _decoded(dataset, layout, plans(), workers):
        b = len(plan.images)
        batch = _canvas(b, plan.bucket)
        indices = np.asarray(plan.images, np.int32)
        valid = indices >= 0
        batch["image_hw"][~valid] = plan.bucket
        batch.update(
            valid=valid,
            image_index=indices,
            scale=np.where(valid, layout.scale[indices], 1.0).astype(np.float32),
        )
        for row, image in enumerate(images):
            if image is not None:
                _paste(batch, row, image)
        if proposals is not None:
            _add_proposals(batch, layout, plan, proposals)
        yield batch


def _local_batch(global_batch: int, process_index: int, process_count: int) -> int:
    if global_batch <= 0 or process_count <= 0 or global_batch % process_count:
        raise ValueError(
            f"global_batch={global_batch} does not split evenly over process_count="
            f"{process_count} processes; use a positive multiple of {process_count}."
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, {process_count}).")
    return global_batch // process_count


def _canvas(rows: int, bucket: tuple[int, int]) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((rows, *bucket, 3), np.uint8),
        "image_hw": np.zeros((rows, 2), np.int32),
    }


def _paste(batch: dict[str, np.ndarray], row: int, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    batch["image"][row, :h, :w] = image
    batch["image_hw"][row] = (h, w)


def _decoded(
    dataset: DetectionSet, layout: _Layout, plans: Iterator[_Plan], workers: int
) -> Iterator[tuple[_Plan, list[np.ndarray | None]]]:
    """(plan, its rows' resized images, None for padding), decoded ``_BATCHES_AHEAD`` batches
    ahead in ``workers`` threads (0: in the caller's thread)."""

    def load(i: int, flipped: bool) -> np.ndarray | None:
        if i < 0:
            return None
        h, w = layout.resized[i]
        return _load_image(dataset, i, (int(h), int(w)), flipped)

    if workers <= 0:
        for plan in plans:
            yield plan, [load(i, f) for i, f in zip(plan.images, plan.flips, strict=True)]
        return
    pool = futures.ThreadPoolExecutor(workers, thread_name_prefix="detection-inputs")
    pending: collections.deque[tuple[_Plan, list[futures.Future]]] = collections.deque()
    try:
        for plan in plans:
            jobs = [pool.submit(load, i, f) for i, f in zip(plan.images, plan.flips, strict=True)]
            pending.append((plan, jobs))
            if len(pending) > _BATCHES_AHEAD:
                done, jobs = pending.popleft()
                yield done, [job.result() for job in jobs]
        while pending:
            done, jobs = pending.popleft()
            yield done, [job.result() for job in jobs]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _load_image(
    dataset: DetectionSet, index: int, resized: tuple[int, int], flipped: bool
) -> np.ndarray:
    """Decoded RGB uint8 image ``index`` resized to ``resized`` (h, w), flipped left-right."""
    a = dataset.annotations[index]
    where = f"image {a.image_id!r} (index {index} of {dataset.name})"
    fix = "replace the file or leave the image out of the split"
    try:
        data = dataset.image_bytes(index)
    except Exception as e:
        raise ImageDecodeError(f"Could not read {where}: {e}; {fix}.") from e
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if len(data) else None
    if image is None:
        raise ImageDecodeError(f"OpenCV could not decode {where} ({len(data)} bytes); {fix}.")
    if image.shape[:2] != (a.height, a.width):
        raise ImageDecodeError(
            f"{where} is {image.shape[1]}x{image.shape[0]} pixels but annotated as "
            f"{a.width}x{a.height}; fix its annotation's <size> or {fix}."
        )
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (resized[1], resized[0]), interpolation=cv2.INTER_LINEAR)
    if flipped:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_padding(size_divisor: int, bucket_step: int) -> None:
    if size_divisor <= 0 or bucket_step <= 0 or bucket_step % size_divisor:
        raise ValueError(
            f"bucket_step={bucket_step} must be a positive multiple of size_divisor="
            f"{size_divisor} (padded shapes stay multiples of the network's stride)."
        )
