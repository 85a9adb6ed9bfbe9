"""Jigsaw permutation sets: greedy maximal-Hamming selection over all 9! tile orderings.

A permutation ``p`` (shape (9,), values 0..8) means: slot ``i`` of the shuffled puzzle receives
tile ``p[i]``. The class label of a puzzle is the row index of its permutation in the set.

Selection (Noroozi & Favaro 2016; Goyal et al. 2019 for the 2k/5k/10k sets):
  * candidates are all 9! = 362,880 permutations of range(9), in lexicographic order
    (the order of ``itertools.permutations(range(9))``);
  * row 0 is candidate ``np.random.default_rng(seed).integers(362880)``;
  * then, repeatedly, the unselected candidate with the largest mean normalised Hamming
    distance to the selected set is added ("max_avg"); "max_min" uses the smallest distance to
    the selected set instead. Ties go to the lowest candidate index.

The reference script recomputes the full (selected x candidates) distance matrix every step.
Here a running per-candidate sum (or min) of integer Hamming distances is updated with the
newest row only, so each step is one pass over the candidates. Comparing integer sums is the
same as comparing means of d/9 over the same number of selected rows, and it is exact. The
reference script's floating-point means of d/9 can order exact ties by rounding noise (from
row 9 on for seed 0, "max_avg"); exact scores make "ties go to the lowest index" hold as stated.

The greedy selection is prefix-stable: the first n rows of a set of size m > n (same method,
same seed) are the set of size n. The disk cache uses this to serve a smaller set from a larger
cached one.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssl_jax import paths

NUM_TILES = 9
NUM_CANDIDATES = math.factorial(NUM_TILES)  # 362,880
METHODS = ("max_avg", "max_min")

# Selected candidates get this score, so they never win an argmax again. It stays negative
# under every later update: a sum adds at most 9 per step, and a min keeps it.
_SELECTED = -(1 << 30)
_FILE_RE = re.compile(r"^perms_(max_avg|max_min)_(\d+)_seed(-?\d+)\.npy$")


def lexicographic_permutations(n: int = NUM_TILES) -> np.ndarray:
    """All permutations of range(n) in lexicographic order, as int8 (n!, n).

    Row r equals ``list(itertools.permutations(range(n)))[r]``, built with numpy (about 10 ms
    for n = 9 instead of about 150 ms through Python tuples).
    """
    perms = np.zeros((1, 0), np.int8)
    for m in range(1, n + 1):
        blocks = []
        for first in range(m):
            # Mapping perms of range(m - 1) through the sorted remaining values is monotone, so
            # each block stays in lexicographic order.
            rest = np.array([v for v in range(m) if v != first], np.int8)
            head = np.full((len(perms), 1), first, np.int8)
            blocks.append(np.concatenate([head, rest[perms]], axis=1))
        perms = np.concatenate(blocks, axis=0)
    return perms


def permutation_at(index: int, n: int = NUM_TILES) -> np.ndarray:
    """The permutation of range(n) at lexicographic ``index`` (0-based), as int32 (n,)."""
    if not 0 <= index < math.factorial(n):
        raise ValueError(f"permutation index {index} is outside [0, {math.factorial(n)}).")
    remaining = list(range(n))
    out = []
    for k in range(n - 1, -1, -1):
        digit, index = divmod(index, math.factorial(k))
        out.append(remaining.pop(digit))
    return np.array(out, np.int32)


def first_index(seed: int) -> int:
    """Lexicographic index of row 0 for ``seed``: ``default_rng(seed).integers(362880)``."""
    return int(np.random.default_rng(seed).integers(NUM_CANDIDATES))


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (number of differing positions) between rows of a and rows of b.

    a: int (m, L), b: int (n, L), values in [0, L). Returns int32 (m, n) in [0, L]; divide by L
    for the normalised distance. Counts matches with a one-hot matmul (exact in float32).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    length = a.shape[1]
    eye = np.eye(length, dtype=np.float32)
    onehot_a = eye[a].reshape(len(a), length * length)
    onehot_b = eye[b].reshape(len(b), length * length)
    matches = onehot_a @ onehot_b.T
    return (length - np.rint(matches)).astype(np.int32)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(
            f"Unknown permutation selection method {method!r}; allowed: {', '.join(METHODS)}. "
            "Set config.jigsaw.perm_method."
        )


def _check_num_perms(num_perms: int, num_candidates: int = NUM_CANDIDATES) -> None:
    if isinstance(num_perms, bool) or not isinstance(num_perms, int | np.integer):
        raise ValueError(
            f"Number of permutations must be an integer, got {num_perms!r}; allowed: integers "
            f"in [1, {num_candidates}]. Set config.jigsaw.num_perms."
        )
    if not 1 <= num_perms <= num_candidates:
        raise ValueError(
            f"Number of permutations {num_perms} is out of range; allowed: integers in "
            f"[1, {num_candidates}] (there are {num_candidates} candidates). "
            "Set config.jigsaw.num_perms."
        )


@functools.partial(jax.jit, static_argnames=("num_perms", "method"))
def _greedy_loop(
    candidates_t: jax.Array, first: jax.Array, num_perms: int, method: str
) -> jax.Array:
    """candidates_t: int8 (L, N), position-major so each position is one contiguous vector."""
    length, n = candidates_t.shape
    if method == "max_avg":
        init = jnp.zeros((n,), jnp.int32)
    else:
        init = jnp.full((n,), length + 1, jnp.int32)
    selected = jnp.zeros((num_perms,), jnp.int32).at[0].set(first)

    def step(i, carry):
        scores, selected = carry
        newest = selected[i - 1]
        row = lax.dynamic_index_in_dim(candidates_t, newest, axis=1, keepdims=False)
        # Written per position so XLA fuses compare, sum, update into one pass over N.
        dist = sum((candidates_t[k] != row[k]).astype(jnp.int32) for k in range(length))
        scores = scores + dist if method == "max_avg" else jnp.minimum(scores, dist)
        scores = scores.at[newest].set(_SELECTED)
        # argmax returns the first maximum: ties go to the lowest candidate index.
        selected = selected.at[i].set(jnp.argmax(scores).astype(jnp.int32))
        return scores, selected

    _, selected = lax.fori_loop(1, num_perms, step, (init, selected))
    return selected


def greedy_select(
    candidates: np.ndarray, num_perms: int, method: str = "max_avg", first: int = 0
) -> np.ndarray:
    """Greedy maximal-Hamming selection over an arbitrary candidate array.

    Args:
      candidates: int (N, L), rows distinct, values in [0, 128). The order of rows defines
        tie-breaking (lowest row wins).
      num_perms: rows to select, in [1, N].
      method: "max_avg" (largest mean distance to the selected set) or "max_min" (largest
        minimum distance).
      first: row index of the first selection.

    Returns:
      int32 (num_perms,): selected row indices into ``candidates``, in selection order.
    """
    _check_method(method)
    candidates = np.asarray(candidates)
    _check_num_perms(num_perms, len(candidates))
    if not 0 <= first < len(candidates):
        raise ValueError(f"first index {first} is outside [0, {len(candidates)}).")
    candidates_t = jnp.asarray(np.ascontiguousarray(candidates.T), jnp.int8)
    selected = _greedy_loop(candidates_t, jnp.int32(first), num_perms=int(num_perms), method=method)
    return np.asarray(selected)


def default_cache_dir() -> str:
    """$SSL_JAX_CACHE/permutations if SSL_JAX_CACHE is set (a folder or a gs:// URL), else
    ~/.cache/ssl_jax/permutations."""
    root = os.environ.get("SSL_JAX_CACHE") or os.path.join("~", ".cache", "ssl_jax")
    return paths.join(root if paths.is_url(root) else os.path.expanduser(root), "permutations")


def cache_file_name(num_perms: int, method: str, seed: int) -> str:
    return f"perms_{method}_{num_perms}_seed{seed}.npy"


def _valid_set(perms: np.ndarray, num_perms: int, seed: int) -> bool:
    """Whether a cached array can serve (num_perms, seed): shape, permutations, row 0."""
    if perms.ndim != 2 or perms.shape[1] != NUM_TILES or perms.shape[0] < num_perms:
        return False
    if not np.issubdtype(perms.dtype, np.integer):
        return False
    try:
        _check_rows(perms, "cache file")
    except ValueError:
        return False
    return bool(np.array_equal(perms[0], permutation_at(first_index(seed))))


def _read_cache(cache_dir: str, num_perms: int, method: str, seed: int) -> np.ndarray | None:
    """The smallest valid cached set of size >= num_perms, cut to num_perms rows (prefix)."""
    sizes = []
    names = paths.listdir(cache_dir) if paths.isdir(cache_dir) else []
    for name in names:
        match = _FILE_RE.match(name)
        if match and match.group(1) == method and int(match.group(3)) == seed:
            if int(match.group(2)) >= num_perms:
                sizes.append((int(match.group(2)), paths.join(cache_dir, name)))
    for size, path in sorted(sizes):
        try:
            perms = paths.load_npy(path)
        except (OSError, ValueError, EOFError) as e:
            logging.warning("Ignoring unreadable permutation cache %s: %s", path, e)
            continue
        if perms.shape[:1] != (size,) or not _valid_set(perms, num_perms, seed):
            logging.warning("Ignoring mismatched permutation cache %s; regenerating.", path)
            continue
        return perms[:num_perms].astype(np.int32)
    return None


def _write_cache(cache_dir: str, name: str, perms: np.ndarray) -> None:
    """Atomic on a local disk (a complete file is renamed over the name, so concurrent writers
    never leave a partial one); one object write in a bucket."""
    try:
        paths.save_npy(paths.join(cache_dir, name), perms)
    except OSError as e:
        # A read-only or full cache directory costs a regeneration next time, not a crash.
        logging.warning("Could not cache permutations in %s: %s", cache_dir, e)


def generate_permutations(
    num_perms: int, method: str = "max_avg", seed: int = 0, cache_dir: str | None = None
) -> np.ndarray:
    """The greedy Jigsaw permutation set of size num_perms (see the module docstring).

    Args:
      num_perms: set size |P|, in [1, 362880] (config.jigsaw.num_perms).
      method: "max_avg" or "max_min" (config.jigsaw.perm_method).
      seed: picks row 0: ``np.random.default_rng(seed).integers(362880)`` is its
        lexicographic index (config.jigsaw.perm_seed). Everything after row 0 is deterministic.
      cache_dir: directory of cached sets; None means ``default_cache_dir()``. A cached set of
        the same (method, seed) and at least num_perms rows is reused (prefix property);
        unreadable or inconsistent files are ignored and overwritten.

    Returns:
      int32 (num_perms, 9): 0-based tile indices; row r is class label r.

    Time: one pass over 9! candidates per row, about 0.6 ms per row on a 2-core CPU
    (10,000 rows in about 6 s).
    """
    _check_method(method)
    _check_num_perms(num_perms)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"Permutation seed {seed!r} is invalid; allowed: integers >= 0. "
            "Set config.jigsaw.perm_seed."
        )
    num_perms, seed = int(num_perms), int(seed)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    cached = _read_cache(cache_dir, num_perms, method, seed)
    if cached is not None:
        return cached
    candidates = lexicographic_permutations(NUM_TILES)
    selected = greedy_select(candidates, num_perms, method, first_index(seed))
    perms = candidates[selected].astype(np.int32)
    _write_cache(cache_dir, cache_file_name(num_perms, method, seed), perms)
    return perms


def _check_rows(perms: np.ndarray, source: str) -> None:
    """Raises unless every row is a permutation of 0..8 and no row repeats."""
    bad = np.flatnonzero(np.any(np.sort(perms, axis=1) != np.arange(NUM_TILES), axis=1))
    if len(bad):
        raise ValueError(
            f"{source}: row {bad[0]} ({perms[bad[0]].tolist()}) is not a permutation of "
            f"0..{NUM_TILES - 1} ({len(bad)} bad rows)."
        )
    _, first_rows, counts = np.unique(perms, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        row = perms[first_rows[np.argmax(counts > 1)]]
        repeats = np.flatnonzero(np.all(perms == row, axis=1))
        raise ValueError(
            f"{source}: rows {repeats.tolist()} repeat the permutation {row.tolist()}; "
            "labels would be ambiguous."
        )


def load_permutations(path: str) -> np.ndarray:
    """Loads a published permutation set (.npy), 1-based or 0-based.

    Noroozi's 100/701 sets are 1-based (values 1..9), FAIR's 2000/5000/10000 sets 0-based
    (values 0..8); the base is detected from the values. Local or gs:// paths.

    Returns:
      int32 (N, 9): 0-based tile indices.

    Raises:
      ValueError: the file is not an integer (N, 9) array, its values are neither 0..8 nor
        1..9, a row is not a permutation, or a row repeats.
    """
    try:
        perms = paths.load_npy(path)
    except ValueError as e:
        raise ValueError(f"{path}: not a readable .npy array ({e}).") from e
    if perms.ndim != 2 or perms.shape[1] != NUM_TILES or perms.shape[0] < 1:
        raise ValueError(
            f"{path}: expected a (N, {NUM_TILES}) permutation array, got shape {perms.shape}."
        )
    if np.issubdtype(perms.dtype, np.floating) and np.all(perms == np.round(perms)):
        perms = perms.astype(np.int64)  # some sets were saved as float arrays
    if not np.issubdtype(perms.dtype, np.integer):
        raise ValueError(f"{path}: expected integer tile indices, got dtype {perms.dtype}.")
    low, high = int(perms.min()), int(perms.max())
    if (low, high) == (1, NUM_TILES):
        perms = perms - 1
    elif (low, high) != (0, NUM_TILES - 1):
        raise ValueError(
            f"{path}: tile indices span [{low}, {high}]; expected 0..{NUM_TILES - 1} "
            f"(0-based) or 1..{NUM_TILES} (1-based)."
        )
    perms = perms.astype(np.int32)
    _check_rows(perms, path)
    return perms
