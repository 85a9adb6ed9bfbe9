"""Precomputed proposals (Selective Search for Fast R-CNN) in Detectron's pickle format.

A file is a dict: "boxes", a list of (n_i, 4) float arrays of 0-based inclusive pixels
``(x1, y1, x2, y2)`` in the original image; "scores", a list of (n_i,) (optional); and "ids" or
"indexes", the image ids (ints like 5 or strings like "000005"; matched either way). Detectron's
files are Python 2 pickles: read with encoding="latin1", written with protocol 2.

    boxes, valid = load("voc_2007_test_ss.pkl", dataset, max_proposals=2000)
    boxes    # (num_images, 2000, 4) float32, continuous (x1, y1, x2 + 1, y2 + 1); 0 where padded
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssl_jax import paths
from ssl_jax.detection.voc import DetectionSet

_log = logging.getLogger(__name__)


def _key(image_id: Any) -> int | str:
    """A matching key: "000005", b"000005", 5 and np.int64(5) are the same image."""
    if isinstance(image_id, bytes):
        image_id = image_id.decode("latin1")
    text = str(image_id).strip()
    return int(text) if text.isdigit() else text


def _read(path: str) -> tuple[list[Any], list[np.ndarray], list[np.ndarray] | None]:
    """(ids, boxes, scores or None) of a proposals file, checked."""
    try:
        data = pickle.loads(paths.read_bytes(path), encoding="latin1")
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ... : anything unreadable
        raise ValueError(f"{path} is not a proposals pickle ({type(e).__name__}: {e}).") from None
    id_field = "indexes" if isinstance(data, dict) and "indexes" in data else "ids"
    if not isinstance(data, dict) or "boxes" not in data or id_field not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} holds {keys}; a proposals file is a dict with 'boxes', 'ids' (or "
            "'indexes') and optionally 'scores' (Detectron's format)."
        )
    ids, boxes = list(data[id_field]), list(data["boxes"])
    scores = None if data.get("scores") is None else list(data["scores"])
    if len(boxes) != len(ids) or (scores is not None and len(scores) != len(ids)):
        raise ValueError(
            f"{path}: {len(ids)} {id_field}, {len(boxes)} boxes and "
            f"{'no' if scores is None else len(scores)} scores; they must have one entry per image."
        )
    for i, image_id in enumerate(ids):
        b = np.asarray(boxes[i], np.float32)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(
                f"{path}: the boxes of image {image_id!r} have shape {b.shape}, not (n, 4)."
            )
        boxes[i] = b
        if scores is not None:
            s = np.asarray(scores[i], np.float32).reshape(-1)
            if len(s) != len(b):
                raise ValueError(
                    f"{path}: image {image_id!r} has {len(b)} boxes and {len(s)} scores."
                )
            scores[i] = s
    return ids, boxes, scores


def load(path: str, dataset: DetectionSet, *, max_proposals: int) -> tuple[np.ndarray, np.ndarray]:
    """The proposals of ``dataset``'s images, in its order, padded to ``max_proposals``.

    Per image the ``max_proposals`` best by score (stable: ties keep the file's order), or the
    file's first ones when it has no scores. Ids of the file that are not in ``dataset`` are
    ignored (their count is logged).

    Returns:
        boxes: (num_images, max_proposals, 4) float32, continuous original-image coordinates
            ``(x1, y1, x2 + 1, y2 + 1)`` of the file's inclusive boxes; 0 where not valid.
        valid: (num_images, max_proposals) bool.

    Raises:
        ValueError: a malformed file, or images of ``dataset`` the file does not have.
    """
    if max_proposals < 1:
        raise ValueError(f"max_proposals={max_proposals} must be at least 1.")
    ids, file_boxes, file_scores = _read(path)
    where = {_key(image_id): i for i, image_id in enumerate(ids)}
    wanted = [_key(a.image_id) for a in dataset.annotations]
    absent = [
        a.image_id for a, k in zip(dataset.annotations, wanted, strict=True) if k not in where
    ]
    if absent:
        raise ValueError(
            f"{path} has no proposals for {len(absent)} of the {dataset.num_images} images of "
            f"{dataset.name}, e.g. {absent[:3]} (the file has {len(ids)} images, e.g. "
            f"{[str(i) for i in ids[:3]]}): it is for another split or set."
        )
    extra = len(set(where) - set(wanted))
    if extra:
        _log.info("%s: %d images not in %s are ignored.", path, extra, dataset.name)
    boxes = np.zeros((dataset.num_images, max_proposals, 4), np.float32)
    valid = np.zeros((dataset.num_images, max_proposals), bool)
    for row, key in enumerate(wanted):
        i = where[key]
        b = file_boxes[i]
        if file_scores is not None:
            b = b[np.argsort(-file_scores[i], kind="stable")]
        b = b[:max_proposals]
        boxes[row, : len(b)] = b + np.asarray([0, 0, 1, 1], np.float32)
        valid[row, : len(b)] = True
    return boxes, valid


def save(
    path: str,
    image_ids: Sequence[Any],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray] | None = None,
) -> None:
    """Writes proposals in Detectron's format (pickle protocol 2), atomically.

    image_ids: one per image, written as given ("ids"). boxes: per image (n_i, 4) continuous
    ``(x1, y1, x2, y2)``, written as 0-based inclusive ``(x1, y1, x2 - 1, y2 - 1)``. scores: per
    image (n_i,), or None for none.
    """
    if len(boxes) != len(image_ids) or (scores is not None and len(scores) != len(image_ids)):
        raise ValueError(
            f"save({path!r}): {len(image_ids)} image ids, {len(boxes)} boxes, "
            f"{'no' if scores is None else len(scores)} scores; one entry per image each."
        )
    inclusive = [
        np.asarray(b, np.float32).reshape(-1, 4) - np.asarray([0, 0, 1, 1], np.float32)
        for b in boxes
    ]
    data: dict[str, Any] = {"boxes": inclusive, "ids": list(image_ids)}
    if scores is not None:
        data["scores"] = [np.asarray(s, np.float32).reshape(-1) for s in scores]
    paths.write_bytes(path, pickle.dumps(data, protocol=2))
