"""Batch normalisation over fixed-size groups of the batch.

The paper computed BatchNorm statistics per GPU (32 images, i.e. 288 Jigsaw tiles). Under one
global `jax.jit` a plain BatchNorm would normalise over the whole global batch, so results would
change with the number of devices. `GroupedBatchNorm` instead splits the leading (batch) axis into
contiguous groups of `group_size` examples and normalises each group with its own statistics. The
groups are fixed by position in the global batch, so the output is the same for any device count
or sharding: XLA inserts whatever communication a group spanning devices needs.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Initializer = Callable[..., Any]


class GroupedBatchNorm(nn.Module):
    """BatchNorm whose training statistics come from fixed-size groups of the batch.

    Normalises over every axis but the last (channel) one. Input (B, ..., C), output the same shape
    in `dtype`.

    Training (`train=True`): the batch is reshaped to (B // group_size, group_size, ..., C) and each
    group is normalised with its own mean and biased variance, computed in float32. The running
    statistics in collection "batch_stats" (`mean`, `var`, float32, shape (C,)) are updated as
    `momentum * old + (1 - momentum) * stat`, where `stat` is the mean over groups of the group
    means (resp. biased group variances). As in `flax.linen.BatchNorm`, `init` leaves them at
    0 and 1. Inference (`train=False`): the running statistics are used.

    Attributes:
      group_size: examples per normalisation group; None normalises over the whole batch.
      momentum: running-average decay (0.9 = PyTorch's momentum 0.1).
      epsilon: added to the variance before the square root.
      dtype: dtype of the output (parameters and statistics stay float32).
      use_scale: learn a per-channel scale `scale`.
      use_bias: learn a per-channel shift `bias`.
      scale_init: initializer of `scale` (zeros for a residual block's last BN, optionally).
      bias_init: initializer of `bias`.
    """

    group_size: int | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), jnp.float32))
        x32 = x.astype(jnp.float32)

        if train:
            groups = x32.reshape(self._num_groups(x.shape[0]), -1, *x.shape[1:])
            axes = tuple(range(1, groups.ndim - 1))
            mean = jnp.mean(groups, axis=axes, keepdims=True)
            # Two-pass variance: E[x^2] - E[x]^2 loses precision when |mean| >> std.
            var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
            if not self.is_initializing():
                stat_axes = tuple(range(groups.ndim - 1))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, axis=stat_axes)
                ra_var.value = m * ra_var.value + (1 - m) * jnp.mean(var, axis=stat_axes)
        else:
            groups = x32
            mean, var = ra_mean.value, ra_var.value

        mul = jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, (channels,), jnp.float32)
        shift = -mean * mul
        if self.use_bias:
            shift = shift + self.param("bias", self.bias_init, (channels,), jnp.float32)
        y = groups * mul + shift
        return y.reshape(x.shape).astype(self.dtype)

    def _num_groups(self, batch: int) -> int:
        if self.group_size is None:
            return 1
        if self.group_size < 1:
            raise ValueError(
                f"BatchNorm group size must be a positive integer or None (whole batch), got "
                f"{self.group_size}; set config.model.bn_group_size."
            )
        if batch % self.group_size:
            if self.is_initializing():
                # `init` is often traced with a dummy batch of any size; the normalised values are
                # discarded there, so normalise over the whole batch rather than fail.
                return 1
            raise ValueError(
                f"Batch size {batch} is not divisible by the BatchNorm group size "
                f"{self.group_size}; set config.model.bn_group_size to a divisor of {batch} "
                f"(or None to normalise over the whole batch)."
            )
        return batch // self.group_size
