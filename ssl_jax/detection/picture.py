"""A picture of detections: the images in a grid, each with its best boxes and their scores.

draw(images, detections, "gs://bucket/run/detections.png", columns=4, top=5)
"""

from __future__ import annotations

import colorsys
import io
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ssl_jax import paths

Detection = tuple[Sequence[float], str, float]  # (box [x1, y1, x2, y2] pixels, label, score)

_TITLE_HEIGHT = 20


def _colour(label: str) -> tuple[int, int, int]:
    """A bright colour that is the same for a label in every picture."""
    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw(
    images: Sequence[np.ndarray],
    detections: Sequence[Sequence[Detection]],
    path: str,
    *,
    columns: int = 4,
    top: int = 5,
    title: str | None = None,
) -> None:
    """Writes a PNG grid of ``images`` with their ``top`` best detections (local or gs://).

    Args:
        images: uint8 (h, w, 3) each; sizes may differ (each cell is the largest size, the
            image at its top left, the rest black).
        detections: per image, (box [x1, y1, x2, y2] in the image's pixels, label, score).
        path: the PNG to write.
        columns: images per row (fewer if there are fewer images).
        top: boxes drawn per image, the highest scores first.
        title: a line of text above the grid.

    The picture is ``rows * cell height (+ 20 with a title)`` by ``columns * cell width``.
    """

    if len(images) != len(detections) or not len(images):
        raise ValueError(
            f"draw({path!r}): {len(images)} images and {len(detections)} detection lists; "
            "give at least one image and one list per image."
        )
    arrays = [np.asarray(im) for im in images]
    for k, im in enumerate(arrays):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"draw: image {k} is {im.dtype} {im.shape}; expected uint8 (h, w, 3).")
    columns = max(1, min(columns, len(arrays)))
    rows = -(-len(arrays) // columns)
    cell_h = max(im.shape[0] for im in arrays)
    cell_w = max(im.shape[1] for im in arrays)
    offset = _TITLE_HEIGHT if title else 0
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h + offset))
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        pen.text((4, 4), title, fill=(255, 255, 255), font=font)
    for k, (im, dets) in enumerate(zip(arrays, detections, strict=True)):
        x0, y0 = (k % columns) * cell_w, (k // columns) * cell_h + offset
        canvas.paste(Image.fromarray(im), (x0, y0))
        best = sorted(dets, key=lambda d: -float(d[2]))[:top]
        for box, label, score in reversed(best):  # the best drawn last, on top
            x1, y1, x2, y2 = (float(v) for v in box)
            colour = _colour(label)
            pen.rectangle([x0 + x1, y0 + y1, x0 + x2, y0 + y2], outline=colour, width=2)
            text = f"{label} {float(score):.2f}"
            tx, ty = x0 + x1, max(y0, y0 + y1 - 11)
            left, upper, right, lower = pen.textbbox((tx, ty), text, font=font)
            pen.rectangle([left, upper, right, lower], fill=colour)
            pen.text((tx, ty), text, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    paths.write_bytes(path, buffer.getvalue())
