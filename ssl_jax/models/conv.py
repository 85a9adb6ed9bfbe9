"""One convolution entry point for every trunk, with two CPU-only rewrites of slow XLA paths.

XLA's CPU backend runs two kinds of convolution through a slow generic path:
- grouped convolutions (``feature_group_count > 1``): the kernel gradient of AlexNet's conv2
  shape (288x13x13x64, 2 groups) is about 19x slower than two ungrouped convolutions of half
  the width;
- spatial convolutions whose output map is at most 2x2 (a ResNet-50's res5 on 64-pixel Jigsaw
  tiles): a 3x3 conv on 36x2x2x512 -> 512 took 382 ms against 3.9 ms as nine shifted matmuls.
On CPU, ``conv_general_dilated`` rewrites both into fast equivalents (one convolution per group;
im2col + one matmul); the results are the same to float rounding. GPUs and TPUs always take
``lax.conv_general_dilated`` as it is. Expects NHWC inputs and HWIO kernels, as flax's Conv uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

SMALL_MAP = 2  # output maps up to this size (per side) go through im2col on CPU


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` with the CPU rewrites above; the same signature."""
    native = dict(
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        precision=precision,
        **kwargs,
    )
    if jax.default_backend() != "cpu" or kwargs:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, feature_group_count=feature_group_count, **native
        )
    if feature_group_count > 1:
        inputs = jnp.split(lhs, feature_group_count, axis=-1)
        kernels = jnp.split(rhs, feature_group_count, axis=-1)
        outs = [
            conv_general_dilated(
                x,
                k,
                window_strides,
                padding,
                lhs_dilation,
                rhs_dilation,
                dimension_numbers,
                1,
                precision,
            )
            for x, k in zip(inputs, kernels, strict=True)
        ]
        return jnp.concatenate(outs, axis=-1)
    if _im2col_applies(lhs, rhs, window_strides, padding, lhs_dilation):
        return _im2col_conv(lhs, rhs, window_strides, padding, rhs_dilation or (1, 1), precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **native)


def _out_size(size, kernel, stride, pad, dilation):
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def _im2col_applies(lhs, rhs, strides, padding, lhs_dilation) -> bool:
    if (
        isinstance(padding, str)
        or lhs.ndim != 4
        or (lhs_dilation and any(d != 1 for d in lhs_dilation))
    ):
        return False
    kh, kw = rhs.shape[:2]
    if kh * kw == 1:
        return False
    return all(
        _out_size(lhs.shape[1 + i], rhs.shape[i], strides[i], padding[i], 1) <= SMALL_MAP
        for i in range(2)
    )


def _im2col_conv(lhs, rhs, strides, padding, dilation, precision):
    """The convolution as one matmul over the kh*kw shifted views of the padded input."""
    kh, kw, cin, cout = rhs.shape
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    out_h = _out_size(lhs.shape[1], kh, strides[0], padding[0], dilation[0])
    out_w = _out_size(lhs.shape[2], kw, strides[1], padding[1], dilation[1])
    views = [
        x[
            :,
            dy * dilation[0] : dy * dilation[0] + (out_h - 1) * strides[0] + 1 : strides[0],
            dx * dilation[1] : dx * dilation[1] + (out_w - 1) * strides[1] + 1 : strides[1],
            :,
        ]
        for dy in range(kh)
        for dx in range(kw)
    ]
    patches = jnp.concatenate(views, axis=-1)  # (N, out_h, out_w, kh*kw*cin), (dy, dx, c) order
    out = jnp.dot(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)
    return out.astype(jnp.result_type(lhs, rhs))
