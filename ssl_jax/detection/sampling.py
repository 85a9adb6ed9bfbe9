"""Random subsets with static shapes, and Fast R-CNN's RoI sampling for training.

A variable-size set is a boolean mask over a fixed-size array; `subsample` keeps k of its
members uniformly at random by ranking random scores, so k may be traced.
"""

import jax
import jax.numpy as jnp

from ssl_jax.detection.boxes import iou


def subsample(mask: jnp.ndarray, k: int | jax.Array, rng: jax.Array) -> jnp.ndarray:
    """(N,) bool -> (N,) bool: k of the True entries uniformly at random (all if fewer)."""
    scores = jnp.where(mask, jax.random.uniform(rng, mask.shape), -1.0)
    order = jnp.argsort(-scores)
    rank = (
        jnp.zeros(mask.shape, jnp.int32).at[order].set(jnp.arange(mask.shape[0], dtype=jnp.int32))
    )
    return mask & (rank < k)


def sample_rois(
    proposals: jnp.ndarray,
    proposal_valid: jnp.ndarray,
    gt_boxes: jnp.ndarray,
    gt_classes: jnp.ndarray,
    gt_valid: jnp.ndarray,
    rng: jax.Array,
    *,
    num_rois: int = 512,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou: tuple[float, float] = (0.0, 0.5),
) -> dict[str, jnp.ndarray]:
    """Fast R-CNN's training RoIs for one image (Detectron's `_sample_rois`).

    Args:
      proposals: (P, 4) boxes in image pixels; proposal_valid (P,) bool.
      gt_boxes: (G, 4); gt_classes (G,) int32 in 1..K; gt_valid (G,) bool.
      num_rois: RoIs per image (Detectron's BATCH_SIZE_PER_IM, 512 for the C4 models).
      fg_fraction: at most round(num_rois * fg_fraction) foreground RoIs.
      fg_iou: foreground if the max IoU with a valid gt box is >= fg_iou.
      bg_iou: background if bg_iou[0] <= max IoU < bg_iou[1].

    Valid gt boxes join the proposals first (so every gt box can be a foreground RoI).

    Returns a dict of
      rois (num_rois, 4): foreground rows first, then background, then invalid rows (zero box);
      classes (num_rois,) int32: the matched gt class for foreground, 0 otherwise;
      targets (num_rois, 4): the matched gt box (the max-IoU valid one) for valid rows, zero for
        invalid ones; only foreground rows are regression targets, so a caller encodes deltas under
        `classes > 0` (background rows of an image without gt boxes match a padding box);
      valid (num_rois,) bool.
    """
    boxes = jnp.concatenate([proposals, gt_boxes], axis=0)
    valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
    if boxes.shape[0] < num_rois:  # pad so that num_rois rows can always be gathered
        pad = num_rois - boxes.shape[0]
        boxes = jnp.concatenate([boxes, jnp.zeros((pad, 4), boxes.dtype)], axis=0)
        valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)], axis=0)

    # Invalid gt columns score 0, so an image without gt boxes has only background (as Detectron).
    overlaps = jnp.where(gt_valid[None, :], iou(boxes, gt_boxes), 0.0)
    max_iou = overlaps.max(axis=1)
    matched = overlaps.argmax(axis=1)

    rng_fg, rng_bg = jax.random.split(rng)
    fg = subsample(valid & (max_iou >= fg_iou), round(num_rois * fg_fraction), rng_fg)
    bg_candidates = valid & (max_iou >= bg_iou[0]) & (max_iou < bg_iou[1]) & ~fg
    bg = subsample(bg_candidates, num_rois - fg.sum(), rng_bg)

    # Stable sort on 0 (foreground) / 1 (background) / 2 (unused) puts the chosen rows first.
    order = jnp.argsort(jnp.where(fg, 0, jnp.where(bg, 1, 2)), stable=True)[:num_rois]
    keep = (fg | bg)[order]
    is_fg = fg[order]
    match = matched[order]
    return {
        "rois": jnp.where(keep[:, None], boxes[order], 0.0),
        "classes": jnp.where(is_fg, gt_classes[match], 0).astype(jnp.int32),
        "targets": jnp.where(keep[:, None], gt_boxes[match], 0.0),
        "valid": keep,
    }
