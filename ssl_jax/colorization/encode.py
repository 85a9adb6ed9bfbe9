"""Soft encoding of ab colours over the ab bins, class rebalancing, and the colorization loss.

The bins are Zhang et al.'s 313 (``ab_bins``, the default ``bins=None``) or any (Q, 2) set, such
as the ones estimated from the data for other bin sizes (``ssl_jax.colorization.data_bins``).
Targets stay sparse: every pixel carries the indices of its K nearest bins and their Gaussian
weights, and the loss gathers K log-probabilities per pixel instead of forming a (..., Q)
target. ``soft_encode_dense`` builds the dense target for the rare caller that wants it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.colorization.bins import NUM_BINS, ab_bins


def bin_array(bins: np.ndarray | None = None) -> np.ndarray:
    """float32 (Q, 2), read-only: ``bins``, or Zhang's 313 (``ab_bins()``) for None."""
    if bins is None:
        return ab_bins()
    bins = np.asarray(bins, np.float32)
    if bins.ndim != 2 or bins.shape[1] != 2 or bins.shape[0] < 1:
        raise ValueError(f"ab bins must be a (Q, 2) array, got shape {bins.shape}.")
    if bins.flags.writeable:
        bins = bins.copy()
        bins.setflags(write=False)
    return bins


@functools.lru_cache(maxsize=32)
def _bins_from_key(key: bytes) -> np.ndarray:
    bins = np.frombuffer(key, np.float32).reshape(-1, 2)
    return bins


def _bins_key(bins: np.ndarray | None) -> bytes | None:
    """A hashable stand-in for a bin set (a static argument of the jitted kernels)."""
    return None if bins is None else bin_array(bins).tobytes()


def _bins_of(key: bytes | None) -> np.ndarray:
    return ab_bins() if key is None else _bins_from_key(key)


def _squared_distances(ab: jnp.ndarray, bins: jnp.ndarray) -> jnp.ndarray:
    # Differences first, then squares: exact to float32 rounding, unlike |x|^2 - 2xc + |c|^2.
    return jnp.square(ab[..., None, 0] - bins[:, 0]) + jnp.square(ab[..., None, 1] - bins[:, 1])


# The K nearest bins of any point of a small ab cell are among the bins within r_K(centre) + the
# cell's diagonal of the cell's centre (triangle inequality), a list known in advance: for Zhang's
# bins at most 17 for K = 10 and 52 for K = 40 instead of 313. The table covers every ab value an
# sRGB colour or an 8-bit Lab value can take with room to spare.
CELL = 2.0
TABLE_LIMIT = 160.0  # the table covers [-160, 160)^2; values outside use the nearest edge cell
MAX_CANDIDATES = 128  # beyond this many candidates per cell, search all bins
_TABLE_ROWS = 4096  # cells per block while building a table (bounds its memory for large Q)


def candidate_table(k: int, bins: np.ndarray | None = None) -> np.ndarray | None:
    """int32 (cells, C): per ab cell (row-major over a and b), the candidate bins in increasing
    index order, padded with the index Q (a point far away); None where C would exceed
    MAX_CANDIDATES. ``bins``: (Q, 2), None for Zhang's 313."""
    return _candidate_table(k, _bins_key(bins))


@functools.lru_cache(maxsize=32)
def _candidate_table(k: int, key: bytes | None) -> np.ndarray | None:
    bins = _bins_of(key).astype(np.float64)
    num_bins = bins.shape[0]
    n = int(2 * TABLE_LIMIT / CELL)
    axis = -TABLE_LIMIT + CELL * (np.arange(n) + 0.5)
    centres = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    blocks = []
    for start in range(0, len(centres), _TABLE_ROWS):
        block = centres[start : start + _TABLE_ROWS]
        distance = np.sqrt(np.square(block[:, None, :] - bins[None]).sum(-1))  # (cells, Q)
        reach = np.partition(distance, k - 1, axis=1)[:, k - 1] + CELL * np.sqrt(2.0) + 1e-3
        blocks.append(distance <= reach[:, None])
        if int(blocks[-1].sum(1).max()) > MAX_CANDIDATES:
            return None
    inside = np.concatenate(blocks)
    width = int(inside.sum(1).max())
    order = np.argsort(~inside, axis=1, kind="stable")[:, :width]  # candidates first, in order
    table = np.where(np.take_along_axis(inside, order, 1), order, num_bins).astype(np.int32)
    table.setflags(write=False)
    return table


