"""RPN anchors: the per-cell set, its tiling over a feature map, and training labels.

Anchors are boxes (x1, y1, x2, y2) in image pixels (boxes.py's convention). A cell's anchors are
centred at 0 with aspect ratio h / w and area size**2 (Detectron2's `generate_cell_anchors`, no
rounding and no "+1"), ordered sizes-major: anchor a = size_index * len(ratios) + ratio_index.
The order only matters when loading an RPN head trained elsewhere (Detectron's own order is
ratios-major).

`grid_anchors` orders anchors (y, x, a), so an RPN output (B, h, w, A) reshaped to (B, h * w * A)
lines up with them.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.detection.boxes import iou
from ssl_jax.detection.sampling import subsample


def cell_anchors(
    stride: int = 16,
    sizes: tuple[float, ...] = (32, 64, 128, 256, 512),
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> np.ndarray:
    """(len(sizes) * len(ratios), 4) float32 anchors centred at 0, sizes-major.

    For size s and ratio r = h / w: w = s / sqrt(r), h = s * sqrt(r). `stride` is the feature
    stride the anchors belong to; with anchors centred at 0 it does not change them (it is kept
    so a call names it, as Detectron's `generate_anchors` does).
    """
    del stride
    rows = []
    for size in sizes:
        for ratio in ratios:
            w = size / np.sqrt(ratio)
            h = size * np.sqrt(ratio)
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return np.asarray(rows, np.float32)


def grid_anchors(feature_h: int, feature_w: int, stride: int, cell: np.ndarray) -> jnp.ndarray:
    """(feature_h * feature_w * A, 4) anchors, ordered (y, x, a).

    Cell (y, x) is centred at ((x + 0.5) * stride, (y + 0.5) * stride) in image pixels.
    """
    cy = (np.arange(feature_h, dtype=np.float32) + 0.5) * stride
    cx = (np.arange(feature_w, dtype=np.float32) + 0.5) * stride
    x, y = np.meshgrid(cx, cy, indexing="xy")  # (h, w) each
    shifts = np.stack([x, y, x, y], axis=-1)
    anchors = shifts[:, :, None, :] + np.asarray(cell, np.float32)[None, None]
    return jnp.asarray(anchors.reshape(-1, 4))


def label_anchors(
    anchors: jnp.ndarray,
    gt_boxes: jnp.ndarray,
    gt_valid: jnp.ndarray,
    image_hw: jnp.ndarray,
    rng: jax.Array,
    *,
    batch_size: int = 256,
    positive_fraction: float = 0.5,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    straddle: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """RPN training labels for one image (Detectron's `_get_rpn_blobs`).

    Args:
      anchors: (N, 4) from `grid_anchors`.
      gt_boxes: (G, 4); gt_valid (G,) bool marks the real ones.
      image_hw: (2,) [height, width] of the resized image (may be traced).
      batch_size, positive_fraction: at most batch_size * positive_fraction positives, negatives
        fill the rest of batch_size (Detectron's RPN_BATCH_SIZE_PER_IM, RPN_FG_FRACTION).
      positive_iou, negative_iou: Detectron's RPN_POSITIVE_OVERLAP / RPN_NEGATIVE_OVERLAP.
      straddle: how far (pixels) an anchor may cross the image border and still be labelled
        (Detectron's RPN_STRADDLE_THRESH).

    Returns:
      labels (N,) int32: 1 positive, 0 negative, -1 ignored (outside the image or not sampled).
      matched (N,) int32: index of the valid gt box with the highest IoU (0 if there is none).

    Positive: max IoU >= positive_iou, or the anchor attains a valid gt box's highest IoU over the
    inside anchors when that is > 0 (all tied anchors). Negative: max IoU < negative_iou and not
    positive. Unlike Detectron, a best-anchor positive below negative_iou stays positive, and
    negatives are sampled without replacement.
    """
    height, width = image_hw[0], image_hw[1]
    inside = (
        (anchors[:, 0] >= -straddle)
        & (anchors[:, 1] >= -straddle)
        & (anchors[:, 2] < width + straddle)
        & (anchors[:, 3] < height + straddle)
    )
    overlaps = iou(anchors, gt_boxes)
    # -1 never wins a max against a real IoU (>= 0): padding gt boxes and outside anchors drop out.
    by_gt = jnp.where(gt_valid[None, :], overlaps, -1.0)
    max_iou = by_gt.max(axis=1)
    matched = by_gt.argmax(axis=1).astype(jnp.int32)

    inside_by_gt = jnp.where(inside[:, None], by_gt, -1.0)
    gt_best = inside_by_gt.max(axis=0)
    is_best = ((inside_by_gt == gt_best[None, :]) & (gt_best[None, :] > 0)).any(axis=1)

    positive = inside & ((max_iou >= positive_iou) | is_best)
    # With no valid gt box max_iou is -1, so every inside anchor is a negative candidate.
    negative = inside & (max_iou < negative_iou) & ~positive

    rng_pos, rng_neg = jax.random.split(rng)
    positive = subsample(positive, int(batch_size * positive_fraction), rng_pos)
    negative = subsample(negative, batch_size - positive.sum(), rng_neg)
    labels = jnp.where(positive, 1, jnp.where(negative, 0, -1)).astype(jnp.int32)
    return labels, matched
