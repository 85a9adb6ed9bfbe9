"""AlexNet trunks in the two forms the paper pretrains, NHWC.

"jigsaw" is the context-free network (CFN) of Noroozi & Favaro for 64x64 tiles, as in VISSL's
`alexnet_jigsaw` trunk, which is the public code of the paper's Jigsaw recipe:
  conv1 96x11x11 stride 2 (no padding) + ReLU, maxpool 3/2, LRN(5, 1e-4, 0.75)
  conv2 256x5x5 pad 2 groups 2 + ReLU, maxpool 3/2, LRN
  conv3 384x3x3 pad 1 + BN + ReLU
  conv4 384x3x3 pad 1 groups 2 + BN + ReLU
  conv5 256x3x3 pad 1 groups 2 + BN + ReLU, maxpool 3/2
VISSL has BatchNorm on conv3-5 only and keeps CFN's local response normalisation after pool1 and
pool2; ssl_jax's pretraining follows it (and PROTOCOLS.md, "each conv3-5 with BN + ReLU"). FAIR's
evaluation graph of its released AlexNet Jigsaw models (`alexnet_jigsaw_finetune_linear.py`) has
no LRN: `lrn=False` gives that graph, and an imported FAIR model carries it.

"colorization" (Zhang et al.'s AlexNet as benchmarked by the paper): conv1 stride 4, BatchNorm
after every conv, no LRN, grouped conv2/4/5; otherwise as above.

Convs followed by BN have no bias (BN's shift makes it redundant); conv1/conv2 of "jigsaw" have
one. Conv weights use He fan_out normal init, like the ResNet trunk.

Feature sizes for a 227x227 input (taps, H x W): jigsaw conv1 109, conv2 54, conv3-5 26, pool5
12; colorization conv1 55, conv2 27, conv3-5 13, pool5 6. For a 64x64 tile (jigsaw): conv1 27,
conv2 13, conv3-5 6, pool5 2, so pooled = 2 * 2 * 256 = 1024.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.models.conv import conv_general_dilated
from ssl_jax.models.resnet import conv_init

# name, features, kernel, stride, padding, groups
_CONVS = (
    ("conv1", 96, 11, None, 0, 1),  # stride set by the variant
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
)
_CONV1_STRIDE = {"jigsaw": 2, "colorization": 4}
_POOL_AFTER = ("conv1", "conv2", "conv5")


def local_response_norm(
    x: jnp.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jnp.ndarray:
    """Cross-channel LRN as torch.nn.LocalResponseNorm / Caffe: x / (k + alpha/size * sum x^2)^beta.

    The sum runs over `size` channels centred on each channel (zero-padded at the ends). x is
    (..., C); the result has x's shape and dtype, computed in float32.
    """
    x32 = x.astype(jnp.float32)
    sq = jnp.pad(jnp.square(x32), [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
    window = (1,) * (x.ndim - 1) + (size,)
    summed = lax.reduce_window(sq, 0.0, lax.add, window, (1,) * x.ndim, "VALID")
    return (x32 / (k + (alpha / size) * summed) ** beta).astype(x.dtype)


def _even_channels(channels: int, width: float) -> int:
    # Every AlexNet conv feeds or is a 2-group conv, so channel counts stay even.
    return max(2, 2 * round(channels * width / 2))


def _pool_size(size: int) -> int:
    return (size - 3) // 2 + 1


def _pool5_size(image_size: int, variant: str) -> int:
    size = (image_size - 11) // _CONV1_STRIDE[variant] + 1
    return max(0, _pool_size(_pool_size(_pool_size(size))))


def min_input_size(variant: str) -> int:
    """The smallest square input whose pool5 is at least 1 x 1 for `variant`."""
    size = 11
    while _pool5_size(size, variant) < 1:
        size += 1
    return size


class AlexNet(nn.Module):
    """AlexNet trunk without the fully connected layers.

    Attributes:
      variant: "jigsaw" (conv1 stride 2, LRN, BN on conv3-5) or "colorization" (conv1 stride 4,
        BN on every conv).
      lrn: LRN after pool1 and pool2; None = the variant's (jigsaw: yes, colorization: no).
      width: multiplies every channel count (rounded to an even number, at least 2).
      bn_group_size: examples per BatchNorm group in training; None = whole batch.
      bn_momentum, bn_epsilon: BatchNorm running-average decay and epsilon.
      dtype: compute dtype of convs and activations; parameters and BN statistics are float32.

    Call `(x, train)`: x (B, H, W, C_in) (3 channels for Jigsaw, the L channel for Colorization).
    Returns `(pooled, taps)`:
      pooled: (B, h5 * w5 * 256 * width) float32, pool5 (maxpool 3/2 of conv5) flattened in
        (h, w, c) order.
      taps: {"conv1", ..., "conv5"} -> (B, h, w, c) in `dtype`, after ReLU, before pooling/LRN.
    """

    variant: str = "jigsaw"
    lrn: bool | None = None
    width: float = 1.0
    bn_group_size: int | None = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.variant not in _CONV1_STRIDE:
            raise ValueError(
                f"Unknown AlexNet variant {self.variant!r}; allowed: {sorted(_CONV1_STRIDE)}. "
                "Set config.model.alexnet_variant."
            )
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}; set config.model.width.")
        super().__post_init__()

    def pooled_features(self, image_size: int) -> int:
        """Width of `pooled` for a square `image_size` input (1024 for a 64-pixel tile)."""
        return _pool5_size(image_size, self.variant) ** 2 * _even_channels(256, self.width)

    def min_input_size(self) -> int:
        """The smallest square input leaving pool5 at least 1 x 1 (jigsaw 39, colorization 67)."""
        return min_input_size(self.variant)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
        height, width_px = x.shape[-3:-1]
        if _pool5_size(min(height, width_px), self.variant) < 1:
            raise ValueError(
                f"AlexNet ({self.variant} variant) got a {height}x{width_px} input: conv1 and the "
                f"three 3/2 max-pools leave no pixel below {self.min_input_size()} pixels. Use a "
                "larger input: config.jigsaw.tile or config.input.crop when pretraining, "
                "config.features.size in a benchmark."
            )
        taps = {}
        lrn = self.variant == "jigsaw" if self.lrn is None else self.lrn
        x = x.astype(self.dtype)
        for name, features, kernel, stride, pad, groups in _CONVS:
            with_bn = self.variant == "colorization" or name not in ("conv1", "conv2")
            stride = stride or _CONV1_STRIDE[self.variant]
            x = nn.Conv(
                _even_channels(features, self.width),
                (kernel, kernel),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                feature_group_count=groups,
                conv_general_dilated=conv_general_dilated,
                use_bias=not with_bn,
                kernel_init=conv_init,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=name,
            )(x)
            if with_bn:
                x = GroupedBatchNorm(
                    group_size=self.bn_group_size,
                    momentum=self.bn_momentum,
                    epsilon=self.bn_epsilon,
                    dtype=self.dtype,
                    name=f"bn{name[-1]}",
                )(x, train)
            x = nn.relu(x)
            taps[name] = x
            if name in _POOL_AFTER:
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
                if lrn and name != "conv5":
                    x = local_response_norm(x)
        pooled = x.astype(jnp.float32).reshape(x.shape[0], -1)
        return pooled, taps
