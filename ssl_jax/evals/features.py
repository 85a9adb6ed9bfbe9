"""Frozen features: a trunk's taps, average-pooled as PROTOCOLS.md's table, written to disk.

Extraction follows the paper's benchmark: each image resized to 224 x 224 ignoring aspect (227
for AlexNet), one view, BatchNorm in inference mode, the model's own input convention (Jigsaw:
RGB scaled to [0, 1] and normalised with config.input.mean / std; Colorization: L - 50 of the
8-bit-quantised Lab image, as in pretraining). Each tap is taken after its ReLU, average-pooled
(padding counted, as Caffe2 and PyTorch's AvgPool2d) and flattened in (C, H, W) order, so the
rows match features from FAIR's benchmark up to the trunk's weights.

On disk (``out_dir``): ``{layer}.npy`` float32 (N, D) per layer, written through np.memmap so
that nothing holds N x D in memory; ``labels.npy`` int8 (N, C); ``ids.txt``; ``ok.npy`` bool (N,)
(False for an image that could not be decoded: its row is zeros and evaluations leave it out);
``meta.json`` (layers, dims, model, dataset) and ``progress.json`` (rows done). Rows are written
in dataset order, one global batch at a time; an interrupted extraction resumes after the last
complete batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax.models import make_trunk

_log = logging.getLogger(__name__)

# (kernel, stride, pad) of the average pool per tap, for the input size in INPUT_SIZE; "global"
# averages the whole map. PROTOCOLS.md, "Frozen features for every transfer task".
POOLING = {
    "resnet": {
        "conv1": (10, 10, 4),
        "res2": (16, 8, 0),
        "res3": (13, 5, 0),
        "res4": (8, 3, 0),
        "res5": (6, 1, 0),
        "pool5": "global",
    },
    # Colorization's ResNet keeps res5 at 1/16 (14 x 14 for 224).
    "resnet_res5_stride1": {
        "conv1": (10, 10, 4),
        "res2": (16, 8, 0),
        "res3": (13, 5, 0),
        "res4": (8, 3, 0),
        "res5": (12, 2, 0),
        "pool5": "global",
    },
    "alexnet_jigsaw": {
        "conv1": (28, 9, 0),
        "conv2": (24, 6, 0),
        "conv3": (14, 3, 0),
        "conv4": (14, 3, 0),
        "conv5": (16, 2, 0),
    },
    "alexnet_colorization": {
        "conv1": (19, 4, 0),
        "conv2": (12, 3, 0),
        "conv3": (9, 1, 0),
        "conv4": (9, 1, 0),
        "conv5": (8, 1, 0),
    },
}
INPUT_SIZE = {"resnet": 224, "alexnet": 227}


def family(model_config: ml_collections.ConfigDict) -> str:
    """The POOLING key of a trunk config."""
    if model_config.name == "resnet":
        return "resnet_res5_stride1" if model_config.get("res5_stride", 2) == 1 else "resnet"
    return f"alexnet_{model_config.get('alexnet_variant', 'jigsaw')}"


def default_size(model_config: ml_collections.ConfigDict) -> int:
    return INPUT_SIZE[model_config.name]


def pool_tap(x: jax.Array, spec) -> jax.Array:
    """Average-pools one tap (B, H, W, C) and flattens it to (B, C * h * w) in (C, h, w) order."""
    x = x.astype(jnp.float32)
    if spec == "global":
        return jnp.mean(x, axis=(1, 2))
    kernel, stride, pad = spec
    if x.shape[1] + 2 * pad < kernel or x.shape[2] + 2 * pad < kernel:
        raise ValueError(
            f"A {x.shape[1]}x{x.shape[2]} tap is smaller than the {kernel}x{kernel} pooling "
            "window of PROTOCOLS.md's table, which assumes 224-pixel (AlexNet 227) inputs; set "
            "config.features.size to that size or config.features.pooling='adaptive'."
        )
    summed = jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (1, kernel, kernel, 1), (1, stride, stride, 1),
        ((0, 0), (pad, pad), (pad, pad), (0, 0)),
    )  # fmt: skip
    pooled = summed / float(kernel * kernel)  # padding counts, as count_include_pad=True
    return jnp.transpose(pooled, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def adaptive_pool(x: jax.Array, grid: int) -> jax.Array:
    """PyTorch AdaptiveAvgPool2d to grid x grid, flattened in (C, h, w) order; for inputs of
    other sizes than the table's (e.g. small-image studies)."""
    x = x.astype(jnp.float32)
    h, w = x.shape[1:3]
    rows = []
    for i in range(grid):
        r0, r1 = (i * h) // grid, -(-((i + 1) * h) // grid)
        cols = []
        for j in range(grid):
            c0, c1 = (j * w) // grid, -(-((j + 1) * w) // grid)
            cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
        rows.append(jnp.stack(cols, axis=-1))  # (B, C, grid)
    return jnp.stack(rows, axis=-2).reshape(x.shape[0], -1)  # (B, C, grid, grid)


