"""A prepared TFDS dataset, read without decoding so that bad images can be skipped.

The dataset must already be prepared in config.data.data_dir: nothing here downloads or
prepares data. Process p of n reads `tfds.even_splits(split, n)[p]`. Each epoch shuffles the
order of the shard's files and then the examples (a buffer of config.data.shuffle_buffer), both
seeded from (seed, epoch, process_index).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from ssl_jax.data import decode as decode_lib
from ssl_jax.data import records, subsets


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSource:
    """A prepared TFDS dataset, read without decoding so that bad images can be skipped.

    Attributes:
        builder: the tfds DatasetBuilder (prepared; never downloads).
        split: the split to read, e.g. "train" or "train[:10%]".
        num_examples: examples in the split, all processes together.
        class_names: the "label" feature's names, or None.
        has_label: whether records carry a "label" feature.
        data_size: config.data.data_size this source was cut to (0: all of it).
        threshold: (key, id) of the last image of the subset in subset order, or None for the
            whole split: records after it are filtered out as they stream (see subsets.py).
        rows: increasing positions in the split's stored order of the records kept (``take``),
            or None for all; read by ``ordered_records`` only.
    """

    builder: object
    split: str
    num_examples: int
    class_names: tuple[str, ...] | None
    has_label: bool
    data_size: float = 0
    threshold: tuple[int, bytes] | None = None
    rows: np.ndarray | None = None
    # Per-process subset sizes, cached: counting them lists the split's ids.
    _shard_sizes: dict = dataclasses.field(default_factory=dict, repr=False)

    kind = "tfds"

    def _process_split(self, process_index: int, process_count: int):
        import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

        return tfds.even_splits(self.split, n=process_count)[process_index]

    def shard_size(self, process_index: int, process_count: int) -> int:
        if self.rows is not None:
            return records.strided_shard_size(self.num_examples, process_index, process_count)
        split = self._process_split(process_index, process_count)
        if self.threshold is None:
            return int(self.builder.info.splits[split].num_examples)
        if split not in self._shard_sizes:
            ids = subsets.tfds_ids(self.builder, split)
            self._shard_sizes[split] = int(np.sum(subsets.below(ids, self.threshold)))
        return self._shard_sizes[split]

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
        import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

        if self.rows is not None:
            raise ValueError(
                f"TFDS {self.builder.name} split {self.split!r} cut to chosen records can be read "
                "in order (evaluation) but not trained on: give a contiguous subset (first / "
                "max_examples of one split)."
            )
        records.check_shard(
            self.shard_size(process_index, process_count),
            self.num_examples,
            process_index,
            process_count,
            f"TFDS {self.builder.name} split {self.split!r}",
        )

        def epoch_seeds(epoch_value):
            words = np.random.SeedSequence(records.seed_words(seed, epoch_value, process_index))
            return words.generate_state(2, np.uint64).astype(np.int64) >> 1

        seeds = tf.numpy_function(epoch_seeds, [epoch], tf.int64, stateful=False)
        read_config = tfds.ReadConfig(
            shuffle_seed=seeds[0],
            shuffle_reshuffle_each_iteration=False,
            interleave_cycle_length=16,
            interleave_block_length=1,
            try_autocache=False,
            skip_prefetch=True,
            add_tfds_id=True,
            enable_ordering_guard=False,
        )
        ds = self.builder.as_dataset(
            split=self._process_split(process_index, process_count),
            shuffle_files=True,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        if self.threshold is not None:
            # Before the shuffle and the enumeration: positions count subset records only.
            ds = ds.filter(subsets_filter(self.threshold))
        if shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seeds[1], reshuffle_each_iteration=False)

        has_label = self.has_label

        @tf.autograph.experimental.do_not_convert
        def to_record(index, example):
            label = tf.cast(example["label"], tf.int32) if has_label else tf.constant(-1)
            return {
                "epoch": tf.cast(epoch, tf.int64),
                "index": index,
                "label": label,
                "bytes": example["image"],
                "id": example["tfds_id"],
            }

        # Records before `first` are read (bytes only) to replay the shuffle buffer exactly.
        return ds.enumerate().skip(first).map(to_record)

    def take(self, rows: np.ndarray) -> TfdsSource:
        """The records at increasing positions ``rows`` of the stored order. A contiguous run of
        a plain split becomes a TFDS slice (``train[a:b]``, read like any split); other subsets
        are filtered as the split streams, for ``ordered_records`` (evaluation sets)."""
        rows = np.asarray(rows, np.int64)
        if self.threshold is not None:
            raise ValueError("A TFDS subset by config.data.data_size cannot be cut again.")
        base = self.rows
        contiguous = len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        plain = not any(c in self.split for c in "[+")
        if contiguous and plain and base is None:
            first, last = int(rows[0]), int(rows[0]) + len(rows)
            return dataclasses.replace(
                self, split=f"{self.split}[{first}:{last}]", num_examples=len(rows),
                _shard_sizes={},
            )  # fmt: skip
        kept = rows if base is None else base[rows]
        return dataclasses.replace(self, rows=kept, num_examples=len(kept), _shard_sizes={})

    def ordered_records(self, process_index: int, process_count: int) -> tf.data.Dataset:
        """This process's records in the stored order (positions p, p + n, ...), with
        "position"; every process streams the whole split (bytes only) and keeps its own."""
        import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

        # Only the image (not decoded) and the label: other features (boxes, ...) are not read.
        features = {"image": True, **({"label": True} if self.has_label else {})}
        decoders = tfds.decode.PartialDecoding(
            features, decoders={"image": tfds.decode.SkipDecoding()}
        )
        ds = stored_order(self.builder, self.split, decoders).enumerate()
        if self.rows is not None:
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(self.rows, tf.int64),
                    tf.range(len(self.rows), dtype=tf.int64),
                ),
                default_value=-1,
            )
            ds = ds.map(lambda i, example: (table.lookup(i), example))
            ds = ds.filter(lambda position, example: position >= 0)
        has_label = self.has_label

        @tf.autograph.experimental.do_not_convert
        def mine(position, example):
            return position % process_count == process_index

        @tf.autograph.experimental.do_not_convert
        def to_record(position, example):
            label = tf.cast(example["label"], tf.int32) if has_label else tf.constant(-1)
            return {
                "position": position,
                "label": label,
                "bytes": example["image"],
                "id": example["tfds_id"],
            }

        return ds.filter(mine).map(to_record)

    def decode(self, record, *, min_short: int, watch=None, cache=None):
        return decode_lib.tf_decode(
            record["bytes"],
            record["id"],
            is_path=False,
            min_short=min_short,
            watch=watch,
            cache=cache,
        )


def stored_order(builder, split: str, decoders) -> tf.data.Dataset:
    """The examples of ``split`` in TFDS's stored order, with their "tfds_id"; a union of
    splits ("train+validation") is read one split after the other."""
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    read_config = tfds.ReadConfig(
        interleave_cycle_length=1, try_autocache=False, skip_prefetch=True, add_tfds_id=True
    )
    parts = [
        builder.as_dataset(
            split=part, shuffle_files=False, decoders=decoders, read_config=read_config
        )
        for part in split.split("+")
    ]
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.concatenate(part)
    return stream


def subsets_filter(threshold: tuple[int, bytes]):
    """A tf.data filter predicate keeping the examples whose tfds_id is in the subset."""

    def keep(image_id: bytes) -> np.bool_:
        return np.bool_(subsets.below(np.asarray([image_id], dtype=object), threshold)[0])

    @tf.autograph.experimental.do_not_convert
    def predicate(example):
        kept = tf.numpy_function(keep, [example["tfds_id"]], tf.bool, stateful=False)
        return tf.ensure_shape(kept, [])

    return predicate


def _prepare_hint(name: str, data_dir: str, manual_instructions: str | None) -> str:
    """How to prepare a TFDS dataset, for the error raised when it is missing."""
    run = f"then add --config.data.data_dir={data_dir} to the training command."
    if not manual_instructions:
        return f"Prepare it once with\n  tfds build {name} --data_dir={data_dir}\n{run}"
    if name.startswith("imagenet2012"):
        what = "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org"
    else:
        what = "the files described below"
    hint = (
        f"It needs files you download yourself ({what}). Put them in a folder <manual_dir> "
        f"and prepare the dataset once with\n"
        f"  tfds build {name} --manual_dir=<manual_dir> --data_dir={data_dir}\n{run}"
    )
    if not name.startswith("imagenet2012"):
        hint += "\nTFDS instructions:\n" + manual_instructions.strip()
    return hint


def tfds_source(name: str, split: str, data_dir: str | None) -> TfdsSource:
    """A prepared TFDS dataset (config.data.name/split/data_dir); never downloads or prepares.

    Raises:
        ValueError: the name is unknown to TFDS and not found in data_dir, or the split does not
            exist, or the dataset has no "image" feature.
        FileNotFoundError: the dataset is known but not prepared in data_dir; the message says
            how to prepare it.
    """
    import tensorflow_datasets as tfds  # heavy: imported only where TFDS data is read

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"config.data.name={name!r} is not a TFDS dataset, nor prepared under "
            f"config.data.data_dir={data_dir!r} ({str(e).splitlines()[0]})."
        ) from e
    searched = os.fspath(builder.data_dir)
    # searched is <root>/<name>[/<config>]/<version>; the hint needs <root>.
    marker = f"/{builder.name}/"
    root = data_dir or (searched[: searched.rfind(marker)] if marker in searched else searched)
    if not builder.is_prepared():
        manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        raise FileNotFoundError(
            f"The TFDS dataset {name!r} is not prepared: nothing at {searched} "
            f"(config.data.data_dir={data_dir!r}). Training never downloads datasets. "
            + _prepare_hint(name, root, manual)
        )
    features = builder.info.features
    if "image" not in features:
        raise ValueError(
            f"The TFDS dataset {name!r} has no 'image' feature (it has {sorted(features)}); "
            "config.data.name must name an image dataset."
        )
    try:
        num_examples = int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"config.data.split={split!r} is not a split of {name!r} (splits: "
            f"{sorted(builder.info.splits)}): {e}"
        ) from e
    has_label = "label" in features
    class_names = None
    if has_label and hasattr(features["label"], "names"):
        class_names = tuple(features["label"].names)
    return TfdsSource(
        builder=builder,
        split=split,
        num_examples=num_examples,
        class_names=class_names,
        has_label=has_label,
    )
