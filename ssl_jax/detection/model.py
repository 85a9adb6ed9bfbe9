"""Faster R-CNN with a ResNet-C4 body in flax.linen (Detectron's ``e2e_faster_rcnn_R-50-C4``).

The body is a ResNet's stem..res4 (stride 16); RoIAlign pools each RoI from res4 to 14 x 14;
res5 (its first block at stride 2) is the box head, giving 7 x 7, average-pooled into a
(K + 1)-way classifier and class-specific box regression. The RPN is one 3 x 3 conv (res4's
width, 1024 for ResNet-50) + ReLU with objectness and box-delta 1 x 1 convs on res4.

BatchNorm is frozen everywhere (Detectron's AffineChannel, Detectron2's FrozenBatchNorm2d): the
trunk always runs in inference mode on its running statistics, and the optimizer never updates
them or BatchNorm's scale and shift (``ssl_jax.evals.detection``). ``freeze_at`` stops the
gradient after that stage of the body (1 = the stem, 2 = res2, ... 4 = res4: the whole body
frozen), so the frozen stages cost no backward pass.

Variables: ``{"params": {"body": {conv1, bn1, res2_0 .. res4_*}, "head": {res5_*}, "rpn": ...,
"box": ...}, "batch_stats": {"body": ..., "head": ...}}``; the names inside body and head are the
trunk's own (``ssl_jax.models.resnet``), so ``from_trunk`` moves a pretrained trunk in by
renaming alone.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.detection import roi_align as roi_align_lib
from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.models.resnet import EXPANSION, Block, conv_init, scaled_channels, stages

BODY_STAGES = ("conv1", "bn1", "res2", "res3", "res4")


class _Stages(nn.Module):
    """The ResNet stages ``first``..``last`` (1 = the stem, 2..5 = res2..res5), BatchNorm frozen.

    Names are the trunk's (conv1, bn1, res{s}_{i}). res5's first block has stride 2, whatever
    the pretraining used (Colorization's res5 ran at stride 1: the weights are the same).
    """

    depth: int
    width: float
    first: int
    last: int
    stride_in_1x1: bool = False
    bn_epsilon: float = 1e-5
    freeze_at: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kind, blocks = stages(self.depth)
        if self.first == 1:
            x = nn.Conv(
                scaled_channels(64, self.width),
                (7, 7),
                strides=(2, 2),
                padding=((3, 3), (3, 3)),
                use_bias=False,
                kernel_init=conv_init,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="conv1",
            )(x.astype(self.dtype))
            x = GroupedBatchNorm(epsilon=self.bn_epsilon, dtype=self.dtype, name="bn1")(x, False)
            x = nn.relu(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            x = self._maybe_freeze(x, 1)
        for stage in range(max(self.first, 2), self.last + 1):
            planes = scaled_channels(64 * 2 ** (stage - 2), self.width)
            for i in range(blocks[stage - 2]):
                x = Block(
                    kind=kind,
                    planes=planes,
                    stride=(1 if stage == 2 else 2) if i == 0 else 1,
                    dilation=1,
                    stride_in_1x1=self.stride_in_1x1,
                    bn_group_size=None,
                    zero_init_residual=False,
                    bn_momentum=0.9,
                    bn_epsilon=self.bn_epsilon,
                    dtype=self.dtype,
                    name=f"res{stage}_{i}",
                )(x, False)
            x = self._maybe_freeze(x, stage)
        return x

    def _maybe_freeze(self, x, stage):
        # Detectron's StopGradient after res{FREEZE_AT}: nothing below it trains.
        return jax.lax.stop_gradient(x) if stage == self.freeze_at else x


def res4_channels(depth: int, width: float) -> int:
    kind, _ = stages(depth)
    return scaled_channels(256, width) * EXPANSION[kind]


class C4Detector(nn.Module):
    """Faster R-CNN / Fast R-CNN, ResNet-C4.

    Attributes:
      depth, width, stride_in_1x1, bn_epsilon: the trunk's (``ssl_jax.models.resnet``).
      num_classes: foreground classes K (the classifier has K + 1 outputs, 0 = background).
      num_anchors: anchors per position (RPN outputs).
      freeze_at: the last frozen stage of the body (0: none; 2: Detectron's default; 4: the
        paper's frozen conv body).
      roi_size: RoIAlign's output (14; res5 halves it to 7).
      roi_sampling: samples per bin and axis; 0 = Detectron's adaptive ceil(RoI size / roi_size).
      roi_max_sampling: the static cap of the adaptive count (see ``roi_align``).
      roi_aligned: Detectron2's half-pixel offset (False: Detectron's RoIAlign).
      roi_chunk: RoIs per chunk of the RoIAlign contraction (memory bound).
      dtype: compute dtype; parameters float32.

    Methods (all on NHWC float inputs, batch first):
      features(x (B, H, W, Cin)) -> res4 (B, H/16, W/16, C4)
      rpn(features) -> (objectness logits (B, h, w, A), deltas (B, h, w, A, 4)) float32
      boxes(features, rois (B, R, 4) image pixels) -> (class logits (B, R, K + 1),
        class-specific deltas (B, R, K + 1, 4)) float32
    """

    depth: int = 50
    width: float = 1.0
    stride_in_1x1: bool = False
    bn_epsilon: float = 1e-5
    num_classes: int = 20
    num_anchors: int = 15
    freeze_at: int = 4
    roi_size: int = 14
    roi_sampling: int = 0
    roi_max_sampling: int = 4
    roi_aligned: bool = False
    roi_chunk: int = 256
    stride: int = 16
    dtype: Any = jnp.float32

    def setup(self):
        common = dict(
            depth=self.depth,
            width=self.width,
            stride_in_1x1=self.stride_in_1x1,
            bn_epsilon=self.bn_epsilon,
            dtype=self.dtype,
        )
        self.body = _Stages(first=1, last=4, freeze_at=self.freeze_at, **common)
        self.head = _Stages(first=5, last=5, **common)
        channels = res4_channels(self.depth, self.width)
        # Detectron's initialisation: N(0, 0.01) for the RPN and the classifier, N(0, 0.001) for
        # the box regression, zero biases.
        normal = nn.initializers.normal
        self.rpn_conv = nn.Conv(
            channels, (3, 3), padding=((1, 1), (1, 1)), kernel_init=normal(0.01),
            dtype=self.dtype, param_dtype=jnp.float32, name="rpn_conv",
        )  # fmt: skip
        self.rpn_logits = nn.Conv(
            self.num_anchors, (1, 1), kernel_init=normal(0.01), dtype=self.dtype,
            param_dtype=jnp.float32, name="rpn_logits",
        )  # fmt: skip
        self.rpn_deltas = nn.Conv(
            4 * self.num_anchors, (1, 1), kernel_init=normal(0.01), dtype=self.dtype,
            param_dtype=jnp.float32, name="rpn_deltas",
        )  # fmt: skip
        self.cls_score = nn.Dense(
            self.num_classes + 1, kernel_init=normal(0.01), dtype=self.dtype,
            param_dtype=jnp.float32, name="cls_score",
        )  # fmt: skip
        self.bbox_pred = nn.Dense(
            4 * (self.num_classes + 1), kernel_init=normal(0.001), dtype=self.dtype,
            param_dtype=jnp.float32, name="bbox_pred",
        )  # fmt: skip

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.body(x)

    def rpn(self, features: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        y = nn.relu(self.rpn_conv(features))
        logits = self.rpn_logits(y).astype(jnp.float32)
        deltas = self.rpn_deltas(y).astype(jnp.float32)
        return logits, deltas.reshape(*deltas.shape[:-1], self.num_anchors, 4)

    def boxes(self, features: jnp.ndarray, rois: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        batch, num_rois = rois.shape[:2]
        pooled = jax.vmap(
            lambda f, r: roi_align_lib.roi_align(
                f,
                jax.lax.stop_gradient(r),
                output_size=self.roi_size,
                spatial_scale=1.0 / self.stride,
                sampling_ratio=self.roi_sampling,
                aligned=self.roi_aligned,
                max_sampling=self.roi_max_sampling if self.roi_sampling == 0 else None,
                chunk=self.roi_chunk,
            )
        )(features, rois)
        pooled = pooled.reshape(batch * num_rois, *pooled.shape[2:])
        y = self.head(pooled.astype(self.dtype))
        y = jnp.mean(y.astype(jnp.float32), axis=(1, 2))
        logits = self.cls_score(y).astype(jnp.float32)
        deltas = self.bbox_pred(y).astype(jnp.float32)
        k = self.num_classes + 1
        return logits.reshape(batch, num_rois, k), deltas.reshape(batch, num_rois, k, 4)

    def __call__(self, x: jnp.ndarray, rois: jnp.ndarray):
        """Every parameter in one pass (for ``init``)."""
        f = self.features(x)
        return self.rpn(f), self.boxes(f, rois)


def max_sampling(max_side: int, stride: int, roi_size: int) -> int:
    """The adaptive sampling count's exact cap: a RoI spans at most the padded image."""
    return max(1, math.ceil(max_side / stride / roi_size))


def from_trunk(trunk: dict[str, Any], detector: dict[str, Any]) -> dict[str, Any]:
    """The detector's variables with body and head taken from a ResNet trunk's
    ``{"params", "batch_stats"}``; the RPN and box predictor keep ``detector``'s.

    Raises ValueError naming the first tensor whose shape differs (another depth or width).
    """
    out = {"params": dict(detector["params"]), "batch_stats": dict(detector["batch_stats"])}
    for collection in ("params", "batch_stats"):
        for part in ("body", "head"):
            target = detector[collection][part]
            source = {k: trunk[collection][k] for k in target if k in trunk[collection]}
            missing = sorted(set(target) - set(source))
            if missing:
                raise ValueError(
                    f"The pretrained trunk has no {missing[0]!r} ({collection}); the detector "
                    "needs a ResNet trunk of the same depth."
                )
            flat_s = dict(jax.tree_util.tree_flatten_with_path(source)[0])
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
                got = jnp.shape(flat_s[path]) if path in flat_s else None
                if got != jnp.shape(leaf):
                    name = "/".join(str(getattr(p, "key", p)) for p in path)
                    raise ValueError(
                        f"The pretrained trunk's {part}/{name} ({collection}) has shape {got}, "
                        f"the detector's {jnp.shape(leaf)}: another ResNet depth or width."
                    )
            out[collection][part] = jax.tree.map(jnp.asarray, source)
    return out