def _output_grid(spec, size_in: int) -> int:
    kernel, stride, pad = spec
    return (size_in + 2 * pad - kernel) // stride + 1


def layer_specs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Tap name -> pooling spec for the trunk of ``config`` (a pretraining config) and the
    feature settings ``config.features`` (layers, pooling)."""
    table = POOLING[family(config.model)]
    features = config.get("features", ml_collections.ConfigDict())
    layers = features.get("layers") or tuple(table)
    unknown = [name for name in layers if name not in table]
    if unknown:
        raise ValueError(
            f"config.features.layers has {unknown}, not taps of this trunk; allowed: {list(table)}."
        )
    return {name: table[name] for name in layers}


def model_inputs(config: ml_collections.ConfigDict, images: jax.Array) -> jax.Array:
    """The trunk's input for uint8 RGB images (B, S, S, 3), as in pretraining."""
    if config.task == "colorization":
        from ssl_jax.colorization.task import lab_targets

        lightness, _, _ = lab_targets(images, 1, config.colorization.quantize)
        return lightness
    mean = jnp.asarray(tuple(config.input.mean), jnp.float32)
    std = jnp.asarray(tuple(config.input.std), jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def make_feature_fn(config: ml_collections.ConfigDict, size: int):
    """A jitted ``(trunk_variables, images uint8 (B, S, S, 3)) -> {layer: float32 (B, D)}``.

    ``trunk_variables`` is {"params", "batch_stats"} of the trunk alone (see ``trunk_variables``).
    Pooling follows PROTOCOLS.md's table unless config.features.pooling == "adaptive", which
    pools every tap to the table's output grid whatever the input size.
    """
    trunk = make_trunk(config.model, jnp.float32).clone(bn_group_size=None)
    specs = layer_specs(config)
    features_config = config.get("features", ml_collections.ConfigDict())
    adaptive = features_config.get("pooling", "table") == "adaptive"
    table_size = default_size(config.model)

    def grid_of(name, spec, tap):
        if spec == "global":
            return None
        # The table's output grid at the table's input size, from the tap's size at that size.
        scale = tap.shape[1] * table_size / size
        return _output_grid(spec, round(scale))

    def features(variables, images):
        _, taps = trunk.apply(variables, model_inputs(config, images), train=False)
        taps = dict(taps)
        if "pool5" in specs:
            taps["pool5"] = taps["res5"]
        out = {}
        for name, spec in specs.items():
            if adaptive and spec != "global":
                out[name] = adaptive_pool(taps[name], grid_of(name, spec, taps[name]))
            else:
                out[name] = pool_tap(taps[name], spec)
        return out

    return jax.jit(features)


def trunk_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The trunk's {"params", "batch_stats"} out of a pretext model's variables."""
    try:
        params = variables["params"]["trunk"]
    except KeyError as e:
        raise ValueError(
            "The variables have no 'trunk' entry; expected a pretext model's variables "
            f"(keys: {list(variables.get('params', {}))})."
        ) from e
    return {"params": params, "batch_stats": variables.get("batch_stats", {}).get("trunk", {})}


def feature_dims(config: ml_collections.ConfigDict, size: int) -> dict[str, int]:
    """Width of each layer's features, from shapes alone."""
    fn = make_feature_fn(config, size)
    trunk = make_trunk(config.model, jnp.float32)
    channels = 1 if config.task == "colorization" else 3
    example = jnp.zeros((1, size, size, channels), jnp.float32)
    variables = jax.eval_shape(lambda: trunk.init(jax.random.PRNGKey(0), example, train=False))
    shapes = jax.eval_shape(fn, variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8))
    return {name: int(shapes[name].shape[1]) for name in layer_specs(config)}  # table order


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def extract(
    config: ml_collections.ConfigDict,
    variables: dict[str, Any],
    dataset,
    out_dir: str,
    *,
    batch_size: int = 64,
    size: int | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Writes the pooled taps of every image of ``dataset`` to ``out_dir``; resumes.

    Args:
      config: the pretraining run's config (task, model, input; optional features.layers /
        features.pooling).
      variables: the trunk's {"params", "batch_stats"} (``trunk_variables``), any sharding.
      dataset: an ``ssl_jax.evals.datasets.LabelledSet``.
      out_dir: where the arrays go (created).
      batch_size: global images per forward pass; a multiple of the device count.
      size: input size; None for 224 (ResNet) / 227 (AlexNet).
      description: what the weights are (a workdir and step), stored in meta.json; a different
        description or dataset in an existing out_dir restarts the extraction.

    Returns:
      meta.json's content: {"layers": {name: dim}, "num_examples", "skipped", ...}.
    """
    size = size or default_size(config.model)
    devices = jax.device_count()
    if batch_size % devices:
        raise ValueError(
            f"Feature batch {batch_size} does not split over {devices} devices; set "
            f"config.features.batch_size to a multiple of {devices}."
        )
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    n = dataset.num_examples
    dims = feature_dims(config, size)
    meta = {
        "dataset": dataset.name,
        "num_examples": n,
        "num_classes": len(dataset.class_names),
        "class_names": list(dataset.class_names),
        "layers": dims,
        "size": size,
        "model": config.model.to_dict(),
        "task": config.task,
        "weights": description,
        "batch_size": batch_size,
        "process_count": jax.process_count(),
    }
    os.makedirs(out_dir, exist_ok=True)
    meta_path, progress_path = (os.path.join(out_dir, f) for f in ("meta.json", "progress.json"))
    old = _read_json(meta_path)
    progress = _read_json(progress_path) if old == meta else None
    done = int(progress["rows"]) if progress else 0
    if done >= n:
        return meta
    leader = jax.process_index() == 0
    mode = "r+" if done else "w+"
    if leader:
        if not done:
            _write_json(meta_path, meta)
            np.save(os.path.join(out_dir, "labels.npy"), dataset.labels.astype(np.int8))
            with open(os.path.join(out_dir, "ids.txt"), "w") as f:
                f.write("\n".join(str(i) for i in dataset.ids) + "\n")
        arrays = {
            name: np.lib.format.open_memmap(
                os.path.join(out_dir, f"{name}.npy"), mode=mode, dtype=np.float32, shape=(n, dim)
            )
            for name, dim in dims.items()
        }
        ok_all = np.lib.format.open_memmap(
            os.path.join(out_dir, "ok.npy"), mode=mode, dtype=np.bool_, shape=(n,)
        )
    else:
        arrays, ok_all = {}, None

    variables = jax.device_put(variables, replicated)
    fn = make_feature_fn(config, size)
    processes, index = jax.process_count(), jax.process_index()
    local = batch_size // processes
    if batch_size % processes:
        raise ValueError(f"Feature batch {batch_size} does not split over {processes} processes.")
    # Global batch b holds positions [b * batch_size, (b + 1) * batch_size); process p reads its
    # strided share of them, so that every process walks the same number of batches.
    ds = dataset.images(size=size, process_index=index, process_count=processes)
    ds = ds.skip(done // processes).batch(local).prefetch(2)
    start, written = time.perf_counter(), done
    for batch in ds.as_numpy_iterator():
        count = len(batch["position"])
        if count < local:  # the last, partial batch: pad with blanks that are never written
            pad = local - count
            batch = {
                "position": np.concatenate([batch["position"], np.full(pad, -1)]),
                "image": np.concatenate(
                    [batch["image"], np.zeros((pad, *batch["image"].shape[1:]), np.uint8)]
                ),
                "ok": np.concatenate([batch["ok"], np.zeros(pad, bool)]),
            }
        images = jax.make_array_from_process_local_data(batch_sharding, batch["image"])
        out = fn(variables, images)
        positions, ok = batch["position"], batch["ok"]
        if processes > 1:
            from jax.experimental import multihost_utils

            positions = np.asarray(multihost_utils.process_allgather(positions)).reshape(-1)
            ok = np.asarray(multihost_utils.process_allgather(ok)).reshape(-1)
        out = {name: _fetch(value) for name, value in out.items()}
        if leader:
            keep = positions >= 0
            rows = positions[keep]
            for name, value in out.items():
                arrays[name][rows] = value[keep]
            ok_all[rows] = ok[keep]
            written += int(keep.sum())
            for array in (*arrays.values(), ok_all):
                array.flush()
            _write_json(progress_path, {"rows": written})
        else:
            written += int((positions >= 0).sum())
        if written and (written // batch_size) % 20 == 0:
            rate = (written - done) / max(time.perf_counter() - start, 1e-9)
            _log.info("features %s: %d/%d images (%.1f img/s)", dataset.name, written, n, rate)
    if leader:
        skipped = int(n - np.count_nonzero(ok_all))
        meta["skipped"] = skipped
        meta["seconds"] = time.perf_counter() - start
        _write_json(meta_path, meta)
        _write_json(progress_path, {"rows": n})
    return meta


def _fetch(value: jax.Array) -> np.ndarray:
    """A global array's full value on every process."""
    if jax.process_count() == 1:
        return np.asarray(value)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def load(out_dir: str) -> dict[str, Any]:
    """Features written by ``extract``: meta, labels, ids, ok, and layers (name -> memmap)."""
    meta = _read_json(os.path.join(out_dir, "meta.json"))
    progress = _read_json(os.path.join(out_dir, "progress.json"))
    if meta is None or progress is None or progress["rows"] < meta["num_examples"]:
        raise FileNotFoundError(
            f"{out_dir} holds no complete feature extraction; run the evaluation again to "
            "finish it."
        )
    with open(os.path.join(out_dir, "ids.txt")) as f:
        ids = f.read().splitlines()
    return {
        "meta": meta,
        "labels": np.load(os.path.join(out_dir, "labels.npy")),
        "ids": ids,
        "ok": np.load(os.path.join(out_dir, "ok.npy")),
        "layers": {
            name: np.load(os.path.join(out_dir, f"{name}.npy"), mmap_mode="r")
            for name in meta["layers"]
        },
    }
