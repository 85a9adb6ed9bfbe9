"""RoIAlign (Mask R-CNN) as two small matrix products per RoI.

Semantics: Caffe2 / Detectron's RoIAlign forward with `aligned=False` (the paper's benchmark),
Detectron2's with `aligned=True`. For a RoI (x1, y1, x2, y2) in image pixels:
- start = x1 * spatial_scale - offset, end = x2 * spatial_scale - offset (feature-map pixels),
  offset 0.5 when aligned else 0; when not aligned the RoI size is clamped to >= 1.
- The RoI is split into output_size x output_size bins of size roi_size / output_size; bin i has
  grid samples per axis at start + i * bin + (j + 0.5) * bin / grid, j < grid, where grid is
  `sampling_ratio`, or if that is 0, ceil(roi_size / output_size) per RoI and axis (adaptive).
- A sample is bilinearly interpolated with Caffe2's edge rules, per axis: a coordinate < -1 or
  > H (the map's length along that axis) makes the sample contribute 0; a coordinate <= 0 reads
  at 0; when floor(coordinate) >= H - 1 it reads row H - 1 alone. A bin's value is the mean of its
  grid_y * grid_x samples.

Every one of these steps is a product of a y factor and an x factor (the out-of-range test is an
AND of per-axis tests, the bilinear weight is hy * hx, ..., the mean is over a product grid), so
out[r, i, j, c] = sum_{h, w} Ay[r, i, h] F[h, w, c] Ax[r, j, w], where Ay[r, i] is the mean over
bin i's y samples of their masked bilinear row weights (a length-H vector with at most two
non-zeros), and likewise Ax. For R = 2048, C = 1024 on a 38 x 63 map that is a few hundred
MFLOP per chunk of RoIs on the matrix unit, instead of R * 196 * samples gathers of C channels.

Static shapes: with the adaptive count the samples per axis vary with the RoI, so the kernel
evaluates `max_sampling` sample slots per axis and masks the unused ones. It is exact when
max_sampling >= ceil(max(H, W) / output_size) for RoIs inside the map (a RoI longer than the map
needs more; its count is cut at max_sampling).

Gradients flow to `features` by autodiff (the adjoint of the two products scatters the bilinear
weights back, as Caffe2's RoIAlignGradient); RoI coordinates get none (stop_gradient), as in
Detectron.
"""

import jax
import jax.numpy as jnp


def _axis_weights(
    start: jnp.ndarray,
    size: jnp.ndarray,
    grid: jnp.ndarray,
    slots: int,
    output_size: int,
    length: int,
) -> jnp.ndarray:
    """(r,) RoI start / size along one axis, (r,) sample count -> (r, output_size, length) weights.

    Row i is the mean over bin i's samples of their bilinear interpolation weights on the axis.
    """
    bin_size = size / output_size
    grid_f = jnp.maximum(grid, 1).astype(start.dtype)
    bins = jnp.arange(output_size, dtype=start.dtype)
    j = jnp.arange(slots, dtype=start.dtype)
    pos = (
        start[:, None, None]
        + bins[None, :, None] * bin_size[:, None, None]
        + (j[None, None, :] + 0.5) * bin_size[:, None, None] / grid_f[:, None, None]
    )  # (r, output_size, slots)
    used = (
        (jnp.arange(slots)[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= length)
    )
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos).astype(jnp.int32)
    at_edge = low >= length - 1
    low = jnp.where(at_edge, length - 1, low)
    high = jnp.where(at_edge, length - 1, low + 1)
    pos = jnp.where(at_edge, low.astype(pos.dtype), pos)
    frac = pos - low
    cells = jnp.arange(length)[None, None, None, :]
    weights = (1.0 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (
        cells == high[..., None]
    )
    weights = jnp.where(used[..., None], weights, 0.0)
    return weights.sum(axis=2) / grid_f[:, None, None]


def roi_align(
    features: jnp.ndarray,
    rois: jnp.ndarray,
    *,
    output_size: int = 14,
    spatial_scale: float = 1.0 / 16,
    sampling_ratio: int = 0,
    aligned: bool = False,
    max_sampling: int | None = None,
    chunk: int = 256,
) -> jnp.ndarray:
    """Pool features (H, W, C) over rois (R, 4) (x1, y1, x2, y2 in image pixels).

    Args:
      output_size: bins per side (Detectron's ROI_XFORM_RESOLUTION, 14 for C4).
      spatial_scale: feature pixels per image pixel (1/16 for res4).
      sampling_ratio: samples per bin per axis; 0 is adaptive, ceil(roi size / output_size).
      aligned: Detectron2's half-pixel offset (and no minimum RoI size).
      max_sampling: sample slots per axis for sampling_ratio 0 (required then);
        ceil(max(H, W) / output_size) makes the adaptive count exact.
      chunk: RoIs per step of the `lax.map`; bounds memory at about
        chunk * output_size * max(H, W) * C elements.

    Returns (R, output_size, output_size, C) in features' dtype.
    """
    if sampling_ratio < 0:
        raise ValueError(f"sampling_ratio must be >= 0, got {sampling_ratio}.")
    if sampling_ratio == 0 and max_sampling is None:
        raise ValueError(
            "roi_align with sampling_ratio=0 (adaptive) needs max_sampling, e.g. "
            "ceil(max(H, W) / output_size) for a map of H x W."
        )
    slots = sampling_ratio if sampling_ratio > 0 else max_sampling
    height, width, channels = features.shape
    num_rois = rois.shape[0]

    rois = jax.lax.stop_gradient(rois).astype(jnp.float32)
    offset = 0.5 if aligned else 0.0
    start = rois * spatial_scale - offset  # (R, 4) in feature pixels
    size_x = start[:, 2] - start[:, 0]
    size_y = start[:, 3] - start[:, 1]
    if not aligned:  # Caffe2 forces malformed RoIs to 1 x 1
        size_x = jnp.maximum(size_x, 1.0)
        size_y = jnp.maximum(size_y, 1.0)
    if sampling_ratio > 0:
        grid_x = jnp.full((num_rois,), sampling_ratio, jnp.int32)
        grid_y = grid_x
    else:
        grid_x = jnp.ceil(size_x / output_size).astype(jnp.int32)
        grid_y = jnp.ceil(size_y / output_size).astype(jnp.int32)
    per_roi = (start[:, 0], start[:, 1], size_x, size_y, grid_x, grid_y)

    # Contract the longer axis first: the intermediate is chunk * output_size * shorter * C.
    x_first = width >= height

    def pool(args):
        x0, y0, sx, sy, gx, gy = args
        ay = _axis_weights(y0, sy, gy, slots, output_size, height).astype(features.dtype)
        ax = _axis_weights(x0, sx, gx, slots, output_size, width).astype(features.dtype)
        if x_first:
            t = jnp.einsum("rjw,hwc->rhjc", ax, features)
            return jnp.einsum("rih,rhjc->rijc", ay, t)
        t = jnp.einsum("rih,hwc->riwc", ay, features)
        return jnp.einsum("rjw,riwc->rijc", ax, t)

    chunk = max(1, min(chunk, num_rois))
    steps = -(-num_rois // chunk)
    pad = steps * chunk - num_rois
    chunks = [
        jnp.pad(a, (0, pad)).reshape((steps, chunk) + a.shape[1:]) for a in per_roi
    ]  # padded RoIs are 1 x 1 boxes at 0 (or empty); their rows are dropped below
    out = jax.lax.map(pool, tuple(chunks))
    return out.reshape((steps * chunk, output_size, output_size, channels))[:num_rois]
