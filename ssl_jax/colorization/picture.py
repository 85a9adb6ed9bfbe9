"""What a Colorization model learned, as a picture: grayscale input | prediction | ground truth.

An evaluator (``ssl_jax.evals.base``): attached to Colorization pretraining as
``config.evals.samples`` (every checkpoint by default), standalone as
``python -m ssl_jax.main --config=configs/evals/colorization_picture.py --config.pretrained=W
--workdir=E`` or ``python -m ssl_jax.colorization show --workdir=W``. It colourises a fixed set
of crops of the run's own pretraining data (annealed mean, Zhang's temperature 0.38) and writes
``picture.png`` in its workdir; it logs no metrics.
"""

from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import config_lib, paths
from ssl_jax.colorization import predict
from ssl_jax.colorization.task import Colorization, lab_conversion, lab_targets
from ssl_jax.evals import base
from ssl_jax.pretext import Pretext
from ssl_jax.train import state as state_lib

_log = logging.getLogger(__name__)

PICTURE_FILE = "picture.png"


def defaults(every_steps: int = 0) -> ml_collections.ConfigDict:
    c = base.evaluator_config("colorization_picture")
    c.every_steps = every_steps
    c.images = 8  # crops in the picture
    c.temperature = 0.38  # annealed mean (Zhang et al.)
    return c


def sample_images(config: ml_collections.ConfigDict, num: int) -> np.ndarray:
    """A fixed set of ``num`` uint8 crops (num, H, W, 3) of the pretraining data, for pictures."""
    from ssl_jax import data as data_lib  # TensorFlow: only where data is read

    batches = data_lib.pretrain_iterator(
        config.data,
        config.input,
        local_batch_size=num,
        seed=config.seed + 1,
        process_index=0,
        process_count=1,
    )
    return next(batches)["image"]


def make_picture(
    model: nn.Module,
    col: ml_collections.ConfigDict,
    temperature: float,
    bins: np.ndarray | None = None,
):
    """(variables, images uint8 (B, H, W, 3)) -> rows of (grayscale, prediction, truth).

    The grayscale column and the network's input are the images' L as the task converts them
    (``col.lab``); ``bins`` (Q, 2) are the model's bins (None: Zhang's 313)."""
    conversion = lab_conversion(col)

    @jax.jit
    def colour(variables, image):
        lightness, _, _ = lab_targets(image, col.target_stride, conversion, col.quantize)
        logits, _ = model.apply(variables, lightness, train=False)
        return predict.colorize(lightness[..., 0] + 50.0, logits, temperature, bins)

    @jax.jit
    def gray(image):
        lightness, _, _ = lab_targets(image, 1, conversion, col.quantize)
        ab = jnp.zeros(lightness.shape[:-1] + (2,), jnp.float32)
        return predict.lab_to_rgb(jnp.concatenate([lightness + 50.0, ab], axis=-1))

    def picture(variables, images):
        grays = np.asarray(gray(images))
        predicted = np.asarray(colour(variables, images))
        return [(grays[i], predicted[i], images[i]) for i in range(images.shape[0])]

    return picture


class Picture:
    """The picture evaluator of a Colorization task."""

    results_file = PICTURE_FILE  # what it writes, instead of results.json

    def __init__(self, config: ml_collections.ConfigDict, task: Pretext):
        if not isinstance(task, Colorization):
            raise config_lib.ConfigError(
                f"config.evaluation='colorization_picture' draws a Colorization model's "
                f"predictions; this is a {task.name!r} run."
            )
        if not 1 <= config.images <= 64:
            raise config_lib.ConfigError(f"config.images={config.images}: allowed 1 ... 64.")
        if not config.temperature > 0:
            raise config_lib.ConfigError(f"config.temperature={config.temperature} must be > 0.")
        self.config, self.task = config, task
        self._picture = None  # built at the first draw: data bins are known after the task's fit
        self._images = None

    def draw(self, variables: dict) -> list[tuple[np.ndarray, ...]]:
        """Rows of (grayscale, prediction, truth) for the fixed crops of the run's data."""
        if self._picture is None:
            task = self.task
            col = task.config.colorization
            self._picture = make_picture(task.model, col, self.config.temperature, task.bins)
        if self._images is None:
            self._images = sample_images(self.task.config, self.config.images)
        # Host copies: a jitted call on global arrays from one process alone would wait for the
        # others.
        variables = jax.device_get(
            {"params": variables["params"], "batch_stats": variables["batch_stats"]}
        )
        return self._picture(variables, self._images)

    def run(self, weights: base.Weights, workdir: str) -> dict[str, float]:
        if not base.is_leader():
            return {}  # one picture, drawn by process 0 alone
        path = paths.join(workdir, PICTURE_FILE)
        predict.write_grid(self.draw(weights.variables), path)
        _log.info("Wrote %s (grayscale input | prediction | ground truth)", path)
        return {}


def draw_run(
    workdir: str,
    out: str | None = None,
    *,
    step: int | None = None,
    images: int = 8,
    temperature: float = 0.38,
) -> tuple[str, int]:
    """Writes the picture of a Colorization run's checkpoint (the latest, or ``step``) for
    ``images`` fixed crops of its own data; returns (the PNG's path, the step). Default path:
    ``workdir/samples/show_step_S.png``."""
    _, task, step, variables = state_lib.restore_variables(workdir, step)
    config = defaults()
    config.images = images
    config.temperature = temperature
    out = out or paths.join(workdir, "samples", f"show_step_{step:08d}.png")
    predict.write_grid(Picture(config, task).draw(variables), out)
    return out, step
