"""Where pretraining images come from: a TFDS dataset, an image folder, a file list, or the demo.

Every source gives the pipeline the same things:
- `num_examples`: the global number of records (all processes), which defines an epoch;
- `class_names`: label names in label order, or None when unknown;
- `shard_size(process_index, process_count)`: the number of records this process reads per epoch;
- `epoch_records(epoch, first, ...)`: a tf.data.Dataset of this process's raw records of one
  epoch, in that epoch's shuffled order, starting at position `first`: dicts with "epoch" and
  "index" (int64, the position in the shuffled order), "label" (int32, -1 if unlabelled) and
  the source's own fields;
- `decode(record, ...)`: (image (H, W, 3) uint8, ok bool) for one record, skipping bad files.

Shuffling is a deterministic function of (seed, epoch, process_index): a NumPy permutation of
the shard for file and demo sources; for TFDS, a file-order shuffle and an element shuffle
buffer, both seeded from the same three numbers.

config.data.data_size cuts any source to a nested, deterministic subset (see subsets.py).
"""

from __future__ import annotations

from ssl_jax.data import subsets
from ssl_jax.data.demo import DemoSource, demo_source
from ssl_jax.data.files import FileSource, filelist_source, folder_source
from ssl_jax.data.tfds_source import TfdsSource, tfds_source

SOURCES = ("tfds", "folder", "filelist", "demo")

Source = FileSource | DemoSource | TfdsSource


def make_source(data_config) -> Source:
    """The source named by config.data.source, from the other config.data fields.

    Reads config.data: source, and name, split, data_dir (tfds), path (folder, filelist),
    demo_size (demo); then data_size (0: all) keeps the first images in subset order.
    """
    return subsets.take_subset(_full_source(data_config), data_config.get("data_size", 0) or 0)


def _full_source(data_config) -> Source:
    kind = data_config.source
    if kind == "tfds":
        return tfds_source(data_config.name, data_config.split, data_config.get("data_dir"))
    if kind in ("folder", "filelist"):
        path = data_config.get("path")
        if not path:
            raise ValueError(
                f"config.data.source={kind!r} needs config.data.path (the image "
                f"{'folder' if kind == 'folder' else 'list file'})."
            )
        return folder_source(path) if kind == "folder" else filelist_source(path)
    if kind == "demo":
        return demo_source(int(data_config.get("demo_size", 2048)))
    raise ValueError(f"config.data.source={kind!r} is not one of {', '.join(SOURCES)}.")