# XLA:CPU runs top_k as one single-threaded call over all rows; as CPU_TOP_K_CHUNKS independent
# calls it spreads over the cores (measured on 2 cores: 32 x 56 x 56 rows of 17 candidates take
# 14 ms instead of 20 ms; up to 8 chunks run one after another). Accelerators take one call.
CPU_TOP_K_CHUNKS = 16
CPU_TOP_K_MIN_ROWS = 256  # per chunk


def _top_k_rows(x: jnp.ndarray, k: int):
    """lax.top_k over the last axis, as CPU_TOP_K_CHUNKS calls on CPU for large inputs."""
    rows = int(np.prod(x.shape[:-1]))
    if rows < CPU_TOP_K_CHUNKS * CPU_TOP_K_MIN_ROWS:
        return jax.lax.top_k(x, k)

    def chunked(x):
        flat = x.reshape(rows, x.shape[-1])
        parts = [jax.lax.top_k(part, k) for part in jnp.array_split(flat, CPU_TOP_K_CHUNKS)]
        return tuple(
            jnp.concatenate([p[i] for p in parts]).reshape(*x.shape[:-1], k) for i in range(2)
        )

    return jax.lax.platform_dependent(x, cpu=chunked, default=lambda x: tuple(jax.lax.top_k(x, k)))


def soft_encode(ab: jnp.ndarray, k: int = 10, sigma: float = 5.0, bins: np.ndarray | None = None):
    """Each ab value's K nearest bins and their normalised Gaussian weights.

    Args:
      ab: float (..., 2), a and b in Lab units (exact for |a|, |b| < 160, which holds for every
        sRGB colour and every 8-bit Lab value).
      k: neighbours per value, 1 to Q. Ties in distance go to the lower bin index.
      sigma: the Gaussian's width in ab units; weights are exp(-d^2 / (2 sigma^2)), normalised.
      bins: float (Q, 2) bin coordinates; None for Zhang's 313.

    Returns:
      indices: int32 (..., k), nearest first.
      weights: float32 (..., k), each row sums to 1.
    """
    num_bins = bin_array(bins).shape[0]
    if not 1 <= k <= num_bins:
        raise ValueError(
            f"k={k} neighbours is outside [1, {num_bins}] (the number of ab bins); set "
            "config.colorization.k."
        )
    return _soft_encode(ab, k=k, sigma=sigma, key=_bins_key(bins))


@functools.partial(jax.jit, static_argnames=("k", "key"))
def _soft_encode(ab: jnp.ndarray, k: int, sigma: float, key: bytes | None):
    bins = _bins_of(key)
    ab = jnp.asarray(ab, jnp.float32)
    table = _candidate_table(k, key)
    if table is None:
        neg_d2, indices = _top_k_rows(-_squared_distances(ab, jnp.asarray(bins)), k)
    else:
        n = int(2 * TABLE_LIMIT / CELL)
        cell = jnp.clip(jnp.floor((ab + TABLE_LIMIT) / CELL).astype(jnp.int32), 0, n - 1)
        candidates = jnp.asarray(table)[cell[..., 0] * n + cell[..., 1]]  # (..., C)
        padded = jnp.asarray(np.concatenate([bins, [[1e4, 1e4]]]).astype(np.float32))
        centres = padded[candidates]  # (..., C, 2)
        d2 = jnp.square(ab[..., None, 0] - centres[..., 0]) + jnp.square(
            ab[..., None, 1] - centres[..., 1]
        )
        neg_d2, position = _top_k_rows(-d2, k)  # candidates ascend, so ties keep the lower bin
        indices = jnp.take_along_axis(candidates, position, axis=-1)
    weights = jax.nn.softmax(neg_d2 / (2.0 * sigma**2), axis=-1)
    # The barrier keeps XLA from folding a caller's use of the indices (e.g. gathering rebalancing
    # weights) into the top-k, which then falls back to a full sort: 15x slower on CPU.
    return jax.lax.optimization_barrier((indices.astype(jnp.int32), weights))


def soft_encode_dense(
    ab: jnp.ndarray, k: int = 10, sigma: float = 5.0, bins: np.ndarray | None = None
) -> jnp.ndarray:
    """The dense soft target, float32 (..., Q); for analysis and references, not the loss."""
    indices, weights = soft_encode(ab, k=k, sigma=sigma, bins=bins)
    one_hot = jax.nn.one_hot(indices, bin_array(bins).shape[0], dtype=jnp.float32)  # (..., k, Q)
    return jnp.einsum("...k,...kq->...q", weights, one_hot)


