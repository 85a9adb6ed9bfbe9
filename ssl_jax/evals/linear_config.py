"""The linear evaluation's data settings: split configs and the config arguments of
configs/evals/*linear.py. Free of TensorFlow, so configs load where only JAX is installed;
the input pipeline itself is ``ssl_jax.evals.linear_data``.
"""

from __future__ import annotations

import ml_collections

from ssl_jax import config_lib, fileio

AUGMENTATIONS = ("random_resized_crop", "resize_crop")


def split_config(
    source: str = "tfds", name: str = "", split: str = "train", path: str = ""
) -> ml_collections.ConfigDict:
    """One split of a labelled set: config.data.train / config.data.test of a linear evaluation.

    The fields are those ``ssl_jax.data.make_source`` and the pipeline read, plus a slice
    (``first``, ``max_examples``) for quick runs and disjoint demo splits.
    """
    d = ml_collections.ConfigDict()
    d.source = source  # tfds | folder | filelist | demo
    d.name = name  # TFDS name (source=tfds), e.g. "imagenet2012"
    d.split = split  # TFDS split
    d.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
    d.path = path  # image folder (class subfolders) or file list ("path label" lines)
    d.demo_size = 2048  # source=demo: crops of the packaged photos (label = photo index)
    d.first = 0  # skip the first N records (fixed order), e.g. a demo test split after train
    d.max_examples = 0  # > 0: at most N records after `first`, spread evenly over the set
    d.shuffle_buffer = 10_000  # TFDS element shuffle (train only)
    d.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
    d.prefetch = 2  # batches prefetched on the host
    d.cache_decoded = False  # keep decoded images in memory (small sets only)
    return d


ARGS = dict(runlocal=False, train="", test="", tfds="", train_split="train", test_split="")


def apply_args(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
    """``train=PATH,test=PATH`` (image folders with class subfolders, or file lists of
    "path label" lines), or ``tfds=NAME`` (with ``train_split`` / ``test_split``), then
    ``runlocal`` (the demo set unless data was named, a short schedule at 96 pixels)."""
    if bool(arg.train) != bool(arg.test):
        raise config_lib.ConfigError(
            f"Give both train=PATH and test=PATH as config arguments (got train={arg.train!r}, "
            f"test={arg.test!r})."
        )
    if arg.train and arg.tfds:
        raise config_lib.ConfigError(
            f"Give train=PATH,test=PATH or tfds={arg.tfds!r} as config arguments, not both."
        )
    if arg.train:
        for which, path in (("train", arg.train), ("test", arg.test)):
            kind = "filelist" if fileio.isfile(path) else "folder"
            c.data[which] = split_config(kind, path=path)
    if arg.tfds:
        c.data.train = split_config("tfds", arg.tfds, arg.train_split)
        c.data.test = split_config("tfds", arg.tfds, arg.test_split or "validation")
    elif arg.test_split:
        c.data.test.split = arg.test_split
    if arg.runlocal:
        runlocal(c, demo=not (arg.train or arg.tfds))


def runlocal(c: ml_collections.ConfigDict, demo: bool = True) -> None:
    """A run of about a minute on 2 CPU cores: 96-pixel inputs with adaptive pooling (the
    table's grids), batch 32, 150 steps, and with ``demo`` the packaged photos as a 6-class set.

    Demo splits: train is crops [0, 1024) of the demo set and test crops [1024, 1216), so the
    test images are different crops of the same six photos (label = which photo).
    """
    if demo:
        c.data.train = split_config("demo")
        c.data.train.demo_size = 1024
        c.data.test = split_config("demo")
        c.data.test.demo_size = 1216
        c.data.test.first = 1024
    c.features.size = 96
    c.features.pooling = "adaptive"
    c.optim.batch_size = 32
    c.optim.steps = 150
    c.optim.decay_every = 100
    c.test.batch_size = 64
    c.train.log_every = 25
    c.train.checkpoint_every = 50
