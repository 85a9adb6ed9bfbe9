"""Robust image decoding: any file Pillow can read becomes RGB uint8; anything else is skipped.

Decoding runs in Python (Pillow, called from tf.data through `tf.numpy_function`) because a
TF decode op that fails on one corrupt file fails the whole pipeline, and Pillow reads more
formats (CMYK JPEG, 16-bit PNG, palette images, TIFF, WebP) than TF's decoders. Pillow releases
the GIL while it decodes, so tf.data's parallel map scales over cores.

Conversions to 3-channel RGB uint8:
- grayscale (L, 1) is replicated to 3 channels; CMYK, YCbCr, LAB and HSV go through Pillow's
  conversion to RGB;
- images with alpha (RGBA, LA, PA, or a palette with a transparent colour) are composited on
  white, so that transparent backgrounds of logos and cut-outs look as they would on a page;
- 16-bit grayscale keeps its top 8 bits (Pillow already does so for 16-bit RGB), 32-bit integer
  images the top 8 of the bits in use; float images in [0, 1] are scaled by 255, others
  clipped to [0, 255];
- animated GIFs and multi-page TIFFs give their first frame;
- EXIF orientation is ignored, as in TF's decoders and the usual ImageNet pipelines.

JPEGs much larger than needed are decoded at a reduced DCT scale (1/2, 1/4 or 1/8, Pillow's
`draft`), never below `min_short` pixels on the short side: the resize that follows shrinks them
anyway, and decoding large YFCC photos is several times faster this way.

Skipped files, by reason (the keys of `skip_counts()`):
- "missing": the file does not exist or cannot be read (a storage error);
- "unreadable": the file exists but this process may not read it (permissions: on a pod, a
  host whose user or mount differs from the others');
- "empty": zero bytes, or an image with a zero-size side;
- "not_image": no photo format (JPEG, PNG, GIF, BMP, WebP, TIFF, PPM, AVIF) recognises the bytes
  (random bytes, text, PDF, ...);
- "truncated": the data ends early (a partly written or partly downloaded file). Pillow could
  fill the rest with grey (`ImageFile.LOAD_TRUNCATED_IMAGES`), but a half-grey photo is a bad
  training example, so these are skipped;
- "too_large": more pixels than Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`);
- "corrupt": any other decoding error.
Counts are process-wide event counts: a file skipped in every epoch counts once per epoch, and
the count includes elements decoded ahead of the consumer by tf.data's prefetching.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import threading

import numpy as np
import tensorflow as tf
from PIL import Image

from ssl_jax import paths

_log = logging.getLogger(__name__)

SKIP_REASONS = ("missing", "unreadable", "empty", "not_image", "truncated", "too_large", "corrupt")

# The first few skips of each reason are logged with their path; later ones are only counted.
MAX_LOGGED_PER_REASON = 10

_lock = threading.Lock()
_skip_counts: collections.Counter[str] = collections.Counter()

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# Photo formats only (JPEG includes cameras' multi-picture MPO files): formats without a
# signature (TGA) would turn random bytes into garbage images, and some (EPS) run programs.
Image.init()
_PHOTO_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "AVIF")
_FORMATS = tuple(f for f in _PHOTO_FORMATS if f in Image.OPEN)


class SkippedImage(Exception):
    """Raised by `decode_image_bytes` for data that cannot become an image; `reason` is a key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def skip_counts() -> dict[str, int]:
    """Number of elements skipped so far in this process, per reason (see module docstring)."""
    with _lock:
        return dict(_skip_counts)


def skipped_count() -> int:
    """Elements skipped so far in this process, all reasons together."""
    return int(sum(skip_counts().values()))


def reset_skip_counts() -> None:
    """Sets every skip count back to zero (and re-enables logging of the first skips)."""
    with _lock:
        _skip_counts.clear()


