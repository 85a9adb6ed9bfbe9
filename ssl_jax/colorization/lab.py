"""sRGB <-> CIE Lab (D65, 2-degree observer), in jnp for use inside a jitted step.

The constants are the ones of skimage.color and OpenCV: the sRGB transfer curve, the sRGB -> XYZ
matrix of IEC 61966-2-1, the D65 white (0.95047, 1, 1.08883) and the CIE 1976 Lab formulas with
the linear segment below (6/29)^3. The 3x3 matrix is applied as multiply-adds, not a matmul, so
TPU/GPU matmul precision settings cannot lower its accuracy.

OpenCV's 8-bit conversion (what the paper's Caffe pipeline used) stores L * 255 / 100, a + 128 and
b + 128, rounded to uint8; ``quantize_8bit`` reproduces that rounding for the network's input and
targets.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # (6/29)^3 rounded, as skimage and OpenCV
_KAPPA = 7.787  # slope of the linear segment of f(t), as skimage


def _srgb_to_linear(c: Any, xp=jnp) -> Any:
    """sRGB transfer curve inverse: c in [0, 1] -> linear light in [0, 1]."""
    return xp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: Any, xp=jnp) -> Any:
    c = xp.maximum(c, 0.0)
    return xp.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


# 8-bit input: the curve as a 256-entry table, computed once in float64.
_LINEAR_TABLE = _srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0, np).astype(np.float32)


def _lab_from_linear(rgb_linear: Any, xp) -> Any:
    r, g, b = rgb_linear[..., 0], rgb_linear[..., 1], rgb_linear[..., 2]

    def f(t):
        return xp.where(t > _EPSILON, xp.cbrt(t), _KAPPA * t + 16.0 / 116.0)

    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = XYZ_FROM_RGB
    fx = f((m00 * r + m01 * g + m02 * b) / D65_WHITE[0])
    fy = f((m10 * r + m11 * g + m12 * b) / D65_WHITE[1])
    fz = f((m20 * r + m21 * g + m22 * b) / D65_WHITE[2])
    return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def rgb_to_lab(rgb: Any) -> jnp.ndarray:
    """sRGB -> CIE Lab (D65), jnp, traceable.

    Args:
      rgb: (..., 3) uint8 in [0, 255], or floating point in [0, 1].

    Returns:
      float32 (..., 3): L in [0, 100], a and b in about [-86, 98] and [-108, 95].
    """
    rgb = jnp.asarray(rgb)
    if jnp.issubdtype(rgb.dtype, jnp.integer):
        linear = jnp.asarray(_LINEAR_TABLE)[rgb.astype(jnp.int32)]
    else:
        linear = _srgb_to_linear(rgb.astype(jnp.float32))
    return _lab_from_linear(linear, jnp).astype(jnp.float32)


def rgb_to_lab_numpy(rgb: np.ndarray) -> np.ndarray:
    """The same conversion in float64 numpy, for host-side work (deriving the ab bins)."""
    rgb = np.asarray(rgb)
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb / 255.0
    return _lab_from_linear(_srgb_to_linear(rgb.astype(np.float64), np), np)


def lab_to_rgb(lab: Any) -> jnp.ndarray:
    """CIE Lab (D65) -> sRGB float32 in [0, 1] (out-of-gamut colours clipped), jnp.

    Args:
      lab: (..., 3) float, L in [0, 100].
    """
    lab = jnp.asarray(lab, jnp.float32)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0

    def f_inv(t):
        return jnp.where(t > 0.2068966, t**3, (t - 16.0 / 116.0) / _KAPPA)

    x = f_inv(fx) * D65_WHITE[0]
    y = f_inv(fy) * D65_WHITE[1]
    z = f_inv(fz) * D65_WHITE[2]
    inverse = np.linalg.inv(np.asarray(XYZ_FROM_RGB, np.float64))
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = inverse.tolist()
    rgb = jnp.stack(
        [m00 * x + m01 * y + m02 * z, m10 * x + m11 * y + m12 * z, m20 * x + m21 * y + m22 * z],
        axis=-1,
    )
    return jnp.clip(_linear_to_srgb(rgb), 0.0, 1.0)


def quantize_8bit(lab: jnp.ndarray) -> jnp.ndarray:
    """Rounds Lab to the values OpenCV's 8-bit conversion can hold, in Lab units.

    L -> round(L * 255 / 100) * 100 / 255; a, b -> round(a + 128) - 128, clipped to [-128, 127].
    """
    lightness = jnp.round(jnp.clip(lab[..., :1] * (255.0 / 100.0), 0, 255)) * (100.0 / 255.0)
    ab = jnp.clip(jnp.round(lab[..., 1:] + 128.0), 0, 255) - 128.0
    return jnp.concatenate([lightness, ab], axis=-1)
