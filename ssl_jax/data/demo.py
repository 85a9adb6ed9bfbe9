"""The built-in demo set: random crops of a few photos shipped inside the package.

It lets the main command run offline on a fresh machine (`:runlocal` configs). The photos and
their licences are in demo_photos/ (see demo_photos/LICENSES.md).
"""

from __future__ import annotations

import dataclasses
import importlib.resources

import numpy as np
import tensorflow as tf

from ssl_jax.data import decode as decode_lib
from ssl_jax.data import records

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Fixed so that every run, whatever config.seed, sees the same demo images.
DEMO_SEED = 20190605
DEMO_SCALE = (0.1, 1.0)  # crop area as a fraction of the photo's area
DEMO_ASPECT = (3 / 4, 4 / 3)  # crop width / height


@dataclasses.dataclass(frozen=True, eq=False)
class DemoSource:
    """The built-in demo set: random crops of a few photos shipped in the package.

    Example i is a crop box of photo i % num_photos (area 10-100% of the photo, aspect 3/4-4/3)
    drawn from a fixed seed, so every run sees the same images; its label is the photo's index.

    Attributes:
        photos: the decoded photos, (H, W, 3) uint8 each.
        class_names: photo names (file stems) in label order.
        boxes: (N, 4) int32 crop boxes (top, left, height, width) in photo pixels.
        labels: (N,) int32 photo index of each example.
        ids: (N,) object array of UTF-8 image ids, each example's index in the full demo set
            (it survives subsetting, see subsets.py); None means 0..N-1.
        data_size: config.data.data_size this source was cut to (0: all of it).
    """

    photos: tuple[np.ndarray, ...]
    class_names: tuple[str, ...]
    boxes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    data_size: float = 0

    kind = "demo"

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def shard_size(self, process_index: int, process_count: int) -> int:
        return records.strided_shard_size(self.num_examples, process_index, process_count)

    def epoch_records(
        self,
        epoch: tf.Tensor,
        first: tf.Tensor,
        *,
        seed: int,
        process_index: int,
        process_count: int,
        shuffle_buffer: int,
    ) -> tf.data.Dataset:
        del shuffle_buffer  # the whole shard is permuted
        return records.strided_epoch(
            {"box": self.boxes, "label": self.labels},
            epoch,
            first,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            what="the demo set",
        )

    def ordered_records(self, process_index: int, process_count: int) -> tf.data.Dataset:
        """This process's records in the fixed order (rows p, p + n, ...), with "position"."""
        return records.ordered_shard(
            {"box": self.boxes, "label": self.labels}, process_index, process_count
        )

    def take(self, rows: np.ndarray) -> DemoSource:
        """The examples at ``rows``, in that order (ids follow: each keeps its demo index)."""
        ids = (
            self.ids
            if self.ids is not None
            else np.asarray([b"%d" % i for i in range(self.num_examples)], dtype=object)
        )
        return dataclasses.replace(
            self, boxes=self.boxes[rows], labels=self.labels[rows], ids=ids[rows]
        )

    def decode(self, record, *, min_short: int, watch=None, cache=None):
        del min_short, watch, cache  # already decoded, nothing can fail

        def crop(label, box):
            top, left, height, width = (int(v) for v in box)
            return np.ascontiguousarray(self.photos[label][top : top + height, left : left + width])

        image = tf.numpy_function(crop, [record["label"], record["box"]], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        return image, tf.constant(True)


def _demo_boxes(sizes: list[tuple[int, int]], num_examples: int) -> np.ndarray:
    """(num_examples, 4) crop boxes (top, left, height, width); example i crops photo i % P."""
    rng = np.random.default_rng(DEMO_SEED)
    boxes = np.zeros((num_examples, 4), np.int32)
    for i in range(num_examples):
        height, width = sizes[i % len(sizes)]
        for _ in range(10):
            area = rng.uniform(*DEMO_SCALE) * height * width
            aspect = np.exp(rng.uniform(*np.log(DEMO_ASPECT)))
            w = int(round(np.sqrt(area * aspect)))
            h = int(round(np.sqrt(area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                break
        else:  # rare for these ranges: fall back to the largest square
            h = w = min(height, width)
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        boxes[i] = (top, left, h, w)
    return boxes


def demo_source(num_examples: int = 2048) -> DemoSource:
    """The demo set of `num_examples` crops (config.data.demo_size) of the packaged photos."""
    if num_examples <= 0:
        raise ValueError(f"config.data.demo_size={num_examples} must be positive.")
    folder = importlib.resources.files("ssl_jax.data") / "demo_photos"
    entries = sorted(
        (e for e in folder.iterdir() if e.name.lower().endswith(PHOTO_EXTENSIONS)),
        key=lambda e: e.name,
    )
    if not entries:
        raise FileNotFoundError(
            f"No demo photos in {folder}: the package was installed without its data files."
        )
    photos = tuple(decode_lib.decode_image_bytes(e.read_bytes()) for e in entries)
    names = tuple(e.name.rsplit(".", 1)[0] for e in entries)
    boxes = _demo_boxes([p.shape[:2] for p in photos], num_examples)
    labels = (np.arange(num_examples) % len(photos)).astype(np.int32)
    return DemoSource(photos=photos, class_names=names, boxes=boxes, labels=labels)
