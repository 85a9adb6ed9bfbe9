"""The evaluator contract: every benchmark is a class with the same two calls.

    evaluator = Evaluator(config, task)         # config checks, nothing loaded yet
    metrics = evaluator.run(weights, workdir)   # {name: float}, results in workdir

``config`` is the benchmark's ConfigDict (its ``evaluation`` field names it in
``ssl_jax.evaluators.EVALUATORS``); ``task`` the pretext task whose trunk is evaluated (its input
convention, its model); ``weights`` the model's variables with the step and a description;
``workdir`` where this run writes results.json (and results.md, features, checkpoints, pictures,
as the benchmark needs). The same evaluator runs standalone (``python -m ssl_jax.main
--config=configs/evals/X.py --config.pretrained=W --workdir=E``) and attached to pretraining
(``config.evals.LABEL``, run at checkpoints every ``every_steps``; its metrics are logged as
``LABEL/NAME``; results in ``W/evals/LABEL/step_N``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import ml_collections
from jax.experimental import multihost_utils

from ssl_jax import config_lib, paths
from ssl_jax.pretext import Pretext
from ssl_jax.train import checkpoint as ckpt_lib

LABELLED_SOURCES = ("voc07_tfds", "vocdevkit", "tfds", "folder", "filelist", "demo")
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"


class Weights(NamedTuple):
    """What an evaluator evaluates.

    variables: the pretext model's {"params", "batch_stats"} (the trunk is its "trunk" entry).
    step: the pretraining step they come from; None for random weights.
    description: what they are, for results and logs ("W step 1000", "random init ...").
    """

    variables: dict[str, Any]
    step: int | None
    description: str


class Evaluator(Protocol):
    """A benchmark: see the module docstring."""

    def __init__(self, config: ml_collections.ConfigDict, task: Pretext) -> None: ...

    def run(self, weights: Weights, workdir: str) -> dict[str, float]: ...


def evaluator_config(evaluation: str) -> ml_collections.ConfigDict:
    """The fields every evaluator config has: which benchmark, when attached, which weights when
    standalone."""
    c = ml_collections.ConfigDict()
    c.evaluation = evaluation  # the benchmark (ssl_jax.evaluators.EVALUATORS)
    # Attached to pretraining: every N steps (a multiple of train.checkpoint_every), -1 at every
    # checkpoint, 0 off; and at the last step.
    c.every_steps = 0
    c.pretrained = ""  # standalone: the pretraining workdir to evaluate
    c.pretrained_step = -1  # standalone: its checkpoint; -1 the latest
    c.random_init = False  # standalone: the same trunk with fresh weights (the random baseline)
    c.seed = 0
    return c


def labelled_split(
    source: str = "folder", split: str = "train", path: str = "", name: str = ""
) -> ml_collections.ConfigDict:
    """One split of a labelled set, for every benchmark (``ssl_jax.data.labelled``).

    source: one of LABELLED_SOURCES (voc07_tfds | vocdevkit | tfds | folder | filelist | demo).
    """
    d = ml_collections.ConfigDict()
    d.source = source
    d.split = split  # voc07_tfds / vocdevkit: trainval | test; tfds: a TFDS split
    d.path = path  # VOCdevkit folder, image folder or "path [label]" file list
    d.name = name  # TFDS name (source=tfds), e.g. "imagenet2012"
    d.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
    d.year = "2007"  # vocdevkit: VOC<year> inside the VOCdevkit folder
    d.names_file = ""  # filelist: class names, one per line in label order
    d.demo_size = 120  # source=demo: crops of the packaged photos (label = which photo)
    d.first = 0  # skip the first N images of the set's fixed order (e.g. a demo test split)
    d.max_examples = 0  # > 0: a fixed subset of N images (see ssl_jax.data.labelled)
    d.shuffle_buffer = 10_000  # TFDS element shuffle when training on the split
    d.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
    d.prefetch = 2  # batches prefetched on the host
    d.cache_decoded = False  # keep decoded images in memory (small sets only)
    return d


def check_splits(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
    """Start-up checks of ``config.data.train`` / ``.test``: a known source, with its path."""
    for which in ("train", "test"):
        split = config.data[which]
        key = f"{prefix}.data.{which}"
        if split.source not in LABELLED_SOURCES:
            raise config_lib.ConfigError(
                f"{key}.source={split.source!r}; allowed: {', '.join(LABELLED_SOURCES)}."
            )
        if split.source in ("vocdevkit", "folder", "filelist") and not split.path:
            raise config_lib.ConfigError(
                f"{key}.source={split.source!r} needs {key}.path (a VOCdevkit, an image folder "
                "or a file list)."
            )
        if split.source == "tfds" and not split.name:
            raise config_lib.ConfigError(
                f"{key}.source='tfds' needs {key}.name (a TFDS dataset, e.g. imagenet2012)."
            )


def is_leader() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all arrive (after a leader-only write they then read)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def results_header(
    config: ml_collections.ConfigDict, task: Pretext, weights: Weights
) -> dict[str, Any]:
    """The fields every results.json starts with: the benchmark, and what was evaluated."""
    return {
        "evaluation": config.evaluation,
        "weights": weights.description,
        "pretrained": paths.abspath(config.pretrained) if config.pretrained else None,
        "pretrained_step": weights.step,
        "random_init": bool(config.random_init),
        "task": task.name,
        "model": task.config.model.to_dict(),
    }


def write_results(workdir: str, results: dict[str, Any], table: str) -> None:
    """results.json and results.md in workdir, written by process 0; every process waits."""
    if is_leader():
        paths.write_json(paths.join(workdir, RESULTS_FILE), results)
        paths.write_text(paths.join(workdir, TABLE_FILE), table)
    barrier(f"results {workdir}")


def check_resumed_weights(workdir: str, filename: str, description: str, what: str) -> None:
    """Refuses to resume a benchmark's checkpoint (``what``: "The heads", "The detector") that
    was trained on other weights; records ``description`` in ``workdir/filename`` otherwise."""
    path = paths.join(workdir, filename)
    if ckpt_lib.saved_steps(workdir) and paths.isfile(path):
        previous = paths.read_json(path)["weights"]
        if previous != description:
            raise ValueError(
                f"{what} checkpointed in {workdir} trained on {previous!r}, not on "
                f"{description!r}; use a new --workdir for other weights."
            )
    if is_leader():
        paths.write_json(path, {"weights": description})
    barrier(f"weights {workdir}")
