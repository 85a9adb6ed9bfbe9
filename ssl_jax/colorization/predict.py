"""From predicted bin distributions to colour images, and the PNG grid a user looks at."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ssl_jax import paths
from ssl_jax.colorization.encode import bin_array
from ssl_jax.colorization.lab import lab_to_rgb

ZHANG_TEMPERATURE = 0.38


def annealed_mean(
    logits: jnp.ndarray, temperature: float = ZHANG_TEMPERATURE, bins: np.ndarray | None = None
) -> jnp.ndarray:
    """Zhang et al.'s point estimate: the mean of the distribution sharpened by 1 / temperature.

    Re-normalising p^(1/T) is softmax(logits / T); T = 1 is the mean, T -> 0 the mode.

    Args:
      logits: float (..., Q).
      bins: (Q, 2) the bins' ab coordinates; None for Zhang's 313.

    Returns:
      float32 (..., 2): a and b.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    centres = jnp.asarray(bin_array(bins))
    return jnp.einsum("...q,qc->...c", probs, centres, precision="highest")


def colorize(
    lightness: jnp.ndarray,
    logits: jnp.ndarray,
    temperature: float = ZHANG_TEMPERATURE,
    bins: np.ndarray | None = None,
) -> jnp.ndarray:
    """Colour images from the input lightness and the predicted bins.

    Args:
      lightness: float (B, H, W), L in [0, 100].
      logits: float (B, h, w, Q), the network's output on its (coarser) target grid.
      bins: (Q, 2) the bins' ab coordinates; None for Zhang's 313.

    Returns:
      float32 (B, H, W, 3) sRGB in [0, 1]: the predicted ab, bilinearly upsampled to H x W, with
      the input's own L.
    """
    ab = annealed_mean(logits, temperature, bins)
    batch, height, width = lightness.shape
    ab = jax.image.resize(ab, (batch, height, width, 2), method="bilinear")
    return lab_to_rgb(jnp.concatenate([lightness[..., None], ab], axis=-1))


def write_grid(rows: list[tuple[np.ndarray, ...]], path: str, gap: int = 4) -> str:
    """Writes images as a grid PNG, one tuple of equal-sized images per row.

    Args:
      rows: per row, images as uint8 (H, W, 3) or float (H, W, 3) in [0, 1].
      path: the PNG file; its folder is created.
    """

    def to_uint8(image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        return image

    rows = [[to_uint8(image) for image in row] for row in rows]
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    canvas = np.full(
        (len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = gap + r * (height + gap), gap + c * (width + gap)
            canvas[y : y + height, x : x + width] = image
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    paths.write_bytes(path, buffer.getvalue())
    return path
