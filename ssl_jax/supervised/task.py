"""Supervised pretraining: the trunk + one linear classifier on its pooled feature, trained on
the source's labels with softmax cross-entropy. The baseline that the paper sets beside every
self-supervised trunk ("ImageNet supervised"); at small scale, the same trunk trained on the
same labelled images that the pretext tasks see without labels.

The input is the augmented crop (config.input: resize the short side, random crop, flip) with
the pretraining mean/std, the input convention the transfer benchmarks use for RGB trunks.
Images whose label is missing (-1) or outside [0, num_classes) are left out of the loss and
counted in the ``unlabelled`` metric; a source without labels is refused before training
(``check_source``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import config_lib
from ssl_jax.models import make_trunk
from ssl_jax.pretext import compute_dtype, normalised_rgb

SCHEMA = {
    "supervised.num_classes": config_lib.in_range(2, 1_000_000, integer=True),
}


class SupervisedNet(nn.Module):
    """Trunk + linear classifier (N(0, 0.01) init, zero bias) on the pooled feature."""

    trunk: nn.Module
    num_classes: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool):
        pooled, taps = self.trunk(images, train=train)
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.01),
            name="classifier",
        )(pooled)
        return logits.astype(jnp.float32), taps


class Supervised:
    """The supervised baseline (``ssl_jax.pretext.Pretext``): the trunk trained on labels."""

    name = "supervised"
    schema = SCHEMA

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        dtype = compute_dtype(config.model.dtype)
        self.model = SupervisedNet(
            trunk=make_trunk(config.model, dtype),
            num_classes=config.supervised.num_classes,
            dtype=dtype,
        )
        crop = config.input.crop
        self.example_inputs = np.zeros((2, crop, crop, 3), np.float32)
        self.rows_per_image = 1
        self.trunk_input = ("config.input.crop", crop)
        self.input_channels = 3
        self.linear_augment = "random_resized_crop"
        self.linear_bn_scale_shift = False

    def check_source(self, source) -> None:
        """Refuses a source without labels, or one whose classes disagree with num_classes."""
        config = self.config
        names = getattr(source, "class_names", None)
        has_label = getattr(source, "has_label", names is not None)
        if not has_label or (names is None and config.data.source != "tfds"):
            raise config_lib.ConfigError(
                f"config.task='supervised' needs labelled images, but config.data (source="
                f"{config.data.source!r}, path={config.data.get('path', '')!r}) has none: use an "
                "image folder with one subfolder per class, or a TFDS dataset with a 'label' "
                "feature."
            )
        if names is not None and len(names) != config.supervised.num_classes:
            raise config_lib.ConfigError(
                f"config.supervised.num_classes={config.supervised.num_classes}, but the data "
                f"has {len(names)} classes ({', '.join(names[:5])}"
                f"{', ...' if len(names) > 5 else ''}); set "
                f"--config.supervised.num_classes={len(names)}."
            )

    def fit(self, workdir: str | None) -> None:
        del workdir  # nothing derived from the data

    def restore(self, workdir: str) -> None:
        del workdir  # the model does not depend on anything stored with the run

    def prepare(self, rng: jax.Array, batch: dict[str, jax.Array]):
        del rng  # the augmentation happened on the host
        return self.model_inputs(batch["image"]), batch["label"]

    def loss(self, logits: jax.Array, labels: jax.Array):
        return loss(logits, labels)

    def model_inputs(self, images: jax.Array) -> jax.Array:
        return normalised_rgb(self.config, images)


def loss(logits: jax.Array, labels: jax.Array):
    """Softmax cross-entropy and top-1 over the labelled images of the batch."""
    num_classes = logits.shape[-1]
    valid = (labels >= 0) & (labels < num_classes)
    safe = jnp.where(valid, labels, 0)
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, safe[:, None], axis=-1)[:, 0]
    count = jnp.maximum(valid.sum(), 1)
    ce = jnp.sum(jnp.where(valid, nll, 0.0)) / count
    top1 = jnp.sum(valid & (jnp.argmax(logits, axis=-1) == safe)) / count
    return ce, {"loss": ce, "top1": top1, "unlabelled": 1.0 - valid.mean()}
