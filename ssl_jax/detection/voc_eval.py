"""PASCAL VOC detection AP: the devkit's rule, as Detectron's ``voc_eval`` computes it.

Per class, detections are ranked by score (descending; ties keep their input order) and each
is matched to the ground-truth box of the class in its image with the largest IoU, boxes in VOC
1-based inclusive pixels (+1 in widths and heights). IoU > ``iou_threshold`` (strictly): a
difficult box makes the detection neither TP nor FP; an unused non-difficult box makes it a TP
and is then used; a used one makes it a FP. Below the threshold, or on an image without a box of
the class, it is a FP. Recall is over the non-difficult boxes.

    result = evaluate(detections, dataset.annotations, dataset.classes)
    result["mAP"]      # VOC2007 11-point mAP in percent; result["mAP_all_points"] beside
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ssl_jax.detection.voc import Annotation


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP (a fraction) of one class from its cumulative recall and precision (by rank).

    use_07_metric: VOC2007's 11-point rule, the mean over t in {0, 0.1, ..., 1} of the largest
    precision at recall >= t (0 where recall never reaches t). Else the all-points rule (VOC2010
    on): the area under the precision envelope (precision made non-increasing) over recall.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = recall >= t
            ap += (np.max(precision[reached]) if reached.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _iou(box: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (G, 4), VOC pixels: inclusive, so +1 in widths."""
    iw = np.maximum(np.minimum(gt[:, 2], box[2]) - np.maximum(gt[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gt[:, 3], box[3]) - np.maximum(gt[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    gt_area = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    return inter / (area + gt_area - inter)


def _check(detections: Sequence[Mapping[str, Any]], ids: set[str], classes: Sequence[str]):
    """(image ids, class indices, scores (D,), boxes (D, 4)) of valid detections."""
    index = {name: c for c, name in enumerate(classes)}
    image_ids, labels, scores, boxes = [], [], [], []
    for k, det in enumerate(detections):
        try:
            image_id, name = str(det["image_id"]), det["class"]
            score, box = float(det["score"]), np.asarray(det["box"], np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"Detection {k} ({det!r}) is not {{'image_id', 'class', 'score', 'box': "
                f"[xmin, ymin, xmax, ymax]}}: {type(e).__name__}: {e}"
            ) from None
        if image_id not in ids:
            shown = ", ".join(sorted(ids)[:3])
            raise ValueError(
                f"Detection {k}: image_id {image_id!r} is not an image of the annotations "
                f"({len(ids)} images, e.g. {shown}): are the detections for another split?"
            )
        if name not in index:
            raise ValueError(
                f"Detection {k}: class {name!r} is not one of the classes {list(classes)}."
            )
        if box.shape != (4,) or not np.isfinite(box).all() or not np.isfinite(score):
            raise ValueError(
                f"Detection {k}: box {det['box']!r} / score {score!r} must be 4 finite numbers "
                "[xmin, ymin, xmax, ymax] (VOC 1-based pixels) and a finite number."
            )
        image_ids.append(image_id)
        labels.append(index[name])
        scores.append(score)
        boxes.append(box)
    return image_ids, np.asarray(labels, np.int64), np.asarray(scores), np.reshape(boxes, (-1, 4))


def _evaluate_class(
    image_ids: list[str],
    scores: np.ndarray,
    boxes: np.ndarray,
    gt: Mapping[str, tuple[np.ndarray, np.ndarray]],
    npos: int,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (recall, precision) of one class's detections by rank."""
    order = np.argsort(-scores, kind="stable")
    used = {image_id: np.zeros(len(g[0]), bool) for image_id, g in gt.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, d in enumerate(order):
        gt_boxes, difficult = gt.get(image_ids[d], (np.zeros((0, 4)), np.zeros(0, bool)))
        if not len(gt_boxes):
            fp[rank] = 1
            continue
        overlaps = _iou(boxes[d], gt_boxes)
        j = int(np.argmax(overlaps))
        if overlaps[j] > iou_threshold:
            if difficult[j]:
                continue
            if used[image_ids[d]][j]:
                fp[rank] = 1
            else:
                tp[rank] = 1
                used[image_ids[d]][j] = True
        else:
            fp[rank] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


def evaluate(
    detections: Sequence[Mapping[str, Any]],
    annotations: Sequence[Annotation],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """VOC AP per class and their mean, 11-point (VOC2007, the paper's) and all-points.

    Args:
        detections: ``{"image_id": str, "class": name, "score": float, "box": [xmin, ymin,
            xmax, ymax]}`` in VOC 1-based pixels of the original image.
        annotations: the ground truth (a DetectionSet's ``annotations``); every image counts,
            also those without detections.
        classes: the names of the annotations' class indices (a DetectionSet's ``classes``).
        iou_threshold: a detection matches a box at IoU strictly above it.

    Returns:
        ``{"classes": {name: {"ap", "ap_all_points", "num_gt"}}, "mAP", "mAP_all_points",
        "num_images", "num_detections", "iou_threshold"}``, APs in percent. ``num_gt`` counts
        the non-difficult boxes; a class with none has AP None and is left out of the means
        (which are None if no class has a box).

    Raises:
        ValueError: a detection on an image not in ``annotations``, of a class not in
            ``classes``, or malformed.
    """
    classes = tuple(classes)
    gt_ids = [a.image_id for a in annotations]
    if len(set(gt_ids)) != len(gt_ids):
        raise ValueError("The annotations list an image id twice; ids must be unique.")
    image_ids, labels, scores, boxes = _check(detections, set(gt_ids), classes)
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        gt, npos = {}, 0
        for a in annotations:
            mine = np.asarray(a.classes) == c
            if mine.any():
                difficult = np.asarray(a.difficult, bool)[mine]
                gt[a.image_id] = (np.asarray(a.boxes, np.float64)[mine], difficult)
                npos += int((~difficult).sum())
        if npos == 0:
            per_class[name] = {"ap": None, "ap_all_points": None, "num_gt": 0}
            continue
        keep = np.flatnonzero(labels == c)
        recall, precision = _evaluate_class(
            [image_ids[k] for k in keep], scores[keep], boxes[keep], gt, npos, iou_threshold
        )
        per_class[name] = {
            "ap": 100.0 * voc_ap(recall, precision, use_07_metric=True),
            "ap_all_points": 100.0 * voc_ap(recall, precision, use_07_metric=False),
            "num_gt": npos,
        }

    def mean(key: str) -> float | None:
        values = [v[key] for v in per_class.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "classes": per_class,
        "mAP": mean("ap"),
        "mAP_all_points": mean("ap_all_points"),
        "num_images": len(gt_ids),
        "num_detections": len(image_ids),
        "iou_threshold": iou_threshold,
    }
