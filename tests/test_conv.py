"""The CPU rewrites of slow convolutions equal lax.conv_general_dilated, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssl_jax.models import conv

DN = ("NHWC", "HWIO", "NHWC")


def reference(x, k, strides, pad, dilation=(1, 1), groups=1):
    return lax.conv_general_dilated(
        x, k, strides, pad, rhs_dilation=dilation, dimension_numbers=DN, feature_group_count=groups
    )


@pytest.mark.parametrize(
    "size,kernel,stride,pad,dilation,groups",
    [
        (2, 3, 1, 1, 1, 1),  # res5 3x3 on 2x2 maps: im2col
        (4, 3, 2, 1, 1, 1),  # res5's first block, stride 2 -> 2x2: im2col
        (1, 3, 1, 1, 1, 1),  # 1x1 maps
        (2, 3, 1, 2, 2, 1),  # dilated res5 (res5_stride=1)
        (6, 3, 1, 1, 1, 1),  # a larger map: the native path
        (7, 5, 1, 2, 1, 2),  # AlexNet's grouped conv2: split per group
        (3, 3, 1, 1, 1, 2),  # grouped and small
    ],
)
def test_matches_lax(size, kernel, stride, pad, dilation, groups):
    rng = np.random.default_rng(size * 100 + kernel)
    x = jnp.asarray(rng.normal(size=(3, size, size, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 8 // groups, 6)), jnp.float32)
    args = ((stride, stride), ((pad, pad), (pad, pad)))

    def ours(x, k):
        return conv.conv_general_dilated(
            x,
            k,
            *args,
            rhs_dilation=(dilation, dilation),
            dimension_numbers=DN,
            feature_group_count=groups,
        )

    def theirs(x, k):
        return reference(x, k, *args, (dilation, dilation), groups)

    np.testing.assert_allclose(jax.jit(ours)(x, k), theirs(x, k), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(lambda x, k: jnp.sum(ours(x, k) ** 2), argnums=(0, 1))(x, k)
    g_theirs = jax.grad(lambda x, k: jnp.sum(theirs(x, k) ** 2), argnums=(0, 1))(x, k)
    for a, b in zip(g_ours, g_theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