def nearest_bin(ab: jnp.ndarray, bins: np.ndarray | None = None) -> jnp.ndarray:
    """int32 (...,): the index of the nearest bin (the argmax of the soft target)."""
    distances = _squared_distances(jnp.asarray(ab, jnp.float32), jnp.asarray(bin_array(bins)))
    return jnp.argmin(distances, axis=-1)


def is_bin_distribution(values: np.ndarray, num_bins: int = NUM_BINS) -> bool:
    """Whether ``values`` can be normalised into bin probabilities: (num_bins,), finite,
    non-negative, with a positive sum."""
    values = np.asarray(values)
    return bool(
        values.shape == (num_bins,)
        and np.isfinite(values).all()
        and (values >= 0).all()
        and values.sum() > 0
    )


def smooth_priors(
    counts: np.ndarray, sigma: float = 5.0, bins: np.ndarray | None = None
) -> np.ndarray:
    """Bin frequencies from counts, smoothed with a Gaussian over the ab plane (Zhang et al.).

    Args:
      counts: (Q,) non-negative pixel counts per bin.
      sigma: the smoothing Gaussian's width in ab units; 0 for no smoothing.
      bins: (Q, 2) bin coordinates; None for Zhang's 313.

    Returns:
      float64 (Q,) summing to 1.
    """
    counts = np.asarray(counts, np.float64)
    num_bins = bin_array(bins).shape[0]
    if not is_bin_distribution(counts, num_bins):
        raise ValueError(
            f"Bin counts must be {num_bins} non-negative numbers with a positive sum; got shape "
            f"{counts.shape}, sum {counts.sum()}."
        )
    probs = counts / counts.sum()
    if sigma > 0:
        bins = bin_array(bins).astype(np.float64)
        d2 = np.square(bins[:, None, :] - bins[None, :, :]).sum(-1)
        kernel = np.exp(-d2 / (2.0 * sigma**2))
        probs = kernel @ probs / kernel.sum(1)  # each bin: the Gaussian-weighted mean around it
        probs /= probs.sum()
    return probs


def rebalance_weights(
    priors: np.ndarray, gamma: float = 0.5, alpha: float = 1.0, num_bins: int = NUM_BINS
) -> np.ndarray:
    """Zhang et al.'s class-rebalancing weight per bin.

    w = ((1 - gamma) * prior + gamma / Q)^-alpha, renormalised so that sum(prior * w) = 1, i.e.
    the expected weight of a pixel drawn from the priors is 1.

    Args:
      priors: (Q,) bin frequencies, Q = ``num_bins`` (313 for Zhang's bins).

    Returns:
      float32 (Q,).
    """
    priors = np.asarray(priors, np.float64)
    if not is_bin_distribution(priors, num_bins):
        raise ValueError(
            f"priors must be {num_bins} finite non-negative numbers with a positive sum, got "
            f"shape {priors.shape}, sum {priors.sum()}; "
            "estimate them with `python -m ssl_jax.colorization priors`."
        )
    priors = priors / priors.sum()
    weights = ((1.0 - gamma) * priors + gamma / num_bins) ** -alpha
    return (weights / np.sum(priors * weights)).astype(np.float32)


def soft_cross_entropy(logits: jnp.ndarray, indices: jnp.ndarray, weights: jnp.ndarray):
    """Per-pixel cross-entropy against sparse soft targets, and whether the nearest bin wins.

    Args:
      logits: float (..., Q).
      indices, weights: (..., k) from ``soft_encode``, nearest bin first.

    Returns:
      ce: float32 (...), -sum_k weights_k * log softmax(logits)[indices_k].
      nearest_top: bool (...), the nearest bin (``indices[..., 0]``) has the largest logit.
    """
    logits = logits.astype(jnp.float32)
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    log_norm = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    # One gather of K values per pixel, from the logits themselves (gathering from logits - max
    # makes XLA write that array out); no argmax (a variadic reduce, slow on XLA:CPU). Indices
    # are clamped to [0, Q), not NaN-filled out of range: the bounds test and select of the
    # default mode made the gather 4x slower on XLA:CPU beside soft_encode in one program.
    picked = jnp.take_along_axis(logits, indices, axis=-1, mode="clip")  # (..., k)
    ce = log_norm - jnp.sum(weights * picked, axis=-1)
    return ce, picked[..., 0] >= top


def colorization_loss(
    logits: jnp.ndarray,
    indices: jnp.ndarray,
    weights: jnp.ndarray,
    pixel_weights: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
):
    """Per-pixel multinomial cross-entropy against sparse soft targets, averaged.

    Args:
      logits: float (..., Q).
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
