"""Box geometry: IoU, the R-CNN box-delta encoding, clipping.

Boxes are (x1, y1, x2, y2) float32 in continuous pixel coordinates of the (resized) image, with
width x2 - x1 and no "+1" (Detectron2's convention). A VOC box [xmin, ymin, xmax, ymax] (1-based,
inclusive) is (xmin - 1, ymin - 1, xmax, ymax) here. Shapes (..., 4) broadcast in `encode`,
`decode` and `clip`.

Deltas (dx, dy, dw, dh) of a target box relative to a reference box, with centres cx = x1 + w/2:
dx = wx * (tcx - cx) / w, dy = wy * (tcy - cy) / h, dw = ww * log(tw / w), dh = wh * log(th / h).
Fast R-CNN's box head uses weights (10, 10, 5, 5), the RPN (1, 1, 1, 1).
"""

import math

import jax.numpy as jnp

# Detectron's BBOX_XFORM_CLIP: dw, dh above log(1000 / 16) would blow a 16-pixel anchor up past
# 1000 pixels, so `decode` clamps them there before exp.
DEFAULT_SCALE_CLIP = math.log(1000.0 / 16)

Weights = tuple[float, float, float, float]


def area(boxes: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) -> (...,) area, 0 for boxes with x2 < x1 or y2 < y1."""
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Intersection over union of every pair: a (N, 4), b (M, 4) -> (N, M).

    A pair whose union is empty (both boxes zero-area) gets 0, not NaN.
    """
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    # The `where` inside keeps the gradient finite as well as the value.
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _centre_size(boxes: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(
    boxes: jnp.ndarray, targets: jnp.ndarray, weights: Weights = (1.0, 1.0, 1.0, 1.0)
) -> jnp.ndarray:
    """Deltas (..., 4) that take reference `boxes` (..., 4) to `targets` (..., 4).

    Reference boxes must have positive width and height (anchors and proposals do).
    """
    wx, wy, ww, wh = weights
    cx, cy, w, h = _centre_size(boxes)
    tcx, tcy, tw, th = _centre_size(targets)
    return jnp.stack(
        [
            wx * (tcx - cx) / w,
            wy * (tcy - cy) / h,
            ww * jnp.log(tw / w),
            wh * jnp.log(th / h),
        ],
        axis=-1,
    )


def decode(
    boxes: jnp.ndarray,
    deltas: jnp.ndarray,
    weights: Weights = (1.0, 1.0, 1.0, 1.0),
    scale_clip: float = DEFAULT_SCALE_CLIP,
) -> jnp.ndarray:
    """Apply `deltas` (..., 4) to reference `boxes` (..., 4); the inverse of `encode`.

    dw / ww and dh / wh are clamped at `scale_clip` before exp (Detectron's BBOX_XFORM_CLIP).
    """
    wx, wy, ww, wh = weights
    cx, cy, w, h = _centre_size(boxes)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, scale_clip)
    dh = jnp.minimum(deltas[..., 3] / wh, scale_clip)
    pcx = cx + dx * w
    pcy = cy + dy * h
    pw = w * jnp.exp(dw)
    ph = h * jnp.exp(dh)
    return jnp.stack(
        [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=-1
    ).astype(jnp.result_type(boxes, deltas))


def clip(
    boxes: jnp.ndarray, height: float | jnp.ndarray, width: float | jnp.ndarray
) -> jnp.ndarray:
    """Clip boxes (..., 4) to [0, width] x [0, height]; height, width may be traced scalars."""
    x = jnp.clip(boxes[..., 0::2], 0.0, width)
    y = jnp.clip(boxes[..., 1::2], 0.0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1).astype(boxes.dtype)
