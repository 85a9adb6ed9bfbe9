"""Linear classifiers on every frozen tap of a trunk (PROTOCOLS.md, "Linear classifiers").

  python -m ssl_jax.main --config=configs/evals/places205_linear.py --config.pretrained=W \
      --workdir=E

One jitted step runs the frozen trunk once (inference-mode BatchNorm; its variables are an input
of the step, never part of the optimised state, and the features pass through stop_gradient)
and trains one head per tap together: the tap average-pooled as the table of
``ssl_jax.evals.features`` -> BatchNorm (no scale/shift, except for the trunks whose task says
so: Colorization ResNets) -> linear layer (N(0, 0.01) weights, zero bias) -> softmax
cross-entropy; the per-head losses are summed. The loop is the library's one loop
(``ssl_jax.train.loop``): batch split over the mesh's "data" axis, heads replicated, orbax
checkpoints of {params, batch_stats, opt_state, step} with the input position, metrics.jsonl /
TensorBoard and a progress bar; rerunning the command resumes. At the end (and every
``train.eval_every`` steps) every test image is classified once (resize 256, centre crop
224 / 227): workdir/results.json (top-1 / top-5 per layer, %) and results.md.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_lib, paths
from ssl_jax.evals import base
from ssl_jax.evals import features as features_lib
from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.pretext import Pretext
from ssl_jax.train import loop, preemption
from ssl_jax.train import optim as optim_lib

_log = logging.getLogger(__name__)

BN_SETTINGS = ("auto", "on", "off")
AUGMENTATIONS = ("random_resized_crop", "resize_crop")
WEIGHT_DECAY = {"resnet": 1e-4, "alexnet": 5e-4}  # PROTOCOLS.md, by trunk
WEIGHTS_FILE = "linear_weights.json"  # which trunk the checkpointed heads were trained on


def defaults() -> ml_collections.ConfigDict:
    """The benchmark's fields at PROTOCOLS.md's values (ImageNet-1k from TFDS); "auto" / -1
    resolve from the trunk's task and model."""
    c = base.evaluator_config("linear")
    c.features = ml_collections.ConfigDict()
    c.features.layers = ()  # () = every tap of the trunk's pooling table
    c.features.size = 0  # input side; 0: 224 (ResNet) / 227 (AlexNet), as PROTOCOLS.md
    c.features.pooling = "table"  # table | adaptive (other input sizes)

    c.data = ml_collections.ConfigDict()
    c.data.train = base.labelled_split("tfds", "train", name="imagenet2012")
    c.data.test = base.labelled_split("tfds", "validation", name="imagenet2012")

    c.input = ml_collections.ConfigDict()
    # auto: the task's (random_resized_crop + flip; Colorization: resize_crop: resize, crop, flip)
    c.input.train_augment = "auto"
    c.input.resize_short = 0  # test resize (and resize_crop's); 0: 256 (scaled for other sizes)
    c.input.flip = True

    c.head = ml_collections.ConfigDict()
    # BN before each linear layer: auto = the task's (no scale/shift for Jigsaw ResNets and
    # AlexNets, with scale/shift for Colorization ResNets); or "on" / "off".
    c.head.bn_scale_shift = "auto"
    c.head.init_std = 0.01  # linear weights ~ N(0, init_std^2), bias 0

    c.optim = ml_collections.ConfigDict()
    c.optim.batch_size = 256
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.nesterov = True
    c.optim.weight_decay = -1.0  # -1: 1e-4 (ResNet) / 5e-4 (AlexNet); never on BN
    c.optim.steps = 140_000
    c.optim.decay_every = 40_000  # lr x decay_factor every this many steps
    c.optim.decay_factor = 0.1

    c.test = ml_collections.ConfigDict()
    c.test.batch_size = 256

    c.train = ml_collections.ConfigDict()
    c.train.log_every = 100
    c.train.checkpoint_every = 5000  # a multiple of log_every
    c.train.keep_checkpoints = 2
    # Seconds an object-store operation (gs:// workdir, data, checkpoint writes) retries a store
    # that does not answer before the run stops, keeping its last complete checkpoint.
    c.train.store_retry_seconds = 300.0
    c.train.eval_every = 0  # > 0: also test every N steps (a multiple of log_every); 0: at the end
    c.train.stop_after_steps = ml_collections.FieldReference(None, field_type=int)
    c.train.progress_bar = True
    return c


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
            kind = "filelist" if paths.isfile(path) else "folder"
            c.data[which] = base.labelled_split(kind, which, path)
    if arg.tfds:
        c.data.train = base.labelled_split("tfds", arg.train_split, name=arg.tfds)
        c.data.test = base.labelled_split("tfds", arg.test_split or "validation", name=arg.tfds)
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
        c.data.train = base.labelled_split("demo", "train")
        c.data.train.demo_size = 1024
        c.data.test = base.labelled_split("demo", "test")
        c.data.test.demo_size, c.data.test.first = 1216, 1024
    c.features.size = 96
    c.features.pooling = "adaptive"
    c.optim.batch_size = 32
    c.optim.steps = 150
    c.optim.decay_every = 100
    c.test.batch_size = 64
    c.train.log_every = 25
    c.train.checkpoint_every = 50


