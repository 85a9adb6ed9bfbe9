"""sRGB <-> CIE Lab (D65, 2-degree observer), in jnp for use inside a jitted step.

Two conversions of 8-bit sRGB, chosen by ``config.colorization.lab``:

- "opencv" (default, the paper's pipeline): ``rgb_to_lab_8bit`` gives exactly the uint8 codes of
  OpenCV's ``cvtColor(bgr, COLOR_BGR2LAB)`` (L * 255 / 100, a + 128, b + 128) on every one of the
  2^24 colours. OpenCV's 8-bit path is fixed-point: a 256-entry table of linear light in 1/2040
  steps, an XYZ matrix divided by its white point (0.950456, 1, 1.088754) and rounded to 1/4096,
  a 3072-entry table of f(t) in 1/32768 (its cube root is Turkowski's rational approximation in
  float64 with the mantissa cut to float32, then rounded half to even), and integer rounding
  shifts. We rebuild the two tables from those definitions at import and run the integer
  arithmetic in jnp (int32 adds, multiplies, shifts and two gathers).
- "float": ``rgb_to_lab``, the CIE formulas in float32 with the constants of skimage.color (the
  sRGB transfer curve, the IEC 61966-2-1 matrix, the D65 white (0.95047, 1, 1.08883), the linear
  segment below (6/29)^3); ``quantize_8bit`` rounds it to 8-bit codes. Those codes differ from
  OpenCV's on 4,294,182 of the 2^24 colours (L on 13.6%, a on 9.4%, b on 5.6% of them), by at
  most 2, 3 and 2 (tests/test_lab_opencv.py).

The 3x3 matrix of the float path is applied as multiply-adds, not a matmul, so TPU/GPU matmul
precision settings cannot lower its accuracy.
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


# ---------------------------------------------------------------------------------------------
# OpenCV's 8-bit conversion, bit for bit.

LAB_CONVERSIONS = ("opencv", "float")

OPENCV_WHITE = (0.950456, 1.0, 1.088754)  # the white point of OpenCV's Lab (its matrix rows' sums)
_GAMMA_BITS = 3  # linear light in 1/(255 * 8) steps
_XYZ_BITS = 12  # matrix coefficients in 1/4096
_F_BITS = _XYZ_BITS + _GAMMA_BITS  # f(t) in 1/32768
_F_TABLE_SIZE = 256 * 3 // 2 << _GAMMA_BITS  # t in [0, 1.5): 3072 entries
# L = 116 f(Y) - 16 and a, b = 500 (fX - fY), 200 (fY - fZ) on the 8-bit scales, as integers.
_L_SCALE = (116 * 255 + 50) // 100
_L_OFFSET = -((16 * 255 * (1 << _F_BITS) + 50) // 100)
_AB_OFFSET = 128 << _F_BITS

# Turkowski's quartic rational approximation of the cube root on [1/8, 1) ("Computing the cube
# root", Apple Technical Report KT-32, 1991), the cube root of OpenCV's softfloat.
_CBRT_NUM = (45.2548339756803022511987494, 192.2798368355061050458134625,
             119.1654824285581628956914143, 13.43250139086239872172837314,
             0.1636161226585754240958355063)  # fmt: skip
_CBRT_DEN = (14.80884093219134573786480845, 151.9714051044435648658557668,
             168.5254414101568283957668343, 33.9905941350215598754191872, 1.0)  # fmt: skip


def _cbrt_float32_truncated(x: np.ndarray) -> np.ndarray:
    """Cube roots of positive float32 ``x`` as OpenCV's softfloat computes them: x = m * 2^(3q)
    with m in [1/8, 1), the rational approximation of cbrt(m) in float64 (each operation rounded,
    no fused multiply-add), its mantissa cut (not rounded) to float32, times 2^q."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.int64)
    exponent = ((bits >> 23) & 0xFF) - 127
    shift = np.fmod(exponent, 3)  # C's remainder: the sign of the dividend
    shift = np.where(shift >= 0, shift - 3, shift)  # -3, -2 or -1: m in [1/8, 1)
    m = (1.0 + (bits & 0x7FFFFF) / 2.0**23) * np.exp2(shift.astype(np.float64))
    num = np.zeros_like(m)
    for c in _CBRT_NUM:
        num = num * m + c
    den = np.zeros_like(m)
    for c in _CBRT_DEN:
        den = den * m + c
    root = num / den  # in [1/2, 1): its float64 mantissa, cut to 23 bits, is the result's
    mantissa = (root.view(np.uint64) & np.uint64((1 << 52) - 1)) >> np.uint64(29)
    out_exponent = (exponent - shift) // 3 - 1 + 127
    out = (out_exponent.astype(np.uint64) << np.uint64(23)) | mantissa
    return out.astype(np.uint32).view(np.float32)


