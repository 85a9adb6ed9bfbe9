"""Pretraining input: sources (TFDS, image folder, file list, built-in demo) and the pipeline.

source = make_source(config.data)            # source.num_examples defines an epoch
batches = pretrain_iterator(config.data, config.input, local_batch_size=B, seed=config.seed,
                            process_index=jax.process_index(),
                            process_count=jax.process_count(), start=None, source=source)
batch = next(batches)  # image (B, crop, crop, 3) uint8, label, epoch, index
skip_counts()          # {"truncated": 3, "not_image": 1, ...} images skipped so far
record_subset(workdir, source)  # config.data.data_size's subset, in workdir/data_subset.json
labelled = make_labelled(split_config)  # a labelled set for the benchmarks (labelled.py)
"""

from ssl_jax.data.decode import SKIP_REASONS, reset_skip_counts, skip_counts, skipped_count
from ssl_jax.data.labelled import LabelledSet, check_compatible, make_labelled
from ssl_jax.data.pipeline import (
    labelled_test_batches,
    labelled_train_iterator,
    pretrain_dataset,
    pretrain_iterator,
    resize_crop_flip,
)
from ssl_jax.data.sources import (
    SOURCES,
    DemoSource,
    FileSource,
    Source,
    TfdsSource,
    demo_source,
    filelist_source,
    folder_source,
    make_source,
    tfds_source,
)
from ssl_jax.data.subsets import record_subset, subset_order, take_subset

__all__ = [
    "SKIP_REASONS",
    "SOURCES",
    "DemoSource",
    "FileSource",
    "check_compatible",
    "LabelledSet",
    "Source",
    "TfdsSource",
    "demo_source",
    "filelist_source",
    "folder_source",
    "labelled_test_batches",
    "labelled_train_iterator",
    "make_labelled",
    "make_source",
    "pretrain_dataset",
    "pretrain_iterator",
    "record_subset",
    "reset_skip_counts",
    "resize_crop_flip",
    "skip_counts",
    "skipped_count",
    "subset_order",
    "take_subset",
    "tfds_source",
]
