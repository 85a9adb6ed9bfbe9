"""Colorization pretext task (Zhang et al. 2016, as benchmarked by Goyal et al. 2019).

Kernels: ``rgb_to_lab_8bit`` (OpenCV's 8-bit Lab, exactly), ``rgb_to_lab`` / ``lab_to_rgb`` (float,
on device), ``ab_bins`` (Zhang's 313 quantised colours; FAIR's bins found in the data are
``ssl_jax.colorization.data_bins``), ``soft_encode`` (K nearest bins with Gaussian weights), class
rebalancing and the sparse loss.
The task (network, targets, loss) is ``ssl_jax.colorization.task``; commands are in
``python -m ssl_jax.colorization --help``.
"""

from ssl_jax.colorization.bins import BIN_SIZES, NUM_BINS, ab_bins
from ssl_jax.colorization.encode import (
    colorization_loss,
    nearest_bin,
    rebalance_weights,
    smooth_priors,
    soft_encode,
    soft_encode_dense,
)
from ssl_jax.colorization.lab import (
    image_lab,
    lab_from_8bit,
    lab_to_rgb,
    quantize_8bit,
    rgb_to_lab,
    rgb_to_lab_8bit,
)

__all__ = [
    "BIN_SIZES",
    "NUM_BINS",
    "ab_bins",
    "colorization_loss",
    "image_lab",
    "lab_from_8bit",
    "lab_to_rgb",
    "nearest_bin",
    "quantize_8bit",
    "rebalance_weights",
    "rgb_to_lab",
    "rgb_to_lab_8bit",
    "smooth_priors",
    "soft_encode",
    "soft_encode_dense",
]
