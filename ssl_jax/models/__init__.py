"""Trunks: ResNet and AlexNet in flax.linen, NHWC, returning `(pooled, taps)`."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssl_jax.models.alexnet import AlexNet
from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.models.resnet import ResNet

__all__ = ["AlexNet", "GroupedBatchNorm", "ResNet", "make_trunk"]

TRUNKS = ("alexnet", "resnet")


def make_trunk(model_config: ml_collections.ConfigDict, dtype: Any = jnp.float32) -> nn.Module:
    """Builds the trunk named by `model_config.name` ("resnet" or "alexnet").

    Reads `depth` (resnet), `width`, `bn_group_size`, and the optional fields `res5_stride`
    (resnet, default 2), `res5_dilation` (resnet, default 1), `stride_in_1x1` (resnet, default
    False), `zero_init_residual` (resnet, default False), `alexnet_variant` (default "jigsaw"),
    `alexnet_lrn` (None: the variant's), `bn_momentum` (0.9) and `bn_epsilon` (1e-5). `dtype` is
    the compute dtype (a numpy dtype or its name, e.g. "bfloat16").
    """
    name = model_config.name
    common = dict(
        width=model_config.get("width", 1.0),
        bn_group_size=model_config.get("bn_group_size", None),
        bn_momentum=model_config.get("bn_momentum", 0.9),
        bn_epsilon=model_config.get("bn_epsilon", 1e-5),
        dtype=jnp.dtype(dtype),
    )
    if name == "resnet":
        return ResNet(
            depth=model_config.depth,
            res5_stride=model_config.get("res5_stride", 2),
            res5_dilation=model_config.get("res5_dilation", 1),
            stride_in_1x1=model_config.get("stride_in_1x1", False),
            zero_init_residual=model_config.get("zero_init_residual", False),
            **common,
        )
    if name == "alexnet":
        return AlexNet(
            variant=model_config.get("alexnet_variant", "jigsaw"),
            lrn=model_config.get("alexnet_lrn", None),
            **common,
        )
    raise ValueError(f"Unknown trunk {name!r}; allowed: {list(TRUNKS)}. Set config.model.name.")
