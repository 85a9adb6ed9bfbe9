"""Faster / Fast R-CNN's computations around the model: RPN proposals, the four losses, and
test-time detections, all per image under ``jax.vmap`` with static shapes.

``Settings`` holds every number of PROTOCOLS.md's "Detection" section that these functions use;
``ssl_jax.evals.detection`` builds it from the config. Boxes are (x1, y1, x2, y2) in continuous
pixels of the resized image (``ssl_jax.detection.boxes``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ssl_jax.detection import anchors as anchors_lib
from ssl_jax.detection import boxes as boxes_lib
from ssl_jax.detection import nms as nms_lib
from ssl_jax.detection import sampling


@dataclasses.dataclass(frozen=True)
class Settings:
    """PROTOCOLS.md's Detection constants (the defaults are Detectron's and FAIR's)."""

    stride: int = 16
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch: int = 256  # anchors per image
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_straddle: float = 0.0
    rpn_nms: float = 0.7
    rpn_min_size: float = 0.0
    train_pre_nms: int = 12_000
    train_post_nms: int = 2_000
    test_pre_nms: int = 2_000
    test_post_nms: int = 1_000
    rpn_box_beta: float = 1.0 / 9.0  # Detectron's smooth-L1 beta for the RPN
    num_rois: int = 512  # sampled per image
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: tuple[float, float] = (0.0, 0.5)
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_beta: float = 1.0
    test_score: float = 0.05
    test_nms: float = 0.3
    test_max: int = 100
    rpn: bool = True  # False: Fast R-CNN on proposals that come with the batch

    @property
    def cell_anchors(self):
        return anchors_lib.cell_anchors(self.stride, self.anchor_sizes, self.anchor_ratios)

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)


def grid_anchors(settings: Settings, feature_hw: tuple[int, int]) -> jnp.ndarray:
    """(h * w * A, 4) anchors of a feature map, in the RPN outputs' (y, x, a) order."""
    return jnp.asarray(
        anchors_lib.grid_anchors(*feature_hw, settings.stride, settings.cell_anchors)
    )


def smooth_l1(x: jnp.ndarray, beta: float) -> jnp.ndarray:
    """Detectron's smooth L1: 0.5 x^2 / beta below beta, |x| - 0.5 beta above."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def proposals(
    settings: Settings,
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    image_hw: jnp.ndarray,
    *,
    train: bool,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One image's RPN proposals (Detectron's GenerateProposals).

    logits (h, w, A), deltas (h, w, A, 4), anchors (h*w*A, 4), image_hw (2,) the image inside
    its padding. The top ``pre_nms`` anchors by objectness, decoded and clipped to the image,
    those with a positive size and a centre inside the image, NMS, the top ``post_nms``.

    Returns (boxes (post_nms, 4), valid (post_nms,)).
    """
    pre, post = (
        (settings.train_pre_nms, settings.train_post_nms)
        if train
        else (settings.test_pre_nms, settings.test_post_nms)
    )
    scores = logits.reshape(-1)
    pre = min(pre, scores.shape[0])
    post = min(post, pre)
    top, index = jax.lax.top_k(scores, pre)
    boxes = boxes_lib.decode(anchors[index], deltas.reshape(-1, 4)[index])
    h, w = image_hw[0].astype(jnp.float32), image_hw[1].astype(jnp.float32)
    boxes = boxes_lib.clip(boxes, h, w)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
    size = max(settings.rpn_min_size, 0.0)
    valid = (bw > size) & (bh > size) & (cx < w) & (cy < h)
    keep, keep_valid = nms_lib.nms(boxes, top, valid, settings.rpn_nms, post)
    return boxes[keep], keep_valid


def rpn_losses(
    settings: Settings,
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    batch: dict[str, jnp.ndarray],
    rng: jax.Array,
) -> dict[str, jnp.ndarray]:
    """Objectness (sigmoid cross-entropy over the sampled anchors of the batch) and box loss
    (smooth L1, beta 1/9, on positives, each image's sum over its sampled anchors' count,
    averaged over images), as Detectron's single-scale RPN losses."""
    b = logits.shape[0]
    flat_logits = logits.reshape(b, -1)
    flat_deltas = deltas.reshape(b, -1, 4)

    def one(gt, gt_valid, hw, key):
        labels, matched = anchors_lib.label_anchors(
            anchors, gt, gt_valid, hw, key,
            batch_size=settings.rpn_batch, positive_fraction=settings.rpn_positive_fraction,
            positive_iou=settings.rpn_positive_iou, negative_iou=settings.rpn_negative_iou,
            straddle=settings.rpn_straddle,
        )  # fmt: skip
        # Only positives regress; the others encode against themselves (zero deltas), never
        # against a padding box (log 0 would turn the masked loss's gradient into NaN).
        target = jnp.where((labels == 1)[:, None], gt[matched], anchors)
        return labels, boxes_lib.encode(anchors, target)

    labels, targets = jax.vmap(one)(
        batch["boxes"], batch["box_valid"], batch["image_hw"], jax.random.split(rng, b)
    )
    sampled = labels >= 0
    ce = optax.sigmoid_binary_cross_entropy(flat_logits, (labels == 1).astype(jnp.float32))
    cls = jnp.sum(jnp.where(sampled, ce, 0.0)) / jnp.maximum(jnp.sum(sampled), 1)
    per_anchor = smooth_l1(flat_deltas - targets, settings.rpn_box_beta).sum(-1)
    per_image = jnp.sum(jnp.where(labels == 1, per_anchor, 0.0), axis=1)
    box = jnp.mean(per_image / jnp.maximum(jnp.sum(sampled, axis=1), 1))
    return {"loss_rpn_cls": cls, "loss_rpn_box": box}


