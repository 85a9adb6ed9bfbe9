"""VOC-style detection sets: per-image boxes, classes and difficult flags, from a VOCdevkit folder
or from TFDS.

Box convention here is VOC's own: 1-based inclusive pixel coordinates
``[xmin, ymin, xmax, ymax]`` in the original image. The input pipeline turns them into the
model's continuous coordinates (``(xmin - 1, ymin - 1, xmax, ymax)`` times the resize scale).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# PASCAL VOC's 20 classes in the devkit's order (the index + 1 is the detector's class id).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One image's objects.

    image_id: the devkit's id ("000005") or TFDS's file name without extension.
    width, height: the original image size in pixels.
    boxes: (G, 4) float32, VOC 1-based inclusive ``[xmin, ymin, xmax, ymax]``.
    classes: (G,) int32 in ``[0, num_classes)``, indices into the set's ``classes``.
    difficult: (G,) bool.
    """

    image_id: str
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray


@dataclasses.dataclass(frozen=True)
class DetectionSet:
    """A split of a detection set.

    name: where it comes from, for logs and results ("vocdevkit:/path/VOC2007:trainval").
    classes: class names; an annotation's class c is ``classes[c]``.
    annotations: one per image, in the split's order.
    image_bytes: ``index -> encoded image bytes`` of ``annotations[index]``.
    skipped: what was left out or changed while reading, reason -> count (logged, in results).
    """

    name: str
    classes: tuple[str, ...]
    annotations: tuple[Annotation, ...]
    image_bytes: Callable[[int], bytes]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.annotations)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