def record_skip(reason: str, origin: str, detail: str) -> None:
    """Counts one skipped element and logs it if it is among the first of its reason."""
    with _lock:
        _skip_counts[reason] += 1
        count = _skip_counts[reason]
    if count <= MAX_LOGGED_PER_REASON:
        last = count == MAX_LOGGED_PER_REASON
        suffix = f" (further '{reason}' skips are only counted)" if last else ""
        _log.warning("Skipping image %s: %s (%s)%s", origin, reason, detail, suffix)


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Converts a loaded Pillow image of any mode to a (H, W, 3) uint8 array."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode == "F":
            scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0
            gray = np.clip(np.nan_to_num(values) * scale, 0, 255).astype(np.uint8)
        else:
            values = values.astype(np.int64)
            bits = 16 if mode.startswith("I;16") else 8
            while bits < 32 and values.max(initial=0) >= (1 << bits):
                bits *= 2
            gray = np.clip(values >> (bits - 8), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def decode_image_bytes(data: bytes, min_short: int = 0) -> np.ndarray:
    """Decodes encoded image bytes to RGB.

    Args:
        data: the bytes of an image file.
        min_short: the decoded short side, in pixels, may be reduced towards this for JPEGs (DCT
            scaling); 0 decodes at full size.

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        SkippedImage: with the reason the data cannot be decoded.
    """
    if not data:
        raise SkippedImage("empty", "0 bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
        if min_short > 0 and image.format == "JPEG":
            image.draft(image.mode, (min_short, min_short))
        image.load()
        if image.width == 0 or image.height == 0:
            raise SkippedImage("empty", f"size {image.width}x{image.height}")
        return _to_uint8_rgb(image)
    except SkippedImage:
        raise
    except Image.UnidentifiedImageError as e:
        raise SkippedImage("not_image", f"unknown format, {len(data)} bytes") from e
    except Image.DecompressionBombError as e:
        raise SkippedImage("too_large", str(e)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        message = str(e)
        reason = "truncated" if "truncated" in message.lower() else "corrupt"
        raise SkippedImage(reason, f"{type(e).__name__}: {message}") from e
    except Exception as e:  # any decoder bug must skip the file, not stop training
        raise SkippedImage("corrupt", f"{type(e).__name__}: {e}") from e


def read_file_bytes(path: str) -> bytes:
    """Reads a local or remote (gs://) file; raises SkippedImage("unreadable") when permissions
    forbid it, SkippedImage("missing") on any other failure."""
    try:
        return paths.read_bytes(path)
    except PermissionError as e:
        raise SkippedImage("unreadable", f"permission denied for user id {_uid()}: {e}") from e
    except Exception as e:  # any file system's error: the image is skipped, not the run
        raise SkippedImage("missing", f"{type(e).__name__}: {e}") from e


def _uid() -> int | str:
    return os.getuid() if hasattr(os, "getuid") else "?"


_EMPTY = np.zeros((1, 1, 3), np.uint8)


class FailureWatch:
    """Turns an endless run of skipped elements into an error instead of a silent stall.

    When every record of a shard fails to decode, tf.data's filter would loop over the epochs
    forever without producing a batch. Decoding is deterministic, so once more consecutive
    records have failed than the shard holds (with slack for parallel completion order), no
    record can succeed.
    """

    def __init__(self, shard_size: int, where: str):
        self.limit = 2 * shard_size + 64
        self.where = where
        self.consecutive = 0
        self._lock = threading.Lock()

    def update(self, ok: bool) -> None:
        with self._lock:
            self.consecutive = 0 if ok else self.consecutive + 1
            failed = self.consecutive
        if failed > self.limit:
            raise RuntimeError(
                f"The last {failed} records of {self.where} all failed to decode: no usable "
                f"image in this process's shard. Counts per reason: {skip_counts()}. Check "
                "config.data.path / config.data.source."
            )


def numpy_decode(
    payload: bytes,
    is_path: bool,
    origin: bytes,
    min_short: int,
    watch: FailureWatch | None,
    cache: dict[bytes, np.ndarray | None] | None,
) -> tuple[np.ndarray, bool]:
    """The body of the tf.numpy_function decode: never raises for a bad file.

    Args:
        payload: a path (is_path) or the encoded bytes.
        is_path: whether payload is a path to read.
        origin: what to call the element in the log (its path or dataset id).
        min_short: see `decode_image_bytes`.
        watch: optional stall guard, told about every outcome.
        cache: optional dict from origin to the decoded image (None for a skipped file).

    Returns:
        ((H, W, 3) uint8 image, ok); a (1, 1, 3) zero image and False for a skipped element.
    """
    if cache is not None and origin in cache:
        image = cache[origin]
        ok = image is not None
        if watch is not None:
            watch.update(ok)
        return (image if ok else _EMPTY), np.bool_(ok)
    name = origin.decode("utf-8", "replace")
    try:
        data = read_file_bytes(payload.decode("utf-8")) if is_path else payload
        image = decode_image_bytes(data, min_short)
        ok = True
    except SkippedImage as e:
        record_skip(e.reason, name, e.detail)
        image, ok = None, False
    if cache is not None:
        cache[origin] = image
    if watch is not None:
        watch.update(ok)
    return (image if ok else _EMPTY), np.bool_(ok)


def tf_decode(
    payload: tf.Tensor,
    origin: tf.Tensor,
    *,
    is_path: bool,
    min_short: int,
    watch: FailureWatch | None = None,
    cache: dict | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph wrapper of `numpy_decode`: returns ((H, W, 3) uint8 image, ok bool scalar)."""

    def body(p, o):
        return numpy_decode(p, is_path, o, min_short, watch, cache)

    image, ok = tf.numpy_function(body, [payload, origin], [tf.uint8, tf.bool], stateful=False)
    image.set_shape([None, None, 3])
    ok.set_shape([])
    return image, ok
