"""The Colorization pretext task: predict the quantised ab colour of every pixel from L.

Network input: the L channel, L - 50 (about [-50, 50]), at the crop's full resolution. Lab is
OpenCV's 8-bit conversion exactly (``colorization.lab="opencv"``, the paper's pipeline: the input
is code * 100 / 255 - 50, the targets a, b = code - 128), or the float conversion ("float",
rounded to 8-bit codes with ``colorization.quantize``).

Bins (``colorization.bin_size``): 10 is Zhang's 313 gamut bins; 5, 15 and 20 are FAIR's bins
found in the pretraining data (``ssl_jax.colorization.data_bins``), estimated by ``fit`` before
the model is built (their number Q sizes the head) and stored in the workdir, from which
``restore`` reads them for evaluations.

Head (our choice; the paper's is not public): a 1x1 conv from the trunk's last map (ResNet res5 at
1/16 with ``res5_stride=1``; AlexNet conv5 at about 1/17) to Q logits, bilinearly upsampled to
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
from ssl_jax.colorization import bins as bins_lib
from ssl_jax.colorization import data_bins, encode
from ssl_jax.colorization.bins import BIN_SIZES, NUM_BINS, ZHANG_BIN_SIZE, ab_bins
from ssl_jax.colorization.lab import LAB_CONVERSIONS, image_lab
from ssl_jax.models import make_trunk
from ssl_jax.pretext import compute_dtype

PRIORS_FILE = "colorization_priors.npy"
BINS_FILE = "colorization_bins.npy"  # data bins (bin_size 5, 15, 20), beside their priors
_FEATURE_TAP = {"resnet": "res5", "alexnet": "conv5"}

SCHEMA = {
    "colorization.k": config_lib.positive(integer=True),
    "colorization.bin_size": config_lib.one_of(*BIN_SIZES),
    "colorization.lab": config_lib.one_of(*LAB_CONVERSIONS),
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


def lab_conversion(col: ml_collections.ConfigDict) -> str:
    """config.colorization.lab; configs written before the field existed used "float"."""
    return col.get("lab", "float")


def bin_size(col: ml_collections.ConfigDict) -> int:
    """config.colorization.bin_size; configs written before the field existed used Zhang's."""
    return int(col.get("bin_size", ZHANG_BIN_SIZE))


