"""Soft encoding of ab colours over the 313 bins, class rebalancing, and the colorization loss.

Targets stay sparse: every pixel carries the indices of its K nearest bins and their Gaussian
weights, and the loss gathers K log-probabilities per pixel instead of forming a (..., 313)
target. ``soft_encode_dense`` builds the dense target for the rare caller that wants it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.colorization.bins import NUM_BINS, ab_bins


def _squared_distances(ab: jnp.ndarray, bins: jnp.ndarray) -> jnp.ndarray:
    # Differences first, then squares: exact to float32 rounding, unlike |x|^2 - 2xc + |c|^2.
    return jnp.square(ab[..., None, 0] - bins[:, 0]) + jnp.square(ab[..., None, 1] - bins[:, 1])


@functools.partial(jax.jit, static_argnames=("k",))
def soft_encode(ab: jnp.ndarray, k: int = 10, sigma: float = 5.0):
    """Each ab value's K nearest bins and their normalised Gaussian weights.

    Args:
      ab: float (..., 2), a and b in Lab units.
      k: neighbours per value, 1 to 313. Ties in distance go to the lower bin index.
      sigma: the Gaussian's width in ab units; weights are exp(-d^2 / (2 sigma^2)), normalised.

    Returns:
      indices: int32 (..., k), nearest first.
      weights: float32 (..., k), each row sums to 1.
    """
    if not 1 <= k <= NUM_BINS:
        raise ValueError(f"k={k} neighbours is outside [1, {NUM_BINS}]; set config.colorization.k.")
    ab = jnp.asarray(ab, jnp.float32)
    bins = jnp.asarray(ab_bins())
    neg_d2, indices = jax.lax.top_k(-_squared_distances(ab, bins), k)
    weights = jax.nn.softmax(neg_d2 / (2.0 * sigma**2), axis=-1)
    # The barrier keeps XLA from folding a caller's use of the indices (e.g. gathering rebalancing
    # weights) into the top-k, which then falls back to a full sort of the 313 distances: 15x
    # slower on CPU.
    return jax.lax.optimization_barrier((indices.astype(jnp.int32), weights))


def soft_encode_dense(ab: jnp.ndarray, k: int = 10, sigma: float = 5.0) -> jnp.ndarray:
    """The dense soft target, float32 (..., 313); for analysis and references, not the loss."""
    indices, weights = soft_encode(ab, k=k, sigma=sigma)
    one_hot = jax.nn.one_hot(indices, NUM_BINS, dtype=jnp.float32)  # (..., k, 313)
    return jnp.einsum("...k,...kq->...q", weights, one_hot)


def nearest_bin(ab: jnp.ndarray) -> jnp.ndarray:
    """int32 (...,): the index of the nearest bin (the argmax of the soft target)."""
    return jnp.argmin(_squared_distances(jnp.asarray(ab, jnp.float32), ab_bins()), axis=-1)


def smooth_priors(counts: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Bin frequencies from counts, smoothed with a Gaussian over the ab plane (Zhang et al.).

    Args:
      counts: (313,) non-negative pixel counts per bin.
      sigma: the smoothing Gaussian's width in ab units; 0 for no smoothing.

    Returns:
      float64 (313,) summing to 1.
    """
    counts = np.asarray(counts, np.float64)
    if (
        counts.shape != (NUM_BINS,)
        or not np.isfinite(counts).all()
        or (counts < 0).any()
        or counts.sum() <= 0
    ):
        raise ValueError(
            f"Bin counts must be {NUM_BINS} non-negative numbers with a positive sum; got shape "
            f"{counts.shape}, sum {counts.sum()}."
        )
    probs = counts / counts.sum()
    if sigma > 0:
        bins = ab_bins().astype(np.float64)
        d2 = np.square(bins[:, None, :] - bins[None, :, :]).sum(-1)
        kernel = np.exp(-d2 / (2.0 * sigma**2))
        probs = kernel @ probs / kernel.sum(1)  # each bin: the Gaussian-weighted mean around it
        probs /= probs.sum()
    return probs


def rebalance_weights(priors: np.ndarray, gamma: float = 0.5, alpha: float = 1.0) -> np.ndarray:
    """Zhang et al.'s class-rebalancing weight per bin.

    w = ((1 - gamma) * prior + gamma / Q)^-alpha, renormalised so that sum(prior * w) = 1, i.e.
    the expected weight of a pixel drawn from the priors is 1.

    Returns:
      float32 (313,).
    """
    priors = np.asarray(priors, np.float64)
    if (
        priors.shape != (NUM_BINS,)
        or not np.isfinite(priors).all()
        or (priors < 0).any()
        or priors.sum() <= 0
    ):
        raise ValueError(
            f"priors must be {NUM_BINS} finite non-negative numbers with a positive sum, got "
            f"shape {priors.shape}, sum {priors.sum()}; "
            "estimate them with `python -m ssl_jax.colorization priors`."
        )
    priors = priors / priors.sum()
    weights = ((1.0 - gamma) * priors + gamma / NUM_BINS) ** -alpha
    return (weights / np.sum(priors * weights)).astype(np.float32)


def soft_cross_entropy(logits: jnp.ndarray, indices: jnp.ndarray, weights: jnp.ndarray):
    """Per-pixel cross-entropy against sparse soft targets, and whether the nearest bin wins.

    Args:
      logits: float (..., 313).
      indices, weights: (..., k) from ``soft_encode``, nearest bin first.

    Returns:
      ce: float32 (...), -sum_k weights_k * log softmax(logits)[indices_k].
      nearest_top: bool (...), the nearest bin (``indices[..., 0]``) has the largest logit.
    """
    logits = logits.astype(jnp.float32)
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    log_norm = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
    # One gather of K values per pixel; the max comes from the same pass. (A second gather or an
    # argmax over the logits costs more than the whole loss on XLA:CPU.)
    picked = jnp.take_along_axis(shifted, indices, axis=-1)  # (..., k)
    ce = log_norm - jnp.sum(weights * picked, axis=-1)
    return ce, picked[..., 0] >= 0.0


def colorization_loss(
    logits: jnp.ndarray,
    indices: jnp.ndarray,
    weights: jnp.ndarray,
    pixel_weights: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
):
    """Per-pixel multinomial cross-entropy against sparse soft targets, averaged.

    Args:
      logits: float (..., 313).
      indices, weights: (..., k) from ``soft_encode``.
      pixel_weights: float (...) rebalancing weight per pixel, or None for 1.
      mask: (...) bool or 0/1, pixels that count (grayscale images are masked out), or None.

    Returns:
      (loss, valid): the weighted cross-entropy summed over valid pixels divided by their number,
      and that number (float32). A batch with no valid pixel gives loss 0.
    """
    per_pixel, _ = soft_cross_entropy(logits, indices, weights)
    return masked_mean(per_pixel, pixel_weights, mask)


def masked_mean(per_pixel: jnp.ndarray, pixel_weights=None, mask=None):
    """(sum of per_pixel * pixel_weights over mask / mask count, mask count)."""
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights
    valid = jnp.ones(per_pixel.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    count = jnp.sum(valid)
    return jnp.sum(per_pixel * valid) / jnp.maximum(count, 1.0), count