class LinearHeads(nn.Module):
    """One BatchNorm + linear classifier per tap.

    Input: {layer: float32 (B, D_layer)} pooled features; output {layer: float32 (B, classes)}.
    """

    layers: tuple[str, ...]
    num_classes: int
    scale_shift: bool
    init_std: float = 0.01

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> dict[str, jax.Array]:
        logits = {}
        for name in self.layers:
            # PyTorch's BatchNorm1d statistics (momentum 0.1, eps 1e-5) over the whole batch.
            x = GroupedBatchNorm(
                use_scale=self.scale_shift, use_bias=self.scale_shift, name=f"{name}_bn"
            )(features[name], train=train)
            logits[name] = nn.Dense(
                self.num_classes,
                kernel_init=nn.initializers.normal(self.init_std),
                bias_init=nn.initializers.zeros,
                name=f"{name}_fc",
            )(x)
        return logits


def make_train_step(feature_fn, heads: LinearHeads, tx, schedule):
    """(state, trunk variables, batch) -> (state, metrics).

    state: {"params", "batch_stats" (the heads'), "opt_state", "step"}; batch: "image" uint8
    (B, S, S, 3), "label" int32 (B,). metrics: summed "loss", "lr", and per layer "loss/L",
    "top1/L" (train accuracy in [0, 1]).
    """

    def train_step(state, trunk, batch):
        # The trunk is only read: its output carries no gradient back into it.
        features = jax.lax.stop_gradient(feature_fn(trunk, batch["image"]))
        labels = batch["label"]

        def loss_fn(params):
            logits, updates = heads.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                features,
                train=True,
                mutable=["batch_stats"],
            )
            losses = {
                name: optax.softmax_cross_entropy_with_integer_labels(value, labels).mean()
                for name, value in logits.items()
            }
            return sum(losses.values()), (losses, logits, updates["batch_stats"])

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (losses, logits, batch_stats)), grads = grad_fn(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        metrics = {"loss": loss, "lr": schedule(state["step"])}
        for name, value in logits.items():
            metrics[f"loss/{name}"] = losses[name]
            metrics[f"top1/{name}"] = jnp.mean(jnp.argmax(value, -1) == labels)
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        return new_state, metrics

    return train_step


def make_test_step(feature_fn, heads: LinearHeads, num_classes: int):
    """(head variables, trunk variables, batch) -> counts: {"count", "top1/L", "top5/L"} int32
    sums over the valid rows of the batch ("valid" bool (B,))."""
    k = min(5, num_classes)

    def test_step(head_variables, trunk, batch):
        logits = heads.apply(head_variables, feature_fn(trunk, batch["image"]), train=False)
        labels, valid = batch["label"], batch["valid"]
        counts = {"count": jnp.sum(valid, dtype=jnp.int32)}
        for name, value in logits.items():
            _, top = jax.lax.top_k(value, k)
            hit = top == labels[:, None]
            counts[f"top1/{name}"] = jnp.sum(hit[:, 0] & valid, dtype=jnp.int32)
            counts[f"top5/{name}"] = jnp.sum(jnp.any(hit, -1) & valid, dtype=jnp.int32)
        return counts

    return test_step


def plan(config: ml_collections.ConfigDict, num_examples: int) -> optim_lib.Plan:
    """The step-based recipe as a Plan: no warm-up, x decay_factor every decay_every steps."""
    o = config.optim
    return optim_lib.Plan(
        num_examples=num_examples,
        batch_size=o.batch_size,
        steps_per_epoch=max(1, num_examples // o.batch_size),
        total_steps=int(o.steps),
        warmup_steps=0,
        decay_steps=tuple(range(int(o.decay_every), int(o.steps), int(o.decay_every))),
        peak_lr=float(o.lr),
        warmup_start_lr=float(o.lr),
    )


class LinearBenchmark:
    """Linear classifiers on every frozen layer (``ssl_jax.evals.base``); ``mesh`` narrows the
    devices it runs on (None: every device)."""

    def __init__(
        self, config: ml_collections.ConfigDict, task: Pretext, *, mesh: Mesh | None = None
    ):
        self.config, self.task = config, task
        self.mesh = mesh
        o, t = config.optim, config.train
        for key in ("steps", "decay_every", "batch_size"):
            if int(o[key]) <= 0:
                raise config_lib.ConfigError(f"config.optim.{key}={o[key]} must be positive.")
        if not float(o.lr) > 0:
            raise config_lib.ConfigError(f"config.optim.lr={o.lr} must be positive.")
        devices = jax.device_count()
        for key, value in (
            ("optim.batch_size", o.batch_size),
            ("test.batch_size", config.test.batch_size),
        ):
            if value <= 0 or value % devices or value % jax.process_count():
                raise config_lib.ConfigError(
                    f"config.{key}={value} does not split evenly over {devices} devices; use a "
                    f"positive multiple of {devices}."
                )
        if t.checkpoint_every % t.log_every or (t.eval_every and t.eval_every % t.log_every):
            raise config_lib.ConfigError(
                f"config.train.checkpoint_every={t.checkpoint_every} and config.train.eval_every="
                f"{t.eval_every} must be multiples of config.train.log_every={t.log_every}."
            )
        augment = config.input.train_augment
        if augment != "auto" and augment not in AUGMENTATIONS:
            raise config_lib.ConfigError(
                f"config.input.train_augment={augment!r}; allowed: auto, "
                f"{', '.join(AUGMENTATIONS)}."
            )
        if config.head.bn_scale_shift not in BN_SETTINGS:
            raise config_lib.ConfigError(
                f"config.head.bn_scale_shift={config.head.bn_scale_shift!r}; allowed: "
                f"{', '.join(BN_SETTINGS)}."
            )
        features_lib.check_config(config.features, task.config.model)
        base.check_splits(config)
        size = self.input_size
        if self.resize_short < size:
            raise config_lib.ConfigError(
                f"config.input.resize_short={config.input.resize_short} is smaller than the "
                f"{size}-pixel input (config.features.size); use at least {size}."
            )

    @property
    def input_size(self) -> int:
        return int(self.config.features.size) or features_lib.default_size(self.task.config.model)

    @property
    def resize_short(self) -> int:
        """The test resize: config.input.resize_short, else 256 (scaled as 256/224 for other
        sizes)."""
        if self.config.input.resize_short:
            return int(self.config.input.resize_short)
        size = self.input_size
        return 256 if size in (224, 227) else round(size * 256 / 224)

    @property
    def augment(self) -> str:
        """PROTOCOLS.md: the task's training augmentation, unless the config names one."""
        setting = self.config.input.train_augment
        return self.task.linear_augment if setting == "auto" else setting

    @property
    def scale_shift(self) -> bool:
        setting = self.config.head.bn_scale_shift
        return self.task.linear_bn_scale_shift if setting == "auto" else setting == "on"

    @property
    def weight_decay(self) -> float:
        wd = float(self.config.optim.weight_decay)
        return WEIGHT_DECAY[self.task.config.model.name] if wd < 0 else wd

    def run(self, weights: base.Weights, workdir: str) -> dict[str, float]:
        """Trains the heads (resuming from workdir's checkpoint), tests them, writes the results.

        Returns:
          top-1 (%) of every layer, by layer name; results.json also has top-5.
        """
        from ssl_jax import data as data_lib  # TensorFlow: only where data is read

        config = self.config
        start = time.perf_counter()
        mesh = self.mesh or loop.make_mesh()
        replicated = NamedSharding(mesh, P())
        batch_sharding = NamedSharding(mesh, P("data"))
        local_batch = loop.local_batch_size(config.optim.batch_size, mesh)
        local_test_batch = loop.local_batch_size(
            config.test.batch_size, mesh, "config.test.batch_size"
        )
        paths.makedirs(workdir)

        train_set = data_lib.make_labelled(config.data.train, config_key="config.data.train")
        test_set = data_lib.make_labelled(config.data.test, config_key="config.data.test")
        for labelled, key in ((train_set, "config.data.train"), (test_set, "config.data.test")):
            labelled.check_single_label(key)
        data_lib.check_compatible(train_set, test_set)
        size, short, augment = self.input_size, self.resize_short, self.augment
        dims = features_lib.feature_dims(self.task, config.features, size)
        layers = tuple(dims)
        heads = LinearHeads(layers, train_set.num_classes, self.scale_shift, config.head.init_std)
        run_plan = plan(config, train_set.num_examples)
        schedule = optim_lib.make_schedule(run_plan, config.optim.decay_factor)
        _log.info(
            "linear: %s; %d train images (%s), %d classes, %d test images; %s at %d px, heads "
            "on %s; %d steps of %d, lr %.3g x%.3g every %d",
            weights.description, run_plan.num_examples, train_set.name, train_set.num_classes,
            test_set.num_examples, augment, size, dict(dims), run_plan.total_steps,
            run_plan.batch_size, run_plan.peak_lr, config.optim.decay_factor,
            config.optim.decay_every,
        )  # fmt: skip
        example = {name: jnp.zeros((1, dim), jnp.float32) for name, dim in dims.items()}
        optim = ml_collections.ConfigDict(
            {
                "weight_decay": self.weight_decay,
                "momentum": config.optim.momentum,
                "nesterov": config.optim.nesterov,
            }
        )
        state, tx = loop.create_state(
            lambda rng: heads.init(rng, example, train=False),
            lambda batch_stats: optim_lib.make_optimizer(optim, schedule, batch_stats),
            config.seed,
            replicated,
        )
        trunk = jax.device_put(features_lib.trunk_variables(weights.variables), replicated)
        feature_fn = features_lib.make_feature_fn(self.task, config.features, size)
        base.check_resumed_weights(workdir, WEIGHTS_FILE, weights.description, "The heads")

        train_step = jax.jit(
            make_train_step(feature_fn, heads, tx, schedule),
            in_shardings=(replicated, replicated, batch_sharding),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        test_step = jax.jit(
            make_test_step(feature_fn, heads, train_set.num_classes),
            in_shardings=(replicated, replicated, batch_sharding),
            out_shardings=replicated,
        )

        def test(state, step=None) -> dict[str, int]:
            batches = data_lib.labelled_test_batches(
                test_set, config.data.test, size=size, resize_short=short,
                local_batch_size=local_test_batch, process_index=jax.process_index(),
                process_count=jax.process_count(),
            )  # fmt: skip
            head_variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
            totals = None
            for local in batches:
                batch = {
                    k: jax.make_array_from_process_local_data(batch_sharding, v)
                    for k, v in local.items()
                }
                counts = jax.device_get(test_step(head_variables, trunk, batch))
                totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
            tested.update({k: int(v) for k, v in totals.items()})
            return _test_scalars(tested, layers)

        def batches(start):
            return data_lib.labelled_train_iterator(
                train_set, config.data.train, augment=augment, size=size, resize_short=short,
                flip=bool(config.input.flip), local_batch_size=local_batch, seed=config.seed,
                process_index=jax.process_index(), process_count=jax.process_count(),
                start=start,
            )  # fmt: skip

        tested: dict[str, int] = {}
        outcome = loop.run(
            state,
            functools.partial(_call_with_trunk, train_step, trunk),
            batches,
            workdir=workdir,
            train=config.train,
            total_steps=run_plan.total_steps,
            batch_size=run_plan.batch_size,
            steps_per_epoch=run_plan.steps_per_epoch,
            mesh=mesh,
            periodic=[loop.Periodic("test", int(config.train.eval_every), test)],
            skipped_images=data_lib.skipped_count,
            what="linear evaluation",
            diverged_fix="Lower config.optim.lr",
        )
        if outcome.preempted:
            raise preemption.Preempted(
                f"the linear classifiers stopped at step {outcome.step} with their checkpoint saved"
            )
        if not tested:  # finished before this run: test the restored heads
            test(outcome.state)
        count = tested["count"]
        results = {
            **base.results_header(config, self.task, weights),
            "step": int(outcome.step),
            "steps": run_plan.total_steps,
            "num_classes": train_set.num_classes,
            "train": {"dataset": train_set.name, "images": run_plan.num_examples},
            "test": {"dataset": test_set.name, "images": count,
                     "skipped": test_set.num_examples - count},
            "input": {"size": size, "resize_short": short, "train_augment": augment},
            "head_bn_scale_shift": self.scale_shift,
            "layers": {
                name: {"top1": 100.0 * tested[f"top1/{name}"] / max(count, 1),
                       "top5": 100.0 * tested[f"top5/{name}"] / max(count, 1),
                       "dims": int(dims[name])}
                for name in layers
            },
            "train_metrics": outcome.metrics,
            "seconds": time.perf_counter() - start,
            "config": config.to_dict(),
        }  # fmt: skip
        table = markdown_table(results)
        base.write_results(workdir, results, table)
        _log.info("\n%s", table)
        return {name: r["top1"] for name, r in results["layers"].items()}


def _call_with_trunk(train_step, trunk, state, batch):
    return train_step(state, trunk, batch)


def _test_scalars(counts: dict[str, int], layers) -> dict[str, float]:
    n = max(counts["count"], 1)
    out = {}
    for name in layers:
        out[f"top1/{name}"] = 100.0 * counts[f"top1/{name}"] / n
        out[f"top5/{name}"] = 100.0 * counts[f"top5/{name}"] / n
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """Top-1 (and top-5) accuracy in % per layer."""
    head = (
        f"linear: {results['weights']}\n\n{results['train']['dataset']} -> "
        f"{results['test']['dataset']} ({results['test']['images']} test images), step "
        f"{results['step']} of {results['steps']}\n\n"
    )
    lines = ["| layer | dims | top-1 | top-5 |", "|---|---|---|---|"]
    for name, r in results["layers"].items():
        lines.append(f"| {name} | {r['dims']} | {r['top1']:.2f} | {r['top5']:.2f} |")
    return head + "\n".join(lines) + "\n"
