"""A TFDS image-classification dataset written as class folders of JPEGs, the layout the
``folder`` sources read (``OUT/SPLIT/CLASS/0000.jpg``): CIFAR-10 on a machine without
../shared/data/cifar10 (a Colab runtime), in the layout of that folder.

    from ssl_jax.data import class_folders
    class_folders.from_tfds("/content/cifar10", "cifar10", {"train": 1000, "test": 200})

This is the one place where ssl_jax downloads a dataset, and only when asked (``download``):
training and the benchmarks read prepared data only.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping

import numpy as np
from PIL import Image

from ssl_jax import paths

_log = logging.getLogger(__name__)

MARKER = "class_folders.json"  # in OUT: what was written, so that a second call writes nothing


def from_tfds(
    out_dir: str,
    name: str = "cifar10",
    per_class: Mapping[str, int] | None = None,
    *,
    data_dir: str | None = None,
    download: bool = True,
    quality: int = 75,
) -> dict[str, int]:
    """Writes the first ``per_class[split]`` images of each class of each split (0: all of
    them, in the split's stored order) as ``out_dir/SPLIT/CLASS/NNNN.jpg`` (local or gs://).

    Args:
      out_dir: the folder to write (created); the splits become its subfolders.
      name: a TFDS dataset with "image" and "label" features (cifar10, cifar100, ...).
      per_class: {split: images per class}; default {"train": 1000, "test": 200}, the size of
        ../shared/data/cifar10 (10,000 training and 2,000 test images for CIFAR-10).
      data_dir: TFDS's data_dir (None: its default, ~/tensorflow_datasets).
      download: download and prepare the dataset first if it is not prepared yet.
      quality: JPEG quality (Pillow's encoder, 4:2:0 chroma; 75, Pillow's default, is what
        ../shared/data/cifar10's JPEGs were written with).

    Returns:
      {split: images in its folders}. A split already written with the same dataset and count
      (``out_dir/class_folders.json``) is not written again.
    """
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    per_class = dict(per_class or {"train": 1000, "test": 200})
    bad = {split: n for split, n in per_class.items() if not isinstance(n, int) or n < 0}
    if bad:
        raise ValueError(f"per_class={per_class}: each split's count must be an integer >= 0.")
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has features {sorted(features)}; class folders need an "
            "'image' and a 'label' feature (an image-classification dataset such as cifar10)."
        )
    if download:
        builder.download_and_prepare()
        # Read back as prepared: some builders (cifar10) learn their class names while preparing.
        builder = tfds.builder(name, data_dir=data_dir)
    elif not paths.exists(paths.join(builder.data_dir, "dataset_info.json")):
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: pass download=True, "
            f"or prepare it first (tfds build {name} --data_dir=DIR) and pass data_dir=DIR."
        )
    unknown = sorted(set(per_class) - set(builder.info.splits))
    if unknown:
        raise ValueError(
            f"per_class names splits {unknown} that TFDS dataset {name!r} does not have; "
            f"its splits: {sorted(builder.info.splits)}."
        )
    class_names = features["label"].names
    marker_path = paths.join(out_dir, MARKER)
    done = paths.read_json(marker_path) if paths.exists(marker_path) else {}
    written = {}
    for split, n in per_class.items():
        record = {"dataset": name, "per_class": n}
        if done.get(split, {}).get("per_class") == n and done[split].get("dataset") == name:
            written[split] = int(done[split]["images"])
            _log.info("%s/%s is already written (%d images)", out_dir, split, written[split])
            continue
        counts = _write_split(builder, split, n, class_names, paths.join(out_dir, split), quality)
        short = [c for c, k in zip(class_names, counts, strict=True) if n and k < n]
        if short:
            _log.warning("%s %s: fewer than %d images in classes %s", name, split, n, short)
        written[split] = int(sum(counts))
        done[split] = dict(record, images=written[split])
        paths.write_json(marker_path, done)
        _log.info("Wrote %d %s images of %s to %s/%s", written[split], split, name, out_dir, split)
    return written


def _write_split(builder, split: str, n: int, class_names, folder: str, quality: int) -> list[int]:
    """Writes up to ``n`` images per class (0: all); returns the count per class."""
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    counts = [0] * len(class_names)
    digits = max(4, len(str((n or builder.info.splits[split].num_examples) - 1)))
    for name in class_names:
        paths.makedirs(paths.join(folder, name))
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    for example in tfds.as_numpy(dataset):
        label = int(example["label"])
        if n and counts[label] >= n:
            if min(counts) >= n:
                break
            continue
        path = paths.join(folder, class_names[label], f"{counts[label]:0{digits}d}.jpg")
        paths.write_bytes(path, jpeg_bytes(example["image"], quality))
        counts[label] += 1
    return counts


def jpeg_bytes(image: np.ndarray, quality: int = 75) -> bytes:
    """An (H, W, 3) or (H, W, 1) uint8 image as JPEG bytes."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()