def sample(
    settings: Settings,
    proposals: jnp.ndarray,
    proposal_valid: jnp.ndarray,
    batch: dict[str, jnp.ndarray],
    rng: jax.Array,
) -> dict[str, jnp.ndarray]:
    """Per image ``num_rois`` RoIs from the proposals and the ground truth (vmapped
    ``sampling.sample_rois``)."""

    def one(p, pv, gt, gc, gv, key):
        return sampling.sample_rois(
            p, pv, gt, gc, gv, key, num_rois=settings.num_rois,
            fg_fraction=settings.fg_fraction, fg_iou=settings.fg_iou, bg_iou=settings.bg_iou,
        )  # fmt: skip

    b = proposals.shape[0]
    return jax.vmap(one)(
        jax.lax.stop_gradient(proposals),
        proposal_valid,
        batch["boxes"],
        batch["classes"],
        batch["box_valid"],
        jax.random.split(rng, b),
    )


def box_losses(
    settings: Settings,
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    rois: dict[str, jnp.ndarray],
) -> dict[str, jnp.ndarray]:
    """Softmax cross-entropy over the valid RoIs, and smooth L1 (beta 1) of the true class's
    deltas (weights 10, 10, 5, 5) on foreground RoIs divided by the RoI count (Detectron)."""
    valid, classes = rois["valid"], rois["classes"]
    count = jnp.maximum(jnp.sum(valid), 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    cls = jnp.sum(jnp.where(valid, ce, 0.0)) / count
    chosen = jnp.take_along_axis(deltas, classes[..., None, None], axis=2)[..., 0, :]
    fg = valid & (classes > 0)
    # Background and padding RoIs encode against a unit box (zero-size RoIs would give NaN).
    unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32)
    sources = jnp.where(fg[..., None], rois["rois"], unit)
    targets = boxes_lib.encode(sources, jnp.where(fg[..., None], rois["targets"], unit),
                               settings.box_weights)  # fmt: skip
    per_roi = smooth_l1(chosen - targets, settings.box_beta).sum(-1)
    box = jnp.sum(jnp.where(fg, per_roi, 0.0)) / count
    accuracy = jnp.sum(jnp.where(valid, jnp.argmax(logits, -1) == classes, False)) / count
    return {"loss_cls": cls, "loss_box": box, "accuracy": accuracy, "fg_rois": jnp.mean(
        jnp.sum(fg, axis=1).astype(jnp.float32))}  # fmt: skip


def train_losses(
    settings: Settings,
    model: Any,
    variables: dict[str, Any],
    inputs: jnp.ndarray,
    batch: dict[str, jnp.ndarray],
    rng: jax.Array,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The summed loss of one batch and its parts (``inputs``: the trunk's input, padding 0)."""
    rng_rpn, rng_rois = jax.random.split(rng)
    features = model.apply(variables, inputs, method="features")
    metrics: dict[str, jnp.ndarray] = {}
    if settings.rpn:
        logits, deltas = model.apply(variables, features, method="rpn")
        anchors = grid_anchors(settings, features.shape[1:3])
        metrics.update(rpn_losses(settings, logits, deltas, anchors, batch, rng_rpn))
        props, props_valid = jax.vmap(
            lambda lg, dl, hw: proposals(settings, lg, dl, anchors, hw, train=True)
        )(jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas), batch["image_hw"])
    else:
        props, props_valid = batch["proposals"], batch["proposal_valid"]
    rois = sample(settings, props, props_valid, batch, rng_rois)
    cls_logits, box_deltas = model.apply(variables, features, rois["rois"], method="boxes")
    metrics.update(box_losses(settings, cls_logits, box_deltas, rois))
    metrics["proposals"] = jnp.mean(jnp.sum(props_valid, axis=1).astype(jnp.float32))
    loss = sum(v for k, v in metrics.items() if k.startswith("loss_"))
    return loss, metrics


def detect(
    settings: Settings,
    model: Any,
    variables: dict[str, Any],
    inputs: jnp.ndarray,
    batch: dict[str, jnp.ndarray],
) -> dict[str, jnp.ndarray]:
    """Test-time detections of a batch: per class score > test_score, NMS test_nms, the top
    test_max per image over all classes.

    Returns {"boxes" (B, test_max, 4) resized-image pixels, "scores", "classes" (0-based
    foreground class), "valid"}.
    """
    features = model.apply(variables, inputs, method="features")
    if settings.rpn:
        logits, deltas = model.apply(variables, features, method="rpn")
        anchors = grid_anchors(settings, features.shape[1:3])
        rois, rois_valid = jax.vmap(
            lambda lg, dl, hw: proposals(settings, lg, dl, anchors, hw, train=False)
        )(logits, deltas, batch["image_hw"])
    else:
        rois, rois_valid = batch["proposals"], batch["proposal_valid"]
    cls_logits, box_deltas = model.apply(variables, features, rois, method="boxes")
    probs = jax.nn.softmax(cls_logits, axis=-1)

    def one(r, rv, p, d, hw):
        decoded = boxes_lib.decode(r[:, None, :], d, settings.box_weights)
        decoded = boxes_lib.clip(decoded, hw[0].astype(jnp.float32), hw[1].astype(jnp.float32))
        return nms_lib.per_class_nms(
            decoded[:, 1:], p[:, 1:], rv, score_threshold=settings.test_score,
            iou_threshold=settings.test_nms, max_per_class=settings.test_max,
            max_total=settings.test_max,
        )  # fmt: skip

    return jax.vmap(one)(rois, rois_valid, probs, box_deltas, batch["image_hw"])
