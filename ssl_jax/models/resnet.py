"""ResNet trunks (18, 34, 50, 101, 152) in NHWC, with the paper's feature taps.

Layout: torchvision's ResNet ("v1.5"): in a bottleneck block the stride sits on the 3x3 conv, not
on the first 1x1 conv as in the original Caffe ResNet v1 used by Detectron. v1.5 is what VISSL
trains and what torchvision / Detectron2 weight exports expect; it is slightly more accurate at
the same cost. The parameter layout (and count) is torchvision's without the final fc:
ResNet-50 has 23,508,032 parameters, ResNet-18 11,176,512.

Parameter names follow torchvision so a weight export is a renaming: `conv1`/`bn1` is the stem,
`res{s}_{i}` is block i of stage s (torchvision's `layer{s-1}.{i}`), and inside a block
`conv1..conv3`, `bn1..bn3`, `downsample_conv`, `downsample_bn`.

`res5_stride=1` keeps res5 at res4's resolution (1/16 of the input), as for Colorization. FAIR's
Colorization ResNet-50 (`resnet_colorize_finetune_linear.py`) does only that: res5's 3x3 convs are
not dilated (`res5_dilation=1`, the default). `res5_dilation=2` gives the lost stride back as
dilation in every 3x3 conv of res5 (Detectron2's `res5_dilation`, DeepLab-style), so res5's
receptive field grows as it would have with stride 2.

`stride_in_1x1=True` puts a bottleneck block's stride on its first 1x1 conv instead of the 3x3
(the original Caffe ResNet and Detectron's MSRA models, Detectron's `STRIDE_1X1`). FAIR's
self-supervision models and torchvision's put it on the 3x3 (the default, False). The parameters
are the same either way; only the forward differs.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.models.conv import conv_general_dilated

# depth -> (block kind, blocks per stage res2..res5)
STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (k * k * out)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled_channels(channels: int, width: float) -> int:
    """`channels * width` rounded, at least 1."""
    return max(1, round(channels * width))


def stages(depth: int) -> tuple[str, tuple[int, int, int, int]]:
    if depth not in STAGES:
        raise ValueError(
            f"Unknown ResNet depth {depth}; allowed: {sorted(STAGES)}. Set config.model.depth."
        )
    return STAGES[depth]


class Block(nn.Module):
    """One residual block (basic or bottleneck), output after the final ReLU."""

    kind: str
    planes: int
    stride: int
    dilation: int
    bn_group_size: int | None
    zero_init_residual: bool
    bn_momentum: float
    bn_epsilon: float
    dtype: Any
    stride_in_1x1: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        def conv(features, kernel, stride=1, dilation=1, name=None):
            pad = dilation * (kernel // 2)
            return nn.Conv(
                features,
                (kernel, kernel),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                kernel_dilation=(dilation, dilation),
                conv_general_dilated=conv_general_dilated,
                use_bias=False,
                kernel_init=conv_init,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=name,
            )

        def bn(name, last=False):
            zero = last and self.zero_init_residual
            return GroupedBatchNorm(
                group_size=self.bn_group_size,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                dtype=self.dtype,
                scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
                name=name,
            )

        out_features = self.planes * EXPANSION[self.kind]
        if self.kind == "basic":
            y = conv(self.planes, 3, self.stride, self.dilation, name="conv1")(x)
            y = nn.relu(bn("bn1")(y, train))
            y = conv(self.planes, 3, 1, self.dilation, name="conv2")(y)
            y = bn("bn2", last=True)(y, train)
        else:
            stride_1x1, stride_3x3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
            y = conv(self.planes, 1, stride_1x1, name="conv1")(x)
            y = nn.relu(bn("bn1")(y, train))
            y = conv(self.planes, 3, stride_3x3, self.dilation, name="conv2")(y)
            y = nn.relu(bn("bn2")(y, train))
            y = conv(out_features, 1, name="conv3")(y)
            y = bn("bn3", last=True)(y, train)

        if self.stride != 1 or x.shape[-1] != out_features:
            x = conv(out_features, 1, self.stride, name="downsample_conv")(x)
            x = bn("downsample_bn")(x, train)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """ResNet trunk without the classifier.

    Attributes:
      depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
      width: multiplies every channel count (stem 64 -> max(1, round(64 * width)), etc.).
      res5_stride: 2 (standard) or 1 (res5 at 1/16 resolution).
      res5_dilation: dilation of res5's 3x3 convs, 1 (FAIR's Colorization model) or 2 (a
        stride-2 res5's receptive field); with res5_stride=2 it must be 1.
      stride_in_1x1: bottleneck blocks stride on the first 1x1 conv (Caffe/Detectron MSRA)
        rather than on the 3x3 (torchvision, FAIR's models; the default).
      bn_group_size: examples per BatchNorm group in training; None = whole batch.
      zero_init_residual: start each block's last BN scale at 0 (block = identity at init).
      bn_momentum, bn_epsilon: BatchNorm running-average decay and epsilon.
      dtype: compute dtype of convs and activations; parameters and BN statistics are float32.

    Call `(x, train)`: x (B, H, W, C_in) images (any C_in). Returns `(pooled, taps)`:
      pooled: (B, num_features) float32 global average pool of res5.
      taps: {"conv1", "res2", "res3", "res4", "res5"} -> (B, h, w, c) in `dtype`, each after its
        ReLU; "conv1" is the stem conv + BN + ReLU before the max pool. For a 224 input and width 1
        (ResNet-50): 112x112x64, 56x56x256, 28x28x512, 14x14x1024, 7x7x2048 (14x14 for res5 with
        res5_stride=1).
    """

    depth: int = 50
    width: float = 1.0
    res5_stride: int = 2
    res5_dilation: int = 1
    stride_in_1x1: bool = False
    bn_group_size: int | None = None
    zero_init_residual: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    def __post_init__(self):
        stages(self.depth)
        if self.res5_stride not in (1, 2):
            raise ValueError(
                f"res5_stride must be 1 or 2, got {self.res5_stride}; set config.model.res5_stride."
            )
        if self.res5_dilation not in (1, 2) or (self.res5_stride == 2 and self.res5_dilation != 1):
            raise ValueError(
                f"res5_dilation must be 1 or 2, and 1 when res5_stride=2; got res5_dilation="
                f"{self.res5_dilation} with res5_stride={self.res5_stride}. Set "
                "config.model.res5_dilation."
            )
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}; set config.model.width.")
        super().__post_init__()

    @property
    def num_features(self) -> int:
        """Width of `pooled` (and channels of the res5 tap): 2048 * width for ResNet-50."""
        kind, _ = stages(self.depth)
        return scaled_channels(512, self.width) * EXPANSION[kind]

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
        kind, blocks = stages(self.depth)
        taps = {}
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
        x = GroupedBatchNorm(
            group_size=self.bn_group_size,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            dtype=self.dtype,
            name="bn1",
        )(x, train)
        x = nn.relu(x)
        taps["conv1"] = x
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        for stage, num_blocks in enumerate(blocks):
            planes = scaled_channels(64 * 2**stage, self.width)
            stride = 1 if stage == 0 else 2
            dilation = 1
            if stage == 3 and self.res5_stride == 1:
                stride, dilation = 1, self.res5_dilation
            for i in range(num_blocks):
                x = Block(
                    kind=kind,
                    planes=planes,
                    stride=stride if i == 0 else 1,
                    dilation=dilation,
                    stride_in_1x1=self.stride_in_1x1,
                    bn_group_size=self.bn_group_size,
                    zero_init_residual=self.zero_init_residual,
                    bn_momentum=self.bn_momentum,
                    bn_epsilon=self.bn_epsilon,
                    dtype=self.dtype,
                    name=f"res{stage + 2}_{i}",
                )(x, train)
            taps[f"res{stage + 2}"] = x

        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return pooled, taps
