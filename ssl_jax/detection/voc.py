"""VOC-style detection sets: per-image boxes, classes and difficult flags, from a VOCdevkit folder
or from TFDS.

Box convention here is VOC's own: 1-based inclusive pixel coordinates
``[xmin, ymin, xmax, ymax]`` in the original image. The input pipeline turns them into the
model's continuous coordinates (``(xmin - 1, ymin - 1, xmax, ymax)`` times the resize scale).

    test = read_devkit("/data/VOCdevkit", "test")         # or gs://.../VOCdevkit
    voc0712 = union(read_tfds("voc/2007", "trainval"), read_tfds("voc/2012", "trainval"))
    train = with_objects(voc0712)    # no image without boxes
    train.skipped    # {"missing_image": 0, "box_clipped": 0, "box_dropped": 0, ...}
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from ssl_jax import paths
from ssl_jax.config_lib import ConfigError

_log = logging.getLogger(__name__)

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


# Reasons for DetectionSet.skipped, always all present so results from different sets line up.
SKIP_REASONS = ("missing_image", "box_clipped", "box_dropped", "no_objects")

# TFDS's voc/2007 splits for each devkit split name.
_TFDS_SPLITS = {
    "trainval": ("train", "validation"),
    "train": ("train",),
    "val": ("validation",),
    "validation": ("validation",),
    "test": ("test",),
}


# ----------------------------------------------------------------------------------------------
# Classes and boxes, shared by both readers.


def _class_names(
    classes: str | Sequence[str] | None, found: Sequence[str], config_key: str
) -> tuple[str, ...]:
    """The set's class names: VOC's 20 (None), the names found ("auto": VOC's first, in VOC's
    order, then the others sorted), or the given sequence."""
    if classes is None:
        return VOC_CLASSES
    if isinstance(classes, str):
        if classes != "auto":
            raise ConfigError(
                f"{config_key}.classes={classes!r}: allowed are None (VOC's 20 classes), 'auto' "
                "(the names in the annotations) or a list of class names."
            )
        voc = [c for c in VOC_CLASSES if c in set(found)]
        return tuple(voc + sorted(set(found) - set(VOC_CLASSES)))
    names = tuple(str(c).strip().lower() for c in classes)
    if not names or len(set(names)) != len(names) or "" in names:
        raise ConfigError(
            f"{config_key}.classes={list(classes)!r} must be a non-empty list of distinct "
            "class names (or None for VOC's 20, or 'auto')."
        )
    return names


def _unknown_class(name: str, where: str, classes: Sequence[str], config_key: str) -> ConfigError:
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    return ConfigError(
        f"{where}: object class {name!r} is not one of the {len(classes)} classes ({shown}). "
        f"Add it to {config_key}.classes, or set {config_key}.classes='auto' to take the "
        "names found in the annotations."
    )


def _clean_boxes(
    boxes: np.ndarray, width: int, height: int, skipped: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Clips VOC boxes (G, 4) to [1, width] x [1, height]; returns (boxes, kept mask).

    A box with xmax < xmin or ymax < ymin, or wholly outside the image, is dropped
    ("box_dropped"); one partly outside is clipped ("box_clipped").
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    keep = (
        np.isfinite(boxes).all(axis=1)
        & (x2 >= x1)
        & (y2 >= y1)
        & (x1 <= width)
        & (x2 >= 1)
        & (y1 <= height)
        & (y2 >= 1)
    )
    clipped = np.stack(
        [
            np.clip(x1, 1, width),
            np.clip(y1, 1, height),
            np.clip(x2, 1, width),
            np.clip(y2, 1, height),
        ],
        axis=1,
    )
    changed = keep & (clipped != boxes).any(axis=1)
    skipped["box_dropped"] += int((~keep).sum())
    skipped["box_clipped"] += int(changed.sum())
    return np.where(keep[:, None], clipped, boxes).astype(np.float32), keep


def _annotation(
    image_id: str,
    width: int,
    height: int,
    objects: list[tuple[int, tuple[float, float, float, float], bool]],
    skipped: dict[str, int],
) -> Annotation:
    boxes = np.asarray([b for _, b, _ in objects], np.float64).reshape(-1, 4)
    boxes, keep = _clean_boxes(boxes, width, height, skipped)
    classes = np.asarray([c for c, _, _ in objects], np.int32)[keep]
    difficult = np.asarray([d for _, _, d in objects], bool)[keep]
    if not keep.any():
        skipped["no_objects"] += 1
    return Annotation(image_id, width, height, boxes[keep], classes, difficult)


def _log_skipped(name: str, skipped: Mapping[str, int]) -> None:
    changed = {reason: n for reason, n in skipped.items() if n}
    if changed:
        _log.warning("%s: %s", name, ", ".join(f"{n} {reason}" for reason, n in changed.items()))


# ----------------------------------------------------------------------------------------------
# An extracted VOCdevkit folder.


def devkit_root(path: str, year: str, config_key: str) -> str:
    """The VOC<year> folder: ``path`` itself or path/VOC<year>."""
    path = path.rstrip("/") or "/"
    candidates = (path, paths.join(path, f"VOC{year}"))
    for root in candidates:
        if paths.isdir(paths.join(root, "ImageSets", "Main")):
            return root
    raise FileNotFoundError(
        f"{config_key}.path={path!r} is not a VOCdevkit: found no ImageSets/Main in "
        f"{' or '.join(candidates)}. Point {config_key}.path at VOCdevkit/ or "
        f"VOCdevkit/VOC{year}/ (set {config_key}.year for another year)."
    )


def _parse_xml(xml_path: str) -> tuple[int, int, list[tuple[str, tuple, bool]]]:
    """(width, height, [(name, (xmin, ymin, xmax, ymax), difficult)]) of one annotation file."""
    try:
        root = ElementTree.fromstring(paths.read_bytes(xml_path))
        size = root.find("size")
        width = int(float(size.find("width").text)) if size is not None else 0
        height = int(float(size.find("height").text)) if size is not None else 0
        objects = []
        for obj in root.findall("object"):
            name = obj.find("name").text.strip().lower()
            box = obj.find("bndbox")
            coords = tuple(float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = obj.find("difficult")
            flag = difficult is not None and int(float(difficult.text or 0)) == 1
            objects.append((name, coords, flag))
    except FileNotFoundError:
        raise
    except (ElementTree.ParseError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(
            f"{xml_path} is not a VOC annotation ({type(e).__name__}: {e}): each <object> needs "
            "<name> and <bndbox> with numeric <xmin> <ymin> <xmax> <ymax>."
        ) from None
    return width, height, objects


def _image_size(image: bytes) -> tuple[int, int]:

    with Image.open(io.BytesIO(image)) as im:
        return im.size


def read_devkit(
    path: str,
    split: str,
    *,
    year: str = "2007",
    classes: str | Sequence[str] | None = None,
    config_key: str = "config.data",
) -> DetectionSet:
    """A detection split from a VOCdevkit folder (local or gs://).

    Reads ImageSets/Main/<split>.txt, then per image Annotations/<id>.xml and
    JPEGImages/<id>.jpg. Boxes stay VOC's 1-based inclusive pixels; ``difficult`` comes from
    <difficult> (missing: 0); class names are compared lower-cased. Images are read on demand by
    ``image_bytes``.

    What is left out or changed is counted in ``skipped`` and logged: a listed image whose JPEG
    is missing is skipped ("missing_image"); a box partly outside the image is clipped to
    [1, width] x [1, height] ("box_clipped"); a box with xmax < xmin or ymax < ymin, or wholly
    outside the image, is dropped ("box_dropped"). An image without boxes is kept (a valid test
    image) and counted ("no_objects"); ``with_objects`` removes those for training.

    Args:
        path: VOCdevkit/ or VOCdevkit/VOC<year>/.
        split: the ImageSets/Main list: "trainval", "test", "train", "val".
        year: the VOC year, to find VOC<year>/ inside VOCdevkit/.
        classes: None for VOC's 20 classes; "auto" for the names in the split's annotations
            (VOC's first, in VOC's order, then the others sorted); or a sequence of names.
        config_key: where the dataset's config sits, for error messages.

    Raises:
        FileNotFoundError: no ImageSets/Main, no split list, or a listed id without its XML.
        ValueError: a malformed XML (named).
        ConfigError: an object class not in ``classes`` (the name, the file and the fix).
    """
    root = devkit_root(path, year, config_key)
    list_path = paths.join(root, "ImageSets", "Main", f"{split}.txt")
    if not paths.exists(list_path):
        raise FileNotFoundError(
            f"{config_key}.split={split!r}: no {list_path}. Check {config_key}.split (trainval | "
            f"test | train | val) and that the {split} archive was extracted into "
            f"{config_key}.path={path!r}."
        )
    ids = [line.split()[0] for line in paths.read_text(list_path).splitlines() if line.strip()]
    jpeg_dir = paths.join(root, "JPEGImages")
    present = set(paths.listdir(jpeg_dir)) if paths.isdir(jpeg_dir) else set()
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    parsed, missing = [], []
    for image_id in ids:
        xml_path = paths.join(root, "Annotations", f"{image_id}.xml")
        if not paths.exists(xml_path):
            raise FileNotFoundError(
                f"{xml_path} is missing: {list_path} lists {image_id!r} but it has no "
                f"annotation. Extract the {split} archive again into {config_key}.path={path!r}."
            )
        width, height, objects = _parse_xml(xml_path)
        if f"{image_id}.jpg" not in present:
            missing.append(paths.join(jpeg_dir, f"{image_id}.jpg"))
            continue
        if width <= 0 or height <= 0:  # no <size>: the image itself says
            width, height = _image_size(paths.read_bytes(paths.join(jpeg_dir, f"{image_id}.jpg")))
        parsed.append((image_id, xml_path, width, height, objects))
    if missing:
        skipped["missing_image"] = len(missing)
        _log.warning(
            "VOC%s %s: %d of the %d listed images have no JPEG and are skipped, e.g. %s",
            year, split, len(missing), len(ids), missing[0],
        )  # fmt: skip
    names = _class_names(classes, [n for *_, objs in parsed for n, _, _ in objs], config_key)
    index = {name: i for i, name in enumerate(names)}
    annotations = []
    for image_id, xml_path, width, height, objects in parsed:
        for name, _, _ in objects:
            if name not in index:
                raise _unknown_class(name, xml_path, names, config_key)
        triples = [(index[n], box, d) for n, box, d in objects]
        annotations.append(_annotation(image_id, width, height, triples, skipped))
    name = f"vocdevkit:{root}:{split}"
    _log_skipped(name, {k: v for k, v in skipped.items() if k != "missing_image"})
    image_paths = [paths.join(jpeg_dir, f"{a.image_id}.jpg") for a in annotations]
    return DetectionSet(
        name=name,
        classes=names,
        annotations=tuple(annotations),
        image_bytes=lambda i: paths.read_bytes(image_paths[i]),
        skipped=skipped,
    )


# ----------------------------------------------------------------------------------------------
# TFDS's voc builder.


def tfds_box_to_voc(bbox: np.ndarray, width: int, height: int) -> np.ndarray:
    """TFDS's normalised ``(ymin, xmin, ymax, xmax)`` -> VOC's 1-based ``[xmin, ymin, xmax, ymax]``.

    TFDS's voc builder stored ``(ymin / height, xmin / width, ymax / height, xmax / width)`` of
    the devkit's 1-based pixel values, as float32. Multiplying back gives them within float32
    error (< 1e-3 pixel for any VOC size); values that close to an integer are snapped to it, so
    a TFDS annotation equals the devkit one.
    """
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    scale = np.asarray([width, height, width, height], np.float64)
    boxes = bbox[:, [1, 0, 3, 2]] * scale
    nearest = np.round(boxes)
    return np.where(np.abs(boxes - nearest) < 1e-3, nearest, boxes)


def _prepared_builder(name: str, data_dir: str | None, config_key: str, download: bool = False):
    """The TFDS builder of a prepared dataset (prepared here first with ``download``), or a
    ConfigError saying how to prepare it."""
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise ConfigError(
            f"{config_key}.name={name!r} is not a TFDS dataset ({e}); use 'voc/2007' or 'voc/2012'."
        ) from None
    if download and not builder.is_prepared():
        builder.download_and_prepare()
    if not builder.is_prepared():
        searched = os.fspath(builder.data_dir)
        root = data_dir or "<a TFDS data_dir>"
        raise ConfigError(
            f"The TFDS dataset {name!r} is not prepared: nothing at {searched} "
            f"({config_key}.data_dir={data_dir!r}). Nothing is downloaded here. Prepare it once "
            f"on a machine with network with\n  tfds build {name} --data_dir={root}\nand set "
            f"{config_key}.data_dir; or extract the VOC archives and use the vocdevkit source "
            f"({config_key}.source='vocdevkit', {config_key}.path=<the VOCdevkit folder>)."
        )
    return builder


def prepare_tfds(
    name: str = "voc/2007",
    data_dir: str | None = None,
    *,
    download: bool = False,
    config_key: str = "config.data",
) -> dict[str, int]:
    """Checks that a TFDS VOC dataset is ready for ``read_tfds``; with ``download``, downloads
    and prepares it in ``data_dir`` first unless it is there (the one place ssl_jax downloads,
    and only when asked: notebooks). Returns its split sizes.

    Raises:
        ConfigError: not prepared and ``download`` False (the message says how to prepare it),
            or ``name`` not a TFDS dataset.
    """
    builder = _prepared_builder(name, data_dir, config_key, download)
    return {split: info.num_examples for split, info in builder.info.splits.items()}


def read_tfds(
    name: str = "voc/2007",
    split: str = "trainval",
    *,
    data_dir: str | None = None,
    classes: str | Sequence[str] | None = None,
    config_key: str = "config.data",
) -> DetectionSet:
    """A detection split from a prepared TFDS VOC dataset ("voc/2007", "voc/2012").

    Reads TFDS's "image" (kept encoded), "image/filename" (the image id is the name without
    its extension, the devkit's id), "objects/bbox" (converted back to VOC's 1-based pixels,
    ``tfds_box_to_voc``; the size comes from the image's header), "objects/label" and
    "objects/is_difficult". Boxes are cleaned and counted as in ``read_devkit``. All encoded
    images are held in memory: a VOC split is at most about 2 GB (VOC07+12 trainval); use
    ``read_devkit`` where that is too much. Nothing is ever downloaded.

    Args:
        name: the TFDS name with its config.
        split: "trainval" (TFDS's train + validation), "train", "val" / "validation", "test"
            (voc/2012's test has no annotations: every image counts as "no_objects").
        data_dir: the TFDS data_dir (None: TFDS's default).
        classes: as in ``read_devkit``.
        config_key: where the dataset's config sits, for error messages.

    Raises:
        ConfigError: an unknown dataset or split, a dataset not prepared (the message says how
            to prepare it), or an object class not in ``classes``.
    """
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    builder = _prepared_builder(name, data_dir, config_key)
    available = set(builder.info.splits)
    if split in available:
        parts: tuple[str, ...] = (split,)
    elif split in _TFDS_SPLITS and (not available or set(_TFDS_SPLITS[split]) <= available):
        parts = _TFDS_SPLITS[split]  # (a mocked builder's info has no splits)
    else:
        allowed = available | {s for s, p in _TFDS_SPLITS.items() if set(p) <= available}
        raise ConfigError(
            f"{config_key}.split={split!r} is not a split of {name}; allowed: "
            f"{', '.join(sorted(allowed))}."
        )
    label_names = builder.info.features["objects"]["label"].names
    decoders = tfds.decode.PartialDecoding(
        {
            "image": True,
            "image/filename": True,
            "objects": {"bbox": True, "label": True, "is_difficult": True},
        },
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    records = []
    for part in parts:
        stream = builder.as_dataset(split=part, shuffle_files=False, decoders=decoders)
        for example in tfds.as_numpy(stream):
            filename = example["image/filename"].decode("utf-8")
            objects = example["objects"]
            found = [label_names[int(c)] for c in objects["label"]]
            records.append((filename, example["image"], objects, found))
    names = _class_names(classes, [n for *_, found in records for n in found], config_key)
    index = {n: i for i, n in enumerate(names)}
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    annotations, images = [], []
    for filename, image, objects, found in records:
        for n in found:
            if n not in index:
                raise _unknown_class(n, f"{name} {split} {filename}", names, config_key)
        width, height = _image_size(image)
        boxes = tfds_box_to_voc(objects["bbox"], width, height)
        triples = [
            (index[n], tuple(box), bool(d))
            for n, box, d in zip(found, boxes, objects["is_difficult"], strict=True)
        ]
        image_id = re.sub(r"\.[^./]*$", "", filename)
        annotations.append(_annotation(image_id, width, height, triples, skipped))
        images.append(image)
    set_name = f"tfds:{name}:{split}"
    _log_skipped(set_name, skipped)
    return DetectionSet(
        name=set_name,
        classes=names,
        annotations=tuple(annotations),
        image_bytes=images.__getitem__,
        skipped=skipped,
    )


# ----------------------------------------------------------------------------------------------
# Combining and filtering sets.


def with_objects(dataset: DetectionSet) -> DetectionSet:
    """The images of ``dataset`` with at least one box (difficult ones count), for training;
    the others are counted in ``skipped["no_objects_dropped"]``."""
    kept = [i for i, a in enumerate(dataset.annotations) if len(a.boxes)]
    skipped = dict(dataset.skipped)
    skipped["no_objects_dropped"] = skipped.get("no_objects_dropped", 0) + (
        dataset.num_images - len(kept)
    )
    source = dataset.image_bytes
    return dataclasses.replace(
        dataset,
        annotations=tuple(dataset.annotations[i] for i in kept),
        image_bytes=lambda i: source(kept[i]),
        skipped=skipped,
    )


def evenly_spaced(dataset: DetectionSet, count: int) -> DetectionSet:
    """``count`` images of ``dataset`` spread evenly over its order (the first, then every
    ``num_images / count``-th), so that a split listed class by class shows more than its
    first class; all of them when ``count`` is 0 or at least ``num_images``. The name says
    which subset it is ("...:test[8 of 91]"). For a quick look, not for numbers to compare
    with the benchmark's."""
    n = dataset.num_images
    if count < 0:
        raise ValueError(f"evenly_spaced({dataset.name}, count={count}): count must be >= 0.")
    if count == 0 or count >= n:
        return dataset
    kept = [i * n // count for i in range(count)]
    source = dataset.image_bytes
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}[{count} of {n}]",
        annotations=tuple(dataset.annotations[i] for i in kept),
        image_bytes=lambda i: source(kept[i]),
    )


def union(a: DetectionSet, b: DetectionSet) -> DetectionSet:
    """``a``'s images then ``b``'s (VOC07+12 trainval); both must have the same classes and no
    image id in common."""
    if a.classes != b.classes:
        raise ValueError(
            f"Cannot join {a.name} and {b.name}: their classes differ ({list(a.classes)} vs "
            f"{list(b.classes)}). Read both with the same classes= (e.g. None for VOC's 20)."
        )
    common = sorted({x.image_id for x in a.annotations} & {x.image_id for x in b.annotations})
    if common:
        raise ValueError(
            f"Cannot join {a.name} and {b.name}: {len(common)} image ids are in both, e.g. "
            f"{common[:3]}."
        )
    n = a.num_images
    skipped = {k: a.skipped.get(k, 0) + b.skipped.get(k, 0) for k in {**a.skipped, **b.skipped}}
    return DetectionSet(
        name=f"{a.name}+{b.name}",
        classes=a.classes,
        annotations=a.annotations + b.annotations,
        image_bytes=lambda i: a.image_bytes(i) if i < n else b.image_bytes(i - n),
        skipped=skipped,
    )
