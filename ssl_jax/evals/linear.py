"""Linear classifiers on every frozen tap of a trunk (PROTOCOLS.md, "Linear classifiers").

  python -m ssl_jax.main --config=configs/evals/places205_linear.py --config.pretrained=W \
      --workdir=E

One jitted step runs the frozen trunk once (inference-mode BatchNorm; its variables are an input
of the step, never part of the optimised state, and the features pass through stop_gradient)
and trains one head per tap together: the tap average-pooled as the table of
``ssl_jax.evals.features`` -> BatchNorm (no scale/shift for Jigsaw ResNets and AlexNets, with
scale/shift for Colorization ResNets) -> linear layer (N(0, 0.01) weights, zero bias) -> softmax
cross-entropy; the per-head losses are summed. The loop is the pretraining trainer's: batch
split over the mesh's "data" axis, heads replicated, orbax checkpoints of
{params, batch_stats, opt_state, step} with the input position, metrics.jsonl / TensorBoard and a
progress bar; rerunning the command resumes. At the end every test image is classified once
(resize 256, centre crop 224 / 227): E/results.json (top-1 / top-5 per layer, %) and
E/results.md.
"""

from __future__ import annotations

import json
import logging
import os
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

from ssl_jax import config_lib
from ssl_jax.evals import features as features_lib
from ssl_jax.evals import linear_config
from ssl_jax.models.batchnorm import GroupedBatchNorm
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train import optim as optim_lib
from ssl_jax.train import trainer

_log = logging.getLogger(__name__)

EVALUATION = "linear"
BN_SETTINGS = ("auto", "on", "off")
WEIGHT_DECAY = {"resnet": 1e-4, "alexnet": 5e-4}  # PROTOCOLS.md, by trunk
WEIGHTS_FILE = "linear_weights.json"  # which trunk the checkpointed heads were trained on


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


def bn_scale_shift(run_config: ml_collections.ConfigDict, setting: str = "auto") -> bool:
    """Whether the heads' BatchNorm learns scale and shift: PROTOCOLS.md's rule for "auto"."""
    if setting not in BN_SETTINGS:
        raise config_lib.ConfigError(
            f"config.head.bn_scale_shift={setting!r}; allowed: {', '.join(BN_SETTINGS)}."
        )
    if setting != "auto":
        return setting == "on"
    return run_config.model.name == "resnet" and run_config.task == "colorization"


def weight_decay(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict):
    wd = float(config.optim.weight_decay)
    return WEIGHT_DECAY[run_config.model.name] if wd < 0 else wd


def train_augment(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict):
    """PROTOCOLS.md: Colorization trunks train on resize + random crop, others on RRC."""
    setting = config.input.train_augment
    if setting == "auto":
        return "resize_crop" if run_config.task == "colorization" else "random_resized_crop"
    return setting


def input_size(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict) -> int:
    return int(config.features.size) or features_lib.default_size(run_config.model)


def resize_short(config: ml_collections.ConfigDict, size: int) -> int:
    """The test resize: config.input.resize_short, else 256 (scaled as 256/224 for other sizes)."""
    if config.input.resize_short:
        return int(config.input.resize_short)
    return 256 if size in (224, 227) else round(size * 256 / 224)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a linear-evaluation config that cannot run; before anything loads."""
    if config.evaluation != EVALUATION:
        raise config_lib.ConfigError(
            f"config.evaluation={config.evaluation!r}; this module runs {EVALUATION!r}."
        )
    if not config.pretrained:
        raise config_lib.ConfigError(
            "config.pretrained is empty: name the pretraining workdir to evaluate, "
            "--config.pretrained=/path/to/workdir (add --config.random_init=True for the same "
            "trunk with random weights)."
        )
    if not os.path.isfile(os.path.join(config.pretrained, "config.json")):
        raise config_lib.ConfigError(
            f"config.pretrained={config.pretrained!r} has no config.json: it is not a workdir "
            "written by `python -m ssl_jax.main`."
        )
    check_settings(config, trainer.load_run_config(config.pretrained))


def check_settings(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict):
    """The checks that need the trunk's config (also run when weights are passed in)."""
    from ssl_jax import data as data_lib  # TensorFlow: only where data is read

    o = config.optim
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
    t = config.train
    if t.checkpoint_every % t.log_every or (t.eval_every and t.eval_every % t.log_every):
        raise config_lib.ConfigError(
            f"config.train.checkpoint_every={t.checkpoint_every} and config.train.eval_every="
            f"{t.eval_every} must be multiples of config.train.log_every={t.log_every}."
        )
    augment = config.input.train_augment
    if augment != "auto" and augment not in linear_config.AUGMENTATIONS:
        raise config_lib.ConfigError(
            f"config.input.train_augment={augment!r}; allowed: auto, "
            f"{', '.join(linear_config.AUGMENTATIONS)}."
        )
    bn_scale_shift(run_config, config.head.bn_scale_shift)
    if config.features.pooling not in ("table", "adaptive"):
        raise config_lib.ConfigError(
            f"config.features.pooling={config.features.pooling!r}; allowed: table, adaptive."
        )
    try:
        features_lib.layer_specs(_feature_config(config, run_config))
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from e
    size = input_size(config, run_config)
    if resize_short(config, size) < size:
        raise config_lib.ConfigError(
            f"config.input.resize_short={config.input.resize_short} is smaller than the "
            f"{size}-pixel input (config.features.size); use at least {size}."
        )
    for which in ("train", "test"):
        source = config.data[which].source
        if source not in data_lib.SOURCES:
            raise config_lib.ConfigError(
                f"config.data.{which}.source={source!r}; allowed: {', '.join(data_lib.SOURCES)}."
            )


