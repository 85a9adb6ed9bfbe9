"""The quantised ab colours: Zhang et al.'s 313 from the sRGB gamut, or cells found in the data.

Bin size 10 (the default, ``config.colorization.bin_size``) is Zhang et al.'s set. The ab plane
is gridded with step 10 over [-110, 110]^2 (23 x 23 centres). A centre is kept when the +-10 box
around it touches the convex hull of the ab projection of the sRGB gamut. The hull is the
projection of the surface of the RGB cube (every interior colour projects inside it); a 9-level
sampling of the faces already gives the same 313 centres as the full 256-level one, which we use.
The result equals Zhang et al.'s pts_in_hull.npy, in its order (a-major, then b).

Bin sizes 5, 15 and 20 follow FAIR's generate_colorization_bins_priors.py: a 2-D histogram of the
8-bit ab (code - 128) of the pretraining images over the edges ``arange(-128, 128, size)`` in a
and in b, with numpy's histogram2d conventions (cells [e_i, e_i+1), the last one closed, values
beyond the last edge dropped: a, b > 122 for size 10, > 123 for 5, > 112 for 20); the bins are
the cells that hold at least one pixel, each listed by its lower edges (a_i, b_j), and their
priors the cells' pixel frequencies (unsmoothed). FAIR's script saves those lower edges as the
bin file (pts_in_hull_..._bin<size>.npy, the file Zhang's soft encoding reads its bin centres
from; FAIR's training code is not public), so our soft encoding and annealed mean use them as the
bins' coordinates too, not the cell centres. The estimation from the data is
``ssl_jax.colorization.data_bins``; the grid arithmetic is here.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from scipy.spatial import ConvexHull

from ssl_jax.colorization.lab import rgb_to_lab_numpy

NUM_BINS = 313
GRID_STEP = 10.0
GRID_LIMIT = 110.0
ZHANG_BIN_SIZE = 10  # config.colorization.bin_size of Zhang's 313 gamut bins
BIN_SIZES = (5, 10, 15, 20)  # FAIR's release: 10 (Zhang's) and data bins of 5, 15, 20


def _gamut_surface(levels: int = 256) -> np.ndarray:
    """RGB colours on the six faces of the unit cube, (6 * levels^2, 3) float64."""
    v = np.linspace(0.0, 1.0, levels)
    face = np.stack(np.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)
    return np.concatenate(
        [np.insert(face, axis, value, axis=1) for axis in range(3) for value in (0.0, 1.0)]
    )


def _boxes_touch_polygon(centres: np.ndarray, half: float, polygon: np.ndarray) -> np.ndarray:
    """Which axis-aligned boxes [c - half, c + half]^2 intersect a convex polygon (closed sets).

    Separating-axis test: two convex sets are disjoint iff their projections are disjoint on one
    of the box axes or the polygon's edge normals.
    """
    edges = np.roll(polygon, -1, axis=0) - polygon
    axes = np.concatenate([np.stack([edges[:, 1], -edges[:, 0]], 1), np.eye(2)])  # (E + 2, 2)
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float64) * half
    poly_proj = polygon @ axes.T  # (V, E + 2)
    box_proj = (centres[:, None, :] + corners[None]) @ axes.T  # (N, 4, E + 2)
    separated = (poly_proj.max(0) < box_proj.min(1)) | (box_proj.max(1) < poly_proj.min(0))
    return ~separated.any(axis=1)


@functools.lru_cache(maxsize=1)
def _ab_bins() -> np.ndarray:
    ab = rgb_to_lab_numpy(_gamut_surface())[:, 1:]
    hull = ab[ConvexHull(ab).vertices]
    grid = np.arange(-GRID_LIMIT, GRID_LIMIT + 1, GRID_STEP)
    centres = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    bins = centres[_boxes_touch_polygon(centres, GRID_STEP, hull)].astype(np.float32)
    if bins.shape[0] != NUM_BINS:  # a guard on the derivation, not on user input
        raise AssertionError(f"derived {bins.shape[0]} ab bins instead of {NUM_BINS}")
    bins.setflags(write=False)
    return bins


def ab_bins() -> np.ndarray:
    """The 313 ab bin centres, float32 (313, 2), read-only; in pts_in_hull.npy's order."""
    return _ab_bins()


# ---------------------------------------------------------------------------------------------
# Bins found in the data (FAIR's generate_colorization_bins_priors.py)


def histogram_edges(size: int) -> np.ndarray:
    """int64: FAIR's histogram edges in a and in b, ``arange(-128, 128, size)``."""
    return np.arange(-128, 128, size)


def grid_cells(size: int) -> int:
    """The number of histogram cells, the most data bins a bin size can give."""
    return (len(histogram_edges(size)) - 1) ** 2


def ab_cells(ab: jnp.ndarray, size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Histogram cells of ab values, as numpy's histogram2d over ``histogram_edges(size)``.

    Args:
      ab: float or integer (..., 2), a and b in Lab units (8-bit codes - 128 in [-128, 127]).

    Returns:
      (cell int32 (...,): a_cell * n + b_cell over n = len(edges) - 1 cells per axis;
       inside bool (...,): False for values beyond the edges, which histogram2d drops).
    """
    edges = histogram_edges(size)
    n = len(edges) - 1
    ab = jnp.asarray(ab, jnp.float32)
    inside = jnp.all((ab >= edges[0]) & (ab <= edges[-1]), axis=-1)
    # Cells [e_i, e_i+1); the last one is closed, so a value on the last edge counts in it.
    index = jnp.clip(jnp.floor((ab - edges[0]) / size).astype(jnp.int32), 0, n - 1)
    return index[..., 0] * n + index[..., 1], inside


def bins_from_counts(counts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """FAIR's bins and priors from the cell counts of ``ab_cells``.

    Args:
      counts: (n * n,) pixel counts per cell (a-major).

    Returns:
      (bins float32 (Q, 2): the lower edges (a, b) of the cells with pixels, a-major then b;
       priors float64 (Q,): their pixel frequencies, summing to 1).
    """
    edges = histogram_edges(size)
    n = len(edges) - 1
    counts = np.asarray(counts, np.float64).reshape(n, n)
    rows, cols = np.nonzero(counts > 0)
    bins = np.stack([edges[rows], edges[cols]], axis=1).astype(np.float32)
    priors = counts[rows, cols] / counts.sum()
    return bins, priors


def check_data_bins(bins: np.ndarray, size: int) -> str | None:
    """Why ``bins`` cannot be a data-bin set of this size (None if it can): (Q, 2), distinct
    lower edges of the histogram cells, a-major then b."""
    bins = np.asarray(bins)
    if bins.ndim != 2 or bins.shape[1] != 2 or not 1 <= bins.shape[0] <= grid_cells(size):
        return f"shape {bins.shape} is not (Q, 2) with 1 <= Q <= {grid_cells(size)}"
    lower_edges = histogram_edges(size)[:-1]
    if not np.isin(bins, lower_edges).all():
        return (
            f"coordinates {bins[~np.isin(bins, lower_edges).all(1)][:3].tolist()} are not "
            f"lower edges of the bin_size={size} grid"
        )
    keys = bins[:, 0] * 1000 + bins[:, 1]
    if not (np.diff(keys) > 0).all():
        return "the bins are not distinct and in a-major, then b order"
    return None