def _opencv_gamma_table() -> np.ndarray:
    """int32 (256,): linear light of each 8-bit sRGB level in 1/2040 steps, as OpenCV rounds it
    (the level / 255 in float32, the curve in float64, the product in float32, half to even)."""
    level = (np.arange(256, dtype=np.float32) / np.float32(255)).astype(np.float64)
    linear = np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)
    scaled = linear.astype(np.float32) * np.float32(255 << _GAMMA_BITS)
    return np.rint(scaled).astype(np.int32)


def _opencv_f_table() -> np.ndarray:
    """int32 (3072,): f(t) = cbrt(t), or 841/108 t + 16/116 below 216/24389, of t = i / 2040 in
    float32, times 32768, rounded half to even."""
    f32 = np.float32
    t = f32(1) / f32(255 << _GAMMA_BITS) * np.arange(_F_TABLE_SIZE, dtype=np.float32)
    threshold, slope, offset = f32(216) / f32(24389), f32(841) / f32(108), f32(16) / f32(116)
    linear = (t.astype(np.float64) * slope + offset).astype(np.float32)  # one rounding, as fma
    root = _cbrt_float32_truncated(np.maximum(t, threshold))
    f = np.where(t < threshold, linear, root)
    return np.rint(f * f32(1 << _F_BITS)).astype(np.int32)


def _opencv_matrix() -> np.ndarray:
    """int32 (3, 3): XYZ_FROM_RGB with each row divided by OpenCV's white, in 1/4096."""
    matrix = np.asarray(XYZ_FROM_RGB, np.float64) * (1 << _XYZ_BITS)
    return np.rint(matrix / np.asarray(OPENCV_WHITE)[:, None]).astype(np.int32)


_GAMMA_TABLE = _opencv_gamma_table()
_F_TABLE = _opencv_f_table()
_MATRIX = _opencv_matrix()


def _descale(x: jnp.ndarray, bits: int) -> jnp.ndarray:
    """x / 2^bits rounded half up (arithmetic shift)."""
    return jnp.right_shift(x + (1 << (bits - 1)), bits)


def rgb_to_lab_8bit(rgb: Any) -> jnp.ndarray:
    """8-bit sRGB -> OpenCV's 8-bit Lab codes, jnp, traceable; equal to
    ``cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)`` on every colour.

    Args:
      rgb: (..., 3) uint8 (or integers in [0, 255]).

    Returns:
      uint8 (..., 3): round(L * 255 / 100), a + 128, b + 128, each as OpenCV rounds them.
    """
    rgb = jnp.asarray(rgb)
    if not jnp.issubdtype(rgb.dtype, jnp.integer):
        raise TypeError(f"rgb_to_lab_8bit takes 8-bit integer RGB, got {rgb.dtype}.")
    linear = jnp.asarray(_GAMMA_TABLE)[rgb.astype(jnp.int32)]
    r, g, b = linear[..., 0], linear[..., 1], linear[..., 2]
    table = jnp.asarray(_F_TABLE)
    fx, fy, fz = (
        table[_descale(int(m0) * r + int(m1) * g + int(m2) * b, _XYZ_BITS)]
        for m0, m1, m2 in _MATRIX.tolist()
    )
    lightness = _descale(_L_SCALE * fy + _L_OFFSET, _F_BITS)
    a = _descale(500 * (fx - fy) + _AB_OFFSET, _F_BITS)
    b = _descale(200 * (fy - fz) + _AB_OFFSET, _F_BITS)
    return jnp.clip(jnp.stack([lightness, a, b], axis=-1), 0, 255).astype(jnp.uint8)


def lab_from_8bit(codes: Any) -> jnp.ndarray:
    """OpenCV's 8-bit Lab codes -> Lab units, float32 (..., 3): L = code * 100 / 255 in
    [0, 100], a and b = code - 128 in [-128, 127]."""
    codes = jnp.asarray(codes).astype(jnp.float32)
    return jnp.concatenate([codes[..., :1] * (100.0 / 255.0), codes[..., 1:] - 128.0], axis=-1)


def image_lab(rgb: Any, conversion: str = "opencv", quantize: bool = True) -> jnp.ndarray:
    """Lab of 8-bit sRGB images as the Colorization task sees it, float32 (..., 3) in Lab units.

    Args:
      rgb: (..., 3) uint8.
      conversion: "opencv" (OpenCV's 8-bit codes, exactly) or "float" (``rgb_to_lab``).
      quantize: with "float", round to 8-bit codes (``quantize_8bit``); "opencv" always is.
    """
    if conversion == "opencv":
        return lab_from_8bit(rgb_to_lab_8bit(rgb))
    if conversion != "float":
        raise ValueError(f"conversion={conversion!r}; allowed: {list(LAB_CONVERSIONS)}.")
    lab = rgb_to_lab(rgb)
    return quantize_8bit(lab) if quantize else lab