def _feature_config(config, run_config) -> ml_collections.ConfigDict:
    """The pretraining config with this evaluation's feature settings (layers, pooling)."""
    out = ml_collections.ConfigDict(run_config.to_dict())
    out.features = config.features
    return out


def _load_weights(config):
    from ssl_jax.evals import run as run_lib

    return run_lib.load_weights(config)


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


def _plan(config, num_examples: int) -> optim_lib.Plan:
    """The step-based recipe as the trainer's Plan: no warm-up, x decay_factor every
    decay_every steps."""
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


def _check_workdir(workdir: str, description: str, has_checkpoint: bool) -> None:
    """Refuses to resume heads that were trained on other weights."""
    path = os.path.join(workdir, WEIGHTS_FILE)
    if has_checkpoint and os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)["weights"]
        if previous != description:
            raise ValueError(
                f"The heads checkpointed in {workdir} were trained on {previous!r}, not on "
                f"{description!r}; use a new --workdir for other weights."
            )
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump({"weights": description}, f)


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    weights: tuple | None = None,
    *,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Trains the heads (resuming from workdir's checkpoint), tests them, writes the results.

    Args:
      config: a linear-evaluation config (``config_defaults.linear_evaluation``).
      workdir: checkpoints, metrics.jsonl, tensorboard/, results.json and results.md go here.
      weights: (pretraining config, trunk {"params", "batch_stats"}, description, step) as
        ``run.load_weights`` returns; None loads config.pretrained.
      mesh: the devices to run on (a 1-D "data" mesh); None for every device.

    Returns:
      results.json's content; "layers": {layer: {"top1", "top5" (in %), "dims"}}.
    """
    from ssl_jax.evals import linear_data  # TensorFlow: only where data is read

    start = time.perf_counter()
    run_config, trunk, description, pretrained_step = weights or _load_weights(config)
    check_settings(config, run_config)
    feature_config = _feature_config(config, run_config)
    mesh = mesh or trainer.make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    local_batch = trainer.check_batch(config.optim.batch_size, mesh)
    local_test_batch = trainer.check_batch(config.test.batch_size, mesh)
    os.makedirs(workdir, exist_ok=True)

    train_set = linear_data.labelled_source(config.data.train, "config.data.train")
    test_set = linear_data.labelled_source(config.data.test, "config.data.test")
    linear_data.check_compatible(train_set, test_set)
    size = input_size(config, run_config)
    short = resize_short(config, size)
    augment = train_augment(config, run_config)
    dims = features_lib.feature_dims(feature_config, size)
    layers = tuple(dims)
    scale_shift = bn_scale_shift(run_config, config.head.bn_scale_shift)
    heads = LinearHeads(layers, train_set.num_classes, scale_shift, float(config.head.init_std))
    plan = _plan(config, train_set.source.num_examples)
    schedule = optim_lib.make_schedule(plan, config.optim.decay_factor)
    _log.info(
        "linear: %s; %d train images (%s), %d classes, %d test images; %s at %d px, heads on %s; "
        "%d steps of %d, lr %.3g x%.3g every %d",
        description, plan.num_examples, train_set.description, train_set.num_classes,
        test_set.source.num_examples, augment, size, dict(dims), plan.total_steps,
        plan.batch_size, plan.peak_lr, config.optim.decay_factor, config.optim.decay_every,
    )  # fmt: skip

    example = {name: jnp.zeros((1, dim), jnp.float32) for name, dim in dims.items()}
    init_rng = jax.random.PRNGKey(config.seed)
    shapes = jax.eval_shape(lambda: heads.init(init_rng, example, train=False))
    optim = ml_collections.ConfigDict(
        {
            "weight_decay": weight_decay(config, run_config),
            "momentum": config.optim.momentum,
            "nesterov": config.optim.nesterov,
        }
    )
    tx = optim_lib.make_optimizer(optim, schedule, shapes.get("batch_stats", {}))

    def init_state(rng):
        variables = heads.init(rng, example, train=False)
        return {
            "params": variables["params"],
            "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(variables["params"]),
            "step": jnp.zeros((), jnp.int32),
        }

    state = jax.jit(init_state, out_shardings=replicated)(init_rng)
    trunk = jax.device_put(trunk, replicated)
    feature_fn = features_lib.make_feature_fn(feature_config, size)

    checkpoints = ckpt_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
    latest = checkpoints.latest_step()
    _check_workdir(workdir, description, latest is not None)
    start_step, start_position = 0, None
    if latest is not None:
        state, positions = checkpoints.restore(latest, ckpt_lib.abstract_like(state))
        start_step = int(jax.device_get(state["step"]))
        start_position = ckpt_lib.process_position(positions, start_step)
        _log.info("Resumed the linear heads at step %d from %s", start_step, workdir)

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

    def run_test():
        batches = linear_data.test_batches(
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
        return {k: int(v) for k, v in totals.items()}

    end_step = plan.total_steps
    if config.train.stop_after_steps:
        end_step = min(end_step, config.train.stop_after_steps)
    writer = metrics_lib.MetricsWriter(workdir, start_step)
    progress = metrics_lib.Progress(plan.total_steps, start_step, config.train.progress_bar)
    step = start_step
    last_train: dict[str, float] = {}
    if step < end_step:
        batches = linear_data.train_iterator(
            train_set, config.data.train, augment=augment, size=size, resize_short=short,
            flip=bool(config.input.flip), local_batch_size=local_batch, seed=config.seed,
            process_index=jax.process_index(), process_count=jax.process_count(),
            start=start_position,
        )  # fmt: skip
        pending: list[dict[str, jax.Array]] = []
        window_start, window_steps = None, 0
        with trainer._StopSignal() as stop:
            while step < end_step:
                try:
                    local = next(batches)
                except Exception as e:  # tf.errors.* raised from inside tf.data
                    checkpoints.close()
                    raise trainer.InputPipelineError(
                        f"The linear-evaluation input failed before step {step + 1}: "
                        f"{trainer._error_text(e)}; fix config.data.train and rerun to resume."
                    ) from e
                position = np.asarray([local["epoch"][-1], local["index"][-1]], np.int64)
                batch = {
                    k: jax.make_array_from_process_local_data(batch_sharding, local[k])
                    for k in ("image", "label")
                }
                state, step_metrics = train_step(state, trunk, batch)
                pending.append(step_metrics)
                step += 1
                if window_start is None:  # the first step includes compilation
                    jax.block_until_ready(step_metrics)
                    window_start, window_steps = time.perf_counter(), 0
                else:
                    window_steps += 1
                progress.update(1)
                stopping = step >= end_step or trainer._stop_requested(stop, step, config)
                if step % config.train.log_every == 0 or stopping:
                    last_train = trainer._log(
                        pending, step, plan, window_start, window_steps, writer, progress
                    )
                    pending, window_start, window_steps = [], time.perf_counter(), 0
                    if not trainer._finite(last_train["loss"]):
                        latest = checkpoints.latest_step()
                        checkpoints.close()
                        raise trainer.TrainingDiverged(
                            f"The summed head loss became {last_train['loss']} by step {step}; "
                            f"the last good checkpoint is step {latest} in "
                            f"{checkpoints.directory}. Lower config.optim.lr and rerun."
                        )
                    if step % config.train.checkpoint_every == 0 or stopping:
                        checkpoints.save(step, state, trainer._gather_positions(position))
                    every = config.train.eval_every
                    if every and step % every == 0 and step < end_step:
                        counts = run_test()
                        writer.write(step, _test_scalars(counts, layers))
                if stopping:
                    break
        if stop.requested:
            checkpoints.close()
            progress.close()
            writer.close()
            _log.warning("Stopped by SIGTERM at step %d; rerun the same command to resume.", step)
            return {}
    checkpoints.close()
    progress.close()

    counts = run_test()
    writer.write(step, _test_scalars(counts, layers))
    writer.close()
    tested = counts["count"]
    results = {
        "evaluation": EVALUATION,
        "weights": description,
        "pretrained": os.path.abspath(config.pretrained) if config.pretrained else None,
        "pretrained_step": pretrained_step,
        "random_init": bool(config.random_init),
        "task": run_config.task,
        "model": run_config.model.to_dict(),
        "step": int(step),
        "steps": plan.total_steps,
        "num_classes": train_set.num_classes,
        "train": {"dataset": train_set.description, "images": plan.num_examples},
        "test": {"dataset": test_set.description, "images": tested,
                 "skipped": test_set.source.num_examples - tested},
        "input": {"size": size, "resize_short": short, "train_augment": augment},
        "head_bn_scale_shift": scale_shift,
        "layers": {
            name: {"top1": 100.0 * counts[f"top1/{name}"] / max(tested, 1),
                   "top5": 100.0 * counts[f"top5/{name}"] / max(tested, 1),
                   "dims": int(dims[name])}
            for name in layers
        },
        "train_metrics": last_train,
        "seconds": time.perf_counter() - start,
        "config": config.to_dict(),
    }  # fmt: skip
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=_json_default)
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(markdown_table(results))
    _log.info("\n%s", markdown_table(results))
    return results


def _test_scalars(counts: dict[str, int], layers) -> dict[str, float]:
    n = max(counts["count"], 1)
    out = {}
    for name in layers:
        out[f"test/top1/{name}"] = 100.0 * counts[f"top1/{name}"] / n
        out[f"test/top5/{name}"] = 100.0 * counts[f"top5/{name}"] / n
    return out


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value)} is not JSON serialisable")


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
