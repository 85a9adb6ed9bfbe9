"""The 313 quantised ab colours of Zhang et al., derived from the sRGB gamut.

The ab plane is gridded with step 10 over [-110, 110]^2 (23 x 23 centres). A centre is kept when
the +-10 box around it touches the convex hull of the ab projection of the sRGB gamut. The hull is
the projection of the surface of the RGB cube (every interior colour projects inside it); a 9-level
sampling of the faces already gives the same 313 centres as the full 256-level one, which we use.
The result equals Zhang et al.'s pts_in_hull.npy, in its order (a-major, then b).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.spatial import ConvexHull

from ssl_jax.colorization.lab import rgb_to_lab_numpy

NUM_BINS = 313
GRID_STEP = 10.0
GRID_LIMIT = 110.0


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
