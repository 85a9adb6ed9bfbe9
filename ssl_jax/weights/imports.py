"""Checkpoints of other frameworks -> an ssl_jax workdir that every benchmark takes.

``import_checkpoint(format, model, src, workdir)`` reads ``src``, maps it to the shared torch-style
layout (ssl_jax.weights.layout), checks every trunk tensor against the model, and only then
writes ``workdir``: ``config.json`` (a pretraining config of the model's task, with the model's own
architecture and input settings), one checkpoint at step 0 (the imported trunk; the pretext head,
which no benchmark reads, freshly initialised) and ``imported.json`` (source, format, model, every
conversion made, the heads dropped). ``--config.pretrained=workdir`` then works in every benchmark.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_defaults, paths, tasks
from ssl_jax.evals import features
from ssl_jax.jigsaw.tiles import IMAGENET_MEAN, IMAGENET_STD
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from ssl_jax.train import state as state_lib
from ssl_jax.weights import fssb, layout, torchfile

_log = logging.getLogger(__name__)

FORMATS = ("fssb", "vissl", "torchvision", "ssl_jax")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "alexnet")
TASKS = ("jigsaw", "colorization", "supervised")
RECORD = "imported.json"


class ImportFailed(ValueError):
    """The checkpoint cannot be imported as asked; nothing was written."""


def parse_model(model: str) -> tuple[str, int, str]:
    """'resnet50_jigsaw' -> ("resnet", 50, "jigsaw"); 'alexnet_jigsaw' -> ("alexnet", 0, ...)."""
    m = re.fullmatch(r"(resnet\d+|alexnet)_(\w+)", model)
    if not m or m.group(1) not in ARCHS or m.group(2) not in TASKS:
        raise ImportFailed(
            f"--model={model!r} is not ARCH_TASK with ARCH in {list(ARCHS)} and TASK in "
            f"{list(TASKS)}, e.g. --model=resnet50_jigsaw"
        )
    arch = m.group(1)
    return (
        ("alexnet", 0, m.group(2)) if arch == "alexnet" else ("resnet", int(arch[6:]), m.group(2))
    )


def model_config(name: str, depth: int, task: str, width: float) -> ml_collections.ConfigDict:
    """The pretraining config of an imported model: the task's paper recipe at this trunk."""
    c = config_defaults.pretrain()
    c.task = task
    c.model.name = name
    c.model.depth = depth or 50
    c.model.width = width
    if task == "jigsaw":
        c.model.alexnet_variant = "jigsaw"
        if name == "alexnet":
            c.jigsaw = config_defaults.jigsaw(2000, tile_features=1024, hidden_features=4096)
        else:
            c.jigsaw = config_defaults.jigsaw(2000, tile_features=1000, hidden_features=0)
    elif task == "colorization":
        c.model.alexnet_variant = "colorization"
        c.model.res5_stride = 1
        config_defaults.colorization_input(c, crop=227 if name == "alexnet" else 224)
        c.colorization = config_defaults.colorization()
        config_defaults.colorization_picture(c)
    else:
        c.input.crop = 227 if name == "alexnet" else 224
        c.supervised = ml_collections.ConfigDict({"num_classes": 1000})
    return c


def _infer_width(state: dict[str, np.ndarray], name: str) -> float:
    weight = state.get("conv1.weight")
    if weight is None:
        raise ImportFailed(
            "the checkpoint has no conv1 weight (conv1.weight / conv1_w / conv1_s0_w): not a "
            "trunk this model knows\n" + layout.failure_table([("conv1.weight", "missing", "")])
        )
    return weight.shape[0] / (96 if name == "alexnet" else 64)


# ---------------------------------------------------------------------------------------------
# Formats -> torch-style layout


def _read_torch(src: str) -> Any:
    try:
        return torchfile.load(src)
    except torchfile.TorchFileError as e:
        raise ImportFailed(str(e)) from None


