"""Colorization pretext task (Zhang et al. 2016, as benchmarked by Goyal et al. 2019).

Kernels: ``rgb_to_lab`` / ``lab_to_rgb`` (on device), ``ab_bins`` (the 313 quantised colours),
``soft_encode`` (K nearest bins with Gaussian weights), class rebalancing and the sparse loss.
The task (network, targets, loss) is ``ssl_jax.colorization.task``; commands are in
``python -m ssl_jax.colorization --help``.
"""

from ssl_jax.colorization.bins import NUM_BINS, ab_bins
from ssl_jax.colorization.encode import (
    colorization_loss,
    nearest_bin,
    rebalance_weights,
    smooth_priors,
    soft_encode,
    soft_encode_dense,
)
from ssl_jax.colorization.lab import lab_to_rgb, quantize_8bit, rgb_to_lab

__all__ = [
    "NUM_BINS",
    "ab_bins",
    "colorization_loss",
    "lab_to_rgb",
    "nearest_bin",
    "quantize_8bit",
    "rebalance_weights",
    "rgb_to_lab",
    "smooth_priors",
    "soft_encode",
    "soft_encode_dense",
]
