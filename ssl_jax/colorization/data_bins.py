"""FAIR's ab bins found in the data (``config.colorization.bin_size`` 5, 15 or 20), with priors.

FAIR's generate_colorization_bins_priors.py reads every image of a list with cv2.imread, resizes
it whole to 256 x 256 (cv2.resize, bilinear, aspect ratio not kept), converts it with
``cv2.cvtColor(bgr, COLOR_BGR2LAB)``, takes ab = code - 128 and accumulates a 2-D histogram over
``arange(-128, 128, bin_size)`` in a and b; the bins are the cells with pixels, listed by their
lower edges, the priors their pixel frequencies (``ssl_jax.colorization.bins``).

Here the same on the pretraining data of a config: the first ``colorization.prior_images`` images
of the run's shuffled first epoch (FAIR: its whole list), decoded at full size, resized to
256 x 256 with TensorFlow's bilinear resize (half-pixel centres and no antialiasing, as
cv2.resize's INTER_LINEAR; the rounding of the two can differ by one level), converted with the
run's Lab (``colorization.lab``, default OpenCV's 8-bit codes exactly), every pixel counted,
grayscale images included as in FAIR's script. Each process reads its shard; the counts are
summed over processes. The task stores the result in the workdir (``ssl_jax.colorization.task``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax import config_lib, paths
from ssl_jax.colorization import bins as bins_lib
from ssl_jax.colorization.lab import image_lab

RESIZE = 256  # FAIR's --global_resize_img


def _resize_whole(image, key):
    """The whole image to RESIZE x RESIZE, uint8 (a ``training_stream`` augmentation)."""
    import tensorflow as tf  # TensorFlow: only where data is read

    del key  # deterministic
    out = tf.image.resize(image, (RESIZE, RESIZE), method="bilinear", antialias=False)
    return tf.ensure_shape(tf.saturate_cast(tf.round(out), tf.uint8), [RESIZE, RESIZE, 3])


def count_cells(config: ml_collections.ConfigDict, num_images: int, batch_size: int = 32):
    """Pixel counts per histogram cell of the ab of ``num_images`` images of the pretraining
    data (capped at its size), resized whole to 256 x 256, summed over processes.

    Returns:
      (counts int64 (n * n,), a-major over the cells of ``bins.histogram_edges(bin_size)``;
       images read).
    """
    from ssl_jax import data as data_lib  # TensorFlow: only where data is read
    from ssl_jax.data import pipeline  # TensorFlow: only where data is read

    col = config.colorization
    size = int(col.bin_size)
    cells = bins_lib.grid_cells(size)
    source = data_lib.make_source(config.data)
    total = min(num_images, source.num_examples)
    mine = -(-total // jax.process_count())
    batches = pipeline.training_stream(
        source,
        config.data,
        _resize_whole,
        min_short=0,  # decoded at full size, as cv2.imread
        local_batch_size=max(1, min(batch_size, mine)),
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start=None,
    ).as_numpy_iterator()
    conversion, quantize = col.get("lab", "float"), col.quantize

    @jax.jit
    def histogram(image, valid):
        ab = image_lab(image, conversion, quantize)[..., 1:]
        cell, inside = bins_lib.ab_cells(ab, size)
        weight = (inside & valid[:, None, None]).astype(jnp.int32)
        return jnp.bincount(cell.ravel(), weight.ravel(), length=cells)

    counts = np.zeros(cells, np.int64)
    seen = 0
    while seen < mine:
        image = next(batches)["image"]
        valid = np.arange(image.shape[0]) < mine - seen
        counts += np.asarray(jax.device_get(histogram(image, valid)), np.int64)
        seen += image.shape[0]
    seen = min(seen, mine)
    if jax.process_count() > 1:
        summed = multihost_utils.process_allgather(np.concatenate([counts, [seen]])).sum(0)
        counts, seen = summed[:cells], int(summed[-1])
    return counts, min(seen, total)


def estimate(config: ml_collections.ConfigDict, num_images: int | None = None):
    """The data bins of a config, their priors and a summary dict.

    Returns:
      (bins float32 (Q, 2), lower edges; priors float64 (Q,); summary).
    """
    col = config.colorization
    size = int(col.bin_size)
    counts, images = count_cells(config, num_images or col.prior_images)
    if counts.sum() == 0:
        raise ValueError(
            f"No pixel of the {images} images read from config.data fell in the ab histogram; "
            f"the bins of config.colorization.bin_size={size} cannot be estimated. Check the data."
        )
    bins, priors = bins_lib.bins_from_counts(counts, size)
    summary = {
        "bin_size": size,
        "bins": int(bins.shape[0]),
        "images": images,
        "pixels": int(counts.sum()),
        "resize": RESIZE,
        "lab": col.get("lab", "float"),
        "coordinates": "lower edges of the histogram cells (FAIR)",
        "data": config.data.to_dict(),
    }
    return bins, priors, summary


def load_bins(path: str, size: int) -> np.ndarray:
    """Data bins stored by a run (``bins.npy``), checked against the config's bin size."""
    bins = paths.load_npy(path)
    problem = bins_lib.check_data_bins(bins, size)
    if problem:
        raise config_lib.ConfigError(
            f"{path} does not hold ab bins of config.colorization.bin_size={size}: {problem}. "
            "A workdir keeps the bin size it was started with; use a new --workdir."
        )
    return bins.astype(np.float32)