def _strip(state: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def _flat_arrays(tree: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(tree, dict) or not tree:
        raise ImportFailed(f"{where} is not a dict of tensors")
    bad = [k for k, v in tree.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ImportFailed(f"{where} holds non-tensor entries {bad[:5]}: not a state dict")
    return dict(tree)


def read_torchvision(src: str) -> dict[str, np.ndarray]:
    obj = _read_torch(src)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return _strip(_flat_arrays(obj, f"{src}"), ("module.",))


def read_vissl(src: str) -> dict[str, np.ndarray]:
    """The trunk of a VISSL / ClassyVision checkpoint, torchvision names (heads under heads.*)."""
    obj = _read_torch(src)
    try:
        model = obj["classy_state_dict"]["base_model"]["model"]
    except (KeyError, TypeError):
        raise ImportFailed(
            f"{src} has no classy_state_dict.base_model.model: not a VISSL checkpoint (a plain "
            "torchvision state dict imports with --format=torchvision)"
        ) from None
    trunk = _strip(
        _flat_arrays(model.get("trunk"), f"{src}: classy_state_dict.base_model.model.trunk"),
        ("base_model._feature_blocks.", "_feature_blocks."),
    )
    heads = model.get("heads") or {}
    trunk.update({f"heads.{k}": v for k, v in heads.items() if isinstance(v, np.ndarray)})
    return trunk


# ---------------------------------------------------------------------------------------------
# The import


def import_checkpoint(
    fmt: str,
    model: str,
    src: str,
    workdir: str,
    *,
    stride_in_1x1: bool = False,
) -> dict[str, Any]:
    """Imports ``src`` (format ``fmt``) as ``model`` into a new ``workdir``; returns the record.

    Raises:
      ImportFailed: unknown format or model, an unreadable or foreign file, tensors that don't
        fit (a table), or a workdir that already holds a run. Nothing is written then.
    """
    if fmt not in FORMATS:
        raise ImportFailed(f"--format={fmt!r} is not one of {list(FORMATS)}")
    if not paths.exists(src):
        raise ImportFailed(f"{src} does not exist")
    if paths.exists(paths.join(workdir, state_lib.CONFIG_FILE)) or ckpt_lib.saved_steps(workdir):
        raise ImportFailed(
            f"{workdir} already holds a run (config.json or checkpoints); import into a new "
            "--workdir"
        )
    record: dict[str, Any] = {"source": paths.abspath(src), "format": fmt, "model": model}
    conversions: list[str] = []
    if fmt == "ssl_jax":
        config, task, step, variables = state_lib.restore_variables(src)
        trunk = jax.tree.map(np.asarray, features.trunk_variables(variables))
        record["source_step"] = step
        state, dropped = layout.from_variables(trunk), []
        name, depth, task_name = config.model.name, config.model.depth, config.task
        record["model"] = f"{'alexnet' if name == 'alexnet' else f'resnet{depth}'}_{task_name}"
        new_config = config
    else:
        name, depth, task_name = parse_model(model)
        if fmt == "fssb":
            try:
                blobs = fssb.read(src)
                state, facts = fssb.to_torch_layout(blobs, name)
            except fssb.FssbError as e:
                raise ImportFailed(str(e)) from None
        else:
            if name != "resnet":
                raise ImportFailed(
                    f"--format={fmt} imports ResNets (torchvision's names); --model={model} is "
                    "not one. FAIR's AlexNets import with --format=fssb."
                )
            state = read_torchvision(src) if fmt == "torchvision" else read_vissl(src)
            facts = {}
        new_config = model_config(name, depth, task_name, _infer_width(state, name))
        new_config.model.stride_in_1x1 = stride_in_1x1
        if stride_in_1x1:
            conversions.append("bottleneck stride on the 1x1 conv (model.stride_in_1x1=True)")
        if fmt == "fssb":
            conversions += _fssb_settings(new_config, facts, name, task_name)
    record["config_model"] = new_config.model.to_dict()
    task = tasks.create(new_config, check_values=False)
    try:
        trunk, dropped = layout.to_variables(state, new_config.model, task.input_channels)
    except layout.WeightsError as e:
        raise ImportFailed(
            f"{src} does not fit --model={record['model']} (width "
            f"{new_config.model.width:g}, {task.input_channels} input channels):\n{e}"
        ) from None
    record.update(conversions=conversions, dropped=sorted(dropped), head="fresh init (seed 0)")
    record["input"] = {
        "channel_order": new_config.input.channel_order,
        "mean": list(new_config.input.mean),
        "std": list(new_config.input.std),
    }
    _write(workdir, new_config, task, trunk, record)
    return record


def _fssb_settings(
    config: ml_collections.ConfigDict, facts: dict[str, Any], name: str, task: str
) -> list[str]:
    """The model and input settings FAIR's graphs used, set on ``config``; what was converted."""
    notes = []
    if facts.get("towers_dropped"):
        notes.append(f"Jigsaw siamese tower 0 kept, {facts['towers_dropped']} tower copies dropped")
    if facts.get("folded_biases"):
        notes.append(f"conv biases folded into BatchNorm means: {facts['folded_biases']}")
    if facts.get("bgr"):
        notes.append("conv1 input channels BGR -> RGB")
    if name == "alexnet" and task == "jigsaw":
        config.model.alexnet_lrn = False
        notes.append("AlexNet without LRN (FAIR's Jigsaw evaluation graph)")
    if facts.get("affine_bn"):
        # Detectron: BGR pixels minus PIXEL_MEANS, the std absorbed into conv1.
        config.input.mean = tuple(m / 255.0 for m in reversed(fssb.DETECTRON_PIXEL_MEANS_BGR))
        config.input.std = (1 / 255.0,) * 3
        notes.append(
            "detection pickle: BatchNorm folded to affine (running mean 0, variance 1 - eps); "
            "input is RGB pixels minus Detectron's PIXEL_MEANS (input.std = 1/255: the std is "
            "absorbed in conv1)"
        )
    else:
        config.input.mean, config.input.std = IMAGENET_MEAN, IMAGENET_STD
    return notes


def _write(
    workdir: str,
    config: ml_collections.ConfigDict,
    task: Any,
    trunk: dict[str, Any],
    record: dict[str, Any],
) -> None:
    replicated = NamedSharding(loop.make_mesh(), P())
    state, _ = state_lib.pretext_state(config, task, replicated)
    state = jax.device_get(state)
    state["params"]["trunk"] = trunk["params"]
    state["batch_stats"]["trunk"] = trunk["batch_stats"]
    state = jax.device_put(state, replicated)
    paths.makedirs(workdir)
    if jax.process_index() == 0:
        paths.write_text(
            paths.join(workdir, state_lib.CONFIG_FILE), config.to_json_best_effort(indent=2)
        )
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=1, async_save=False)
    try:
        checkpoints.save(0, state, np.zeros((jax.process_count(), 2), np.int64))
    finally:
        checkpoints.close()
    if jax.process_index() == 0:
        paths.write_json(paths.join(workdir, RECORD), record)
    _log.info("imported %s (%s) into %s", record["source"], record["format"], workdir)
