"""Greedy non-maximum suppression with static shapes, and Detectron's per-class test-time NMS.

`nms` sorts once, then a `lax.while_loop` takes the best box still alive, records it and kills
every box overlapping it by IoU > threshold (strictly, as torchvision). Each step is O(N), there
is no N x N IoU matrix (12000 proposals would need 576 MB), and the loop stops as soon as no box
is left or `max_output` are kept, so its cost is O(N * kept).
"""

import jax
import jax.numpy as jnp

from ssl_jax.detection.boxes import area


def nms(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    valid: jnp.ndarray,
    iou_threshold: float,
    max_output: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Greedy NMS over boxes (N, 4) with scores (N,); entries with valid (N,) False are ignored.

    Returns indices (max_output,) int32 into `boxes`, in descending score (ties: lower index
    first), and keep_valid (max_output,) bool; rows past the number kept are index 0, invalid.
    """
    # Stable sort on -score: equal scores keep index order, so the tie rule is the lower index.
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True).astype(jnp.int32)
    sorted_boxes = boxes[order]
    sorted_area = area(sorted_boxes)
    alive = valid[order]

    def cond(state):
        alive, _, count = state
        return (count < max_output) & alive.any()

    def body(state):
        alive, kept, count = state
        i = jnp.argmax(alive)  # the first alive box in sorted order is the best one left
        box = sorted_boxes[i]
        lt = jnp.maximum(sorted_boxes[:, :2], box[:2])
        rb = jnp.minimum(sorted_boxes[:, 2:], box[2:])
        wh = jnp.maximum(rb - lt, 0.0)
        inter = wh[:, 0] * wh[:, 1]
        union = sorted_area + sorted_area[i] - inter
        # A zero-area pair (union 0) has IoU 0 here; torchvision's NaN does not suppress either.
        overlap = inter / jnp.where(union > 0, union, 1.0)
        suppressed = overlap > iou_threshold
        alive = alive & ~suppressed
        alive = alive.at[i].set(False)
        kept = kept.at[count].set(i.astype(jnp.int32))
        return alive, kept, count + 1

    kept = jnp.zeros((max_output,), jnp.int32)
    _, kept, count = jax.lax.while_loop(cond, body, (alive, kept, jnp.int32(0)))
    keep_valid = jnp.arange(max_output) < count
    indices = jnp.where(keep_valid, order[kept], 0)
    return indices, keep_valid


def per_class_nms(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    valid: jnp.ndarray,
    *,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.3,
    max_per_class: int,
    max_total: int = 100,
) -> dict[str, jnp.ndarray]:
    """Detectron's test-time detections for one image (`box_results_with_nms_and_limit`).

    Args:
      boxes: (R, K, 4) class-specific boxes of R RoIs for K classes; scores (R, K); valid (R,).
        The K columns are the classes to report: drop the background column before the call.
      score_threshold: per class, only scores > score_threshold are candidates.
      iou_threshold: NMS threshold within a class.
      max_per_class: static cap on the boxes one class keeps after NMS.
      max_total: detections per image, the best over all classes.

    Returns a dict of boxes (max_total, 4), scores (max_total,), classes (max_total,) int32 in
    [0, K) and valid (max_total,) bool, in descending score; invalid rows are zero.
    Detectron keeps every detection scoring at least the max_total-th score (ties may give more);
    here exactly the top max_total are kept.
    """
    k = scores.shape[1]

    def one_class(class_boxes, class_scores):
        candidates = valid & (class_scores > score_threshold)
        return nms(class_boxes, class_scores, candidates, iou_threshold, max_per_class)

    idx, ok = jax.vmap(one_class, in_axes=(1, 1))(boxes, scores)  # (K, max_per_class) each
    classes = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32)[:, None], idx.shape)
    kept_scores = jnp.where(ok, scores[idx, classes], -jnp.inf).reshape(-1)
    kept_boxes = boxes[idx, classes].reshape(-1, 4)
    top_scores, top = jax.lax.top_k(kept_scores, min(max_total, kept_scores.shape[0]))
    out_valid = top_scores > -jnp.inf
    pad = max_total - top.shape[0]
    result = {
        "boxes": jnp.where(out_valid[:, None], kept_boxes[top], 0.0),
        "scores": jnp.where(out_valid, top_scores, 0.0),
        "classes": jnp.where(out_valid, classes.reshape(-1)[top], 0),
        "valid": out_valid,
    }
    if pad:  # fewer candidates than max_total in all: pad with invalid rows
        result = {
            key: jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for key, v in result.items()
        }
    return result
