"""The Colorization pretext task: predict the quantised ab colour of every pixel from L.

Network input: the L channel, L - 50 (about [-50, 50]), at the crop's full resolution; with
``colorization.quantize`` (default) L, a and b are first rounded to the values of OpenCV's 8-bit
Lab, as in the paper's pipeline.

Head (our choice; the paper's is not public): a 1x1 conv from the trunk's last map (ResNet res5 at
1/16 with ``res5_stride=1``; AlexNet conv5 at about 1/17) to 313 logits, bilinearly upsampled to
the target grid at 1/``target_stride`` of the input (1/4: 56x56 for a 224 crop, Zhang et al.'s
output resolution). Targets: ab averaged over each stride x stride block of the crop, soft-encoded
over the K nearest bins. Loss: per-pixel cross-entropy against the soft target, weighted by the
rebalancing weight of the pixel's nearest bin, averaged over the pixels of colour images; images
with no |a| or |b| above ``gray_threshold`` anywhere are left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax import config_lib, paths
from ssl_jax.colorization import encode
from ssl_jax.colorization.bins import NUM_BINS
from ssl_jax.colorization.lab import quantize_8bit, rgb_to_lab
from ssl_jax.models import make_trunk
from ssl_jax.pretext import compute_dtype

PRIORS_FILE = "colorization_priors.npy"
_FEATURE_TAP = {"resnet": "res5", "alexnet": "conv5"}

SCHEMA = {
    "colorization.k": config_lib.in_range(1, NUM_BINS, integer=True),
    "colorization.sigma": config_lib.positive(),
    "colorization.rebalance": config_lib.one_of(True, False),
    "colorization.rebalance_gamma": config_lib.in_range(0, 1),
    "colorization.rebalance_alpha": config_lib.non_negative(),
    "colorization.prior_images": config_lib.positive(integer=True),
    "colorization.prior_smoothing": config_lib.non_negative(),
    "colorization.gray_threshold": config_lib.non_negative(),
    "colorization.target_stride": config_lib.in_range(1, 64, integer=True),
    "colorization.quantize": config_lib.one_of(True, False),
}


class ColorizationNet(nn.Module):
    """Trunk on the L channel + 1x1 conv to bin logits, upsampled to the target grid.

    Input: float (B, H, W, 1). Output: float32 logits (B, H // stride, W // stride, 313) and the
    trunk's taps.
    """

    trunk: nn.Module
    feature_tap: str
    target_stride: int
    num_bins: int = NUM_BINS
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, lightness: jax.Array, train: bool):
        _, taps = self.trunk(lightness, train=train)
        features = taps[self.feature_tap]
        logits = nn.Conv(self.num_bins, (1, 1), dtype=self.dtype, name="classifier")(features)
        batch, height, width = lightness.shape[:3]
        grid = (batch, height // self.target_stride, width // self.target_stride, self.num_bins)
        if logits.shape != grid:
            logits = jax.image.resize(logits.astype(jnp.float32), grid, method="bilinear")
        return logits.astype(jnp.float32), taps


def lab_targets(image: jax.Array, stride: int, quantize: bool = True):
    """Network input and target-grid ab from uint8 RGB crops, on device.

    Args:
      image: uint8 (B, H, W, 3).

    Returns:
      lightness: float32 (B, H, W, 1), L - 50.
      ab_grid: float32 (B, H // stride, W // stride, 2), ab averaged over stride x stride blocks.
      ab_max: float32 (B,), the largest |a| or |b| of the image at full resolution.
    """
    lab = rgb_to_lab(image)
    if quantize:
        lab = quantize_8bit(lab)
    batch, height, width = image.shape[:3]
    h, w = height // stride, width // stride
    ab = lab[:, : h * stride, : w * stride, 1:]
    ab_grid = ab.reshape(batch, h, stride, w, stride, 2).mean(axis=(2, 4))
    ab_max = jnp.max(jnp.abs(lab[..., 1:]), axis=(1, 2, 3))
    return lab[..., :1] - 50.0, ab_grid, ab_max


def make_prepare(col: ml_collections.ConfigDict, class_weights: np.ndarray | None) -> Callable:
    weights_table = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    def prepare(rng, batch):
        del rng  # the targets are a function of the crop alone
        lightness, ab_grid, ab_max = lab_targets(batch["image"], col.target_stride, col.quantize)
        indices, weights = encode.soft_encode(ab_grid, k=col.k, sigma=col.sigma)
        colour = ab_max > col.gray_threshold
        targets = {
            "indices": indices,
            "weights": weights,
            "mask": jnp.broadcast_to(colour[:, None, None], indices.shape[:3]),
        }
        if weights_table is not None:
            targets["pixel_weights"] = weights_table[indices[..., 0]]
        return lightness, targets

    return prepare


def loss(logits: jax.Array, targets: dict[str, jax.Array]):
    """Rebalanced soft cross-entropy; metrics: the loss, its unweighted value ``ce``, nearest-bin
    top-1, and the fraction of colour images (the rest are masked out)."""
    mask = targets["mask"]
    ce, nearest_top = encode.soft_cross_entropy(logits, targets["indices"], targets["weights"])
    value, count = encode.masked_mean(ce, targets.get("pixel_weights"), mask)
    unweighted, _ = encode.masked_mean(ce, None, mask)
    top1 = jnp.sum(nearest_top & mask) / jnp.maximum(count, 1.0)
    colour_images = jnp.mean(mask[:, 0, 0].astype(jnp.float32))
    return value, {"loss": value, "ce": unweighted, "top1": top1, "colour_images": colour_images}


# ---------------------------------------------------------------------------------------------
# Priors of the ab bins, estimated from the pretraining data and stored with the run.


def count_bins(config: ml_collections.ConfigDict, num_images: int, batch_size: int = 64):
    """Pixel counts of the nearest bins of the pretraining data's targets.

    Reads ``num_images`` crops (capped at the data size) through the training input pipeline,
    split over processes, and counts the target-grid pixels of colour images per bin.

    Returns:
      (counts float64 (313,), images read, colour images among them), summed over processes.
    """
    from ssl_jax import data as data_lib  # TensorFlow: only where data is read

    col = config.colorization
    source = data_lib.make_source(config.data)
    total = min(num_images, source.num_examples)
    mine = -(-total // jax.process_count())
    batches = data_lib.pretrain_iterator(
        config.data,
        config.input,
        local_batch_size=min(batch_size, mine),
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        source=source,
    )

    @jax.jit
    def histogram(image, valid):
        _, ab_grid, ab_max = lab_targets(image, col.target_stride, col.quantize)
        colour = (ab_max > col.gray_threshold) & valid
        nearest = encode.nearest_bin(ab_grid)
        pixel = jnp.broadcast_to(colour[:, None, None], nearest.shape).astype(jnp.float32)
        return jnp.bincount(nearest.ravel(), pixel.ravel(), length=NUM_BINS), jnp.sum(colour)

    counts = np.zeros(NUM_BINS, np.float64)
    seen = colour_images = 0
    while seen < mine:
        image = next(batches)["image"]
        valid = np.arange(image.shape[0]) < mine - seen
        c, n = jax.device_get(histogram(image, valid))
        counts += c
        colour_images += int(n)
        seen += image.shape[0]
    if jax.process_count() > 1:
        summed = multihost_utils.process_allgather(
            np.concatenate([counts, [min(seen, mine), colour_images]])
        ).sum(0)
        counts, seen, colour_images = summed[:NUM_BINS], int(summed[-2]), int(summed[-1])
    return counts, min(seen, total), colour_images


def estimate_priors(config: ml_collections.ConfigDict, num_images: int | None = None):
    """Smoothed bin priors (313,) from the pretraining data, and a summary dict."""
    col = config.colorization
    counts, images, colour = count_bins(config, num_images or col.prior_images)
    if counts.sum() == 0:
        raise ValueError(
            f"None of the {images} images read from config.data has colour (|a| or |b| > "
            f"config.colorization.gray_threshold={col.gray_threshold}); the priors cannot be "
            "estimated. Check the data, or give config.colorization.priors_file."
        )
    priors = encode.smooth_priors(counts, col.prior_smoothing)
    summary = {
        "images": images,
        "colour_images": colour,
        "pixels": float(counts.sum()),
        "bins_seen": int((counts > 0).sum()),
        "smoothing": col.prior_smoothing,
        "data": config.data.to_dict(),
    }
    return priors, summary


def save_priors(path: str, priors: np.ndarray, summary: dict) -> None:
    """Writes the priors (``path``, .npy) and their summary (same name, .json)."""
    paths.save_npy(path, np.asarray(priors, np.float64))
    paths.write_json(os.path.splitext(path)[0] + ".json", summary)


def load_priors(path: str) -> np.ndarray:
    priors = paths.load_npy(path)
    if not encode.is_bin_distribution(priors):
        raise config_lib.ConfigError(
            f"{path} does not hold {NUM_BINS} finite non-negative priors with a positive sum "
            f"(shape {priors.shape}); "
            "make it with `python -m ssl_jax.colorization priors`."
        )
    return priors / priors.sum()


def run_priors(config: ml_collections.ConfigDict, workdir: str | None) -> np.ndarray:
    """The priors of a run: ``priors_file`` if given, else the ones stored in the workdir, else
    estimated from the pretraining data now (and stored in the workdir)."""
    col = config.colorization
    if col.priors_file:
        return load_priors(col.priors_file)
    stored = paths.join(workdir, PRIORS_FILE) if workdir else None
    if stored and paths.isfile(stored):
        return load_priors(stored)
    logging.info("Estimating the ab priors from %d pretraining images", col.prior_images)
    priors, summary = estimate_priors(config)
    logging.info(
        "Priors from %d images (%d in colour): %d of %d bins seen",
        summary["images"],
        summary["colour_images"],
        summary["bins_seen"],
        NUM_BINS,
    )
    if stored and jax.process_index() == 0:
        save_priors(stored, priors, summary)
    return priors


class Colorization:
    """The Colorization task (``ssl_jax.pretext.Pretext``): L in, soft-encoded ab bins out."""

    name = "colorization"
    schema = SCHEMA

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        col = config.colorization
        if config.input.crop < 2 * col.target_stride:
            raise config_lib.ConfigError(
                f"config.input.crop={config.input.crop} leaves no target grid at "
                f"config.colorization.target_stride={col.target_stride}."
            )
        if config.model.name == "alexnet" and config.model.get("alexnet_variant") != "colorization":
            raise config_lib.ConfigError(
                f"config.model.alexnet_variant={config.model.alexnet_variant!r}: Colorization "
                "trains the 'colorization' AlexNet (conv1 stride 4, BN after every conv)."
            )
        if col.priors_file and not paths.isfile(col.priors_file):
            raise config_lib.ConfigError(
                f"config.colorization.priors_file={col.priors_file!r} does not exist; make one "
                "with `python -m ssl_jax.colorization priors --config=... --out=FILE`, or leave it "
                "empty to estimate the priors from the pretraining data."
            )
        dtype = compute_dtype(config.model.dtype)
        self.model = ColorizationNet(
            trunk=make_trunk(config.model, dtype),
            feature_tap=_FEATURE_TAP[config.model.name],
            target_stride=col.target_stride,
            dtype=dtype,
        )
        crop = config.input.crop
        self.example_inputs = np.zeros((2, crop, crop, 1), np.float32)
        self.rows_per_image = 1
        self.trunk_input = ("config.input.crop", crop)
        self.input_channels = 1
        self.linear_augment = "resize_crop"
        self.linear_bn_scale_shift = config.model.name == "resnet"
        self.class_weights = None  # (313,) rebalancing weights, set by fit() when rebalancing
        self._fitted = False

    def check_source(self, source) -> None:
        del source  # any images; grayscale ones are left out of the loss

    def fit(self, workdir: str | None) -> None:
        """The rebalancing weights from the bin priors (``run_priors``: the priors file, the
        workdir's stored priors, or an estimate from the pretraining data stored there)."""
        col = self.config.colorization
        if col.rebalance:
            priors = run_priors(self.config, workdir)
            self.class_weights = encode.rebalance_weights(
                priors, col.rebalance_gamma, col.rebalance_alpha
            )
        self._fitted = True

    def prepare(self, rng: jax.Array, batch: dict[str, jax.Array]):
        if not self._fitted:
            raise RuntimeError("Colorization.prepare needs the bin priors: call fit() first.")
        return make_prepare(self.config.colorization, self.class_weights)(rng, batch)

    def loss(self, logits: jax.Array, targets: dict[str, jax.Array]):
        return loss(logits, targets)

    def model_inputs(self, images: jax.Array) -> jax.Array:
        """L - 50 of the (8-bit-quantised) Lab image, as in pretraining: (B, S, S, 1)."""
        lightness, _, _ = lab_targets(images, 1, self.config.colorization.quantize)
        return lightness