class ColorizationNet(nn.Module):
    """Trunk on the L channel + 1x1 conv to bin logits, upsampled to the target grid.

    Input: float (B, H, W, 1). Output: float32 logits (B, H // stride, W // stride, Q) and the
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


def lab_targets(image: jax.Array, stride: int, lab: str = "opencv", quantize: bool = True):
    """Network input and target-grid ab from uint8 RGB crops, on device.

    Args:
      image: uint8 (B, H, W, 3).
      lab, quantize: the conversion (``ssl_jax.colorization.lab.image_lab``): "opencv" (OpenCV's
        8-bit codes) or "float" (rounded to 8-bit codes if ``quantize``).

    Returns:
      lightness: float32 (B, H, W, 1), L - 50 (code * 100 / 255 - 50 for 8-bit Lab).
      ab_grid: float32 (B, H // stride, W // stride, 2), ab averaged over stride x stride blocks.
      ab_max: float32 (B,), the largest |a| or |b| of the image at full resolution.
    """
    lab = image_lab(image, lab, quantize)
    batch, height, width = image.shape[:3]
    h, w = height // stride, width // stride
    ab = lab[:, : h * stride, : w * stride, 1:]
    ab_grid = ab.reshape(batch, h, stride, w, stride, 2).mean(axis=(2, 4))
    ab_max = jnp.max(jnp.abs(lab[..., 1:]), axis=(1, 2, 3))
    return lab[..., :1] - 50.0, ab_grid, ab_max


def make_prepare(
    col: ml_collections.ConfigDict,
    class_weights: np.ndarray | None,
    bins: np.ndarray | None = None,
) -> Callable:
    """(rng, batch) -> (network input, sparse targets); ``bins`` (Q, 2), None for Zhang's."""
    weights_table = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    conversion = lab_conversion(col)

    def prepare(rng, batch):
        del rng  # the targets are a function of the crop alone
        lightness, ab_grid, ab_max = lab_targets(
            batch["image"], col.target_stride, conversion, col.quantize
        )
        indices, weights = encode.soft_encode(ab_grid, k=col.k, sigma=col.sigma, bins=bins)
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
# Priors of Zhang's ab bins, estimated from the pretraining data and stored with the run.


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

    conversion = lab_conversion(col)

    @jax.jit
    def histogram(image, valid):
        _, ab_grid, ab_max = lab_targets(image, col.target_stride, conversion, col.quantize)
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


def load_priors(path: str, num_bins: int = NUM_BINS) -> np.ndarray:
    priors = paths.load_npy(path)
    if not encode.is_bin_distribution(priors, num_bins):
        raise config_lib.ConfigError(
            f"{path} does not hold {num_bins} finite non-negative priors with a positive sum "
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


def run_data_bins(config: ml_collections.ConfigDict, workdir: str | None):
    """The data bins and priors of a run (bin_size 5, 15, 20): the ones stored in the workdir
    (``colorization_bins.npy``, ``colorization_priors.npy``), else estimated from the pretraining
    data now (``data_bins.estimate``) and stored there.

    Returns:
      (bins float32 (Q, 2), priors float64 (Q,)).
    """
    size = bin_size(config.colorization)
    stored = paths.join(workdir, BINS_FILE) if workdir else None
    if stored and paths.isfile(stored):
        bins = data_bins.load_bins(stored, size)
        return bins, load_priors(paths.join(workdir, PRIORS_FILE), bins.shape[0])
    logging.info(
        "Estimating the ab bins of size %d and their priors from %d pretraining images",
        size,
        config.colorization.prior_images,
    )
    bins, priors, summary = data_bins.estimate(config)
    logging.info(
        "%d bins from %d images (%d pixels)", bins.shape[0], summary["images"], summary["pixels"]
    )
    if stored and jax.process_index() == 0:
        save_priors(paths.join(workdir, PRIORS_FILE), priors, summary)
        paths.save_npy(stored, bins)  # last: its presence means both files are complete
    return bins, priors


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
        size = bin_size(col)
        if lab_conversion(col) == "opencv" and not col.quantize:
            raise config_lib.ConfigError(
                "config.colorization.quantize=False keeps float Lab, which needs "
                "config.colorization.lab='float'; OpenCV's 8-bit Lab is 8-bit codes."
            )
        most = NUM_BINS if size == ZHANG_BIN_SIZE else bins_lib.grid_cells(size)
        if col.k > most:
            which = (
                "Zhang's 313 bins"
                if size == ZHANG_BIN_SIZE
                else f"at most {most} bins (the cells of its histogram; the data decides how many)"
            )
            raise config_lib.ConfigError(
                f"config.colorization.k={col.k} is more neighbours than there are ab bins: "
                f"config.colorization.bin_size={size} has {which}. Lower config.colorization.k."
            )
        if col.priors_file and size != ZHANG_BIN_SIZE:
            raise config_lib.ConfigError(
                f"config.colorization.priors_file={col.priors_file!r} holds priors of Zhang's "
                f"313 bins (bin_size 10); with config.colorization.bin_size={size} the run "
                "estimates its bins and their priors from the data. Leave priors_file empty."
            )
        if col.priors_file and not paths.isfile(col.priors_file):
            raise config_lib.ConfigError(
                f"config.colorization.priors_file={col.priors_file!r} does not exist; make one "
                "with `python -m ssl_jax.colorization priors --config=... --out=FILE`, or leave it "
                "empty to estimate the priors from the pretraining data."
            )
        self.bin_size = size
        self.bins = None  # float32 (Q, 2); the data bins are known after fit() or restore()
        self._model = None
        if size == ZHANG_BIN_SIZE:
            self._use_bins(ab_bins())
        crop = config.input.crop
        self.example_inputs = np.zeros((2, crop, crop, 1), np.float32)
        self.rows_per_image = 1
        self.trunk_input = ("config.input.crop", crop)
        self.input_channels = 1
        self.linear_augment = "resize_crop"
        self.linear_bn_scale_shift = config.model.name == "resnet"
        self.class_weights = None  # (Q,) rebalancing weights, set by fit() when rebalancing
        self._fitted = False

    @property
    def model(self) -> ColorizationNet:
        if self._model is None:
            raise RuntimeError(
                f"The Colorization model's head has one logit per ab bin, and the bins of "
                f"config.colorization.bin_size={self.bin_size} come from the data: call "
                "fit(workdir) (pretraining) or restore(workdir) (a run's workdir) first."
            )
        return self._model

    def _use_bins(self, bins: np.ndarray) -> None:
        """Sets the bins and builds the model with one logit per bin."""
        k = self.config.colorization.k
        if k > bins.shape[0]:
            raise config_lib.ConfigError(
                f"config.colorization.k={k} is more neighbours than the {bins.shape[0]} ab bins "
                f"that config.colorization.bin_size={self.bin_size} found in the data; lower "
                "config.colorization.k or the bin size."
            )
        self.bins = encode.bin_array(bins)
        dtype = compute_dtype(self.config.model.dtype)
        self._model = ColorizationNet(
            trunk=make_trunk(self.config.model, dtype),
            feature_tap=_FEATURE_TAP[self.config.model.name],
            target_stride=self.config.colorization.target_stride,
            num_bins=int(bins.shape[0]),
            dtype=dtype,
        )

    def check_source(self, source) -> None:
        del source  # any images; grayscale ones are left out of the loss

    def fit(self, workdir: str | None) -> None:
        """The bins and the rebalancing weights: for Zhang's bins the priors (``run_priors``:
        the priors file, the workdir's stored priors, or an estimate from the pretraining data
        stored there); for data bins the bins and their priors (``run_data_bins``: stored in the
        workdir, or estimated and stored there), which also builds the model."""
        col = self.config.colorization
        priors = None
        if self.bin_size != ZHANG_BIN_SIZE:
            bins, priors = run_data_bins(self.config, workdir)
            self._use_bins(bins)
        elif col.rebalance:
            priors = run_priors(self.config, workdir)
        if col.rebalance:
            self.class_weights = encode.rebalance_weights(
                priors, col.rebalance_gamma, col.rebalance_alpha, num_bins=self.bins.shape[0]
            )
        self._fitted = True

    def restore(self, workdir: str) -> None:
        """The data bins a run stored in its workdir (bin_size 5, 15, 20; nothing for Zhang's),
        for evaluating its checkpoints: builds the model; reads no data."""
        if self.bin_size == ZHANG_BIN_SIZE:
            return
        path = paths.join(workdir, BINS_FILE)
        if not paths.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist: a run with config.colorization.bin_size="
                f"{self.bin_size} stores its ab bins there when it starts, and its model has "
                "one logit per bin."
            )
        self._use_bins(data_bins.load_bins(path, self.bin_size))

    def prepare(self, rng: jax.Array, batch: dict[str, jax.Array]):
        if not self._fitted:
            raise RuntimeError("Colorization.prepare needs the bin priors: call fit() first.")
        return make_prepare(self.config.colorization, self.class_weights, self.bins)(rng, batch)

    def loss(self, logits: jax.Array, targets: dict[str, jax.Array]):
        return loss(logits, targets)

    def model_inputs(self, images: jax.Array) -> jax.Array:
        """L - 50 of the image's Lab, converted as in pretraining: (B, S, S, 1)."""
        col = self.config.colorization
        lightness, _, _ = lab_targets(images, 1, lab_conversion(col), col.quantize)
        return lightness
