"""Frozen features: a trunk's taps, average-pooled as PROTOCOLS.md's table, stored in a workdir.

Extraction follows the paper's benchmark: each image resized to 224 x 224 ignoring aspect (227
for AlexNet), one view, BatchNorm in inference mode, the task's own input convention
(``task.model_inputs``: Jigsaw and supervised trunks see RGB normalised with config.input.mean /
std, Colorization trunks L - 50 of the 8-bit-quantised Lab image, as in pretraining). Each tap is
taken after its ReLU, average-pooled (padding counted, as Caffe2 and PyTorch's AvgPool2d) and
flattened in (C, H, W) order, so the rows match features from FAIR's benchmark up to the
trunk's weights.

Storage (``out_dir``, a local folder or a gs:// URL, through ``ssl_jax.paths``): ``meta.json``
(layers, dims, model, dataset), ``labels.npy`` int8 (N, C), ``ids.txt``, and the rows in parts:
``{layer}/{first_row:09d}.npy`` float32 (rows, D) and ``ok/{first_row:09d}.npy`` bool (False for
an image that could not be decoded: its row is zeros and evaluations leave it out), with
``progress.json`` (rows done). Every process extracts its share of each global batch; the
features are gathered on every process and process 0 writes each part once (no process needs a
disk another can see, only the path layer's workdir); an interrupted extraction resumes after
the last complete part. SIGTERM (``ssl_jax.train.preemption``) stops it between batches, on every
process at the same batch, keeping the parts written.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_lib, paths
from ssl_jax.evals import base
from ssl_jax.models import make_trunk
from ssl_jax.pretext import Pretext
from ssl_jax.train import preemption

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


FORMAT = 2  # the storage layout above; another format in out_dir means a fresh extraction
PART_BATCHES = 16  # global batches per stored part (the unit of resumption)
_OUTCOME = ("skipped", "seconds")  # meta.json keys added when an extraction completes


def layer_specs(
    model_config: ml_collections.ConfigDict, features: ml_collections.ConfigDict | None = None
) -> dict[str, Any]:
    """Tap name -> pooling spec for the trunk ``model_config`` and the feature settings
    ``features`` (``layers``: () for every tap of the table)."""
    table = POOLING[family(model_config)]
    layers = (features or {}).get("layers") or tuple(table)
    unknown = [name for name in layers if name not in table]
    if unknown:
        raise ValueError(
            f"config.features.layers has {unknown}, not taps of this trunk; allowed: {list(table)}."
        )
    return {name: table[name] for name in layers}


def check_config(
    features: ml_collections.ConfigDict, model_config: ml_collections.ConfigDict
) -> None:
    """Start-up checks of a benchmark's ``config.features`` for a trunk: the pooling, the layers
    and (where there is one) a batch that splits over the devices; raises ConfigError."""
    if features.pooling not in ("table", "adaptive"):
        raise config_lib.ConfigError(
            f"config.features.pooling={features.pooling!r}; allowed: table, adaptive."
        )
    try:
        layer_specs(model_config, features)
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from e
    batch = features.get("batch_size")
    if batch is not None and (batch <= 0 or batch % jax.device_count()):
        raise config_lib.ConfigError(
            f"config.features.batch_size={batch} must be a positive multiple of the "
            f"{jax.device_count()} devices."
        )


def make_feature_fn(task: Pretext, features: ml_collections.ConfigDict | None, size: int):
    """A jitted ``(trunk_variables, images uint8 (B, S, S, 3)) -> {layer: float32 (B, D)}``.

    ``trunk_variables`` is {"params", "batch_stats"} of the trunk alone (see ``trunk_variables``).
    Pooling follows PROTOCOLS.md's table unless ``features.pooling == "adaptive"``, which pools
    every tap to the table's output grid whatever the input size.
    """
    model_config = task.config.model
    trunk = make_trunk(model_config, jnp.float32).clone(bn_group_size=None)
    specs = layer_specs(model_config, features)
    adaptive = (features or {}).get("pooling", "table") == "adaptive"
    table_size = default_size(model_config)

    def grid_of(spec, tap):
        # The table's output grid at the table's input size, from the tap's size at that size.
        scale = tap.shape[1] * table_size / size
        return _output_grid(spec, round(scale))

    def extract_taps(variables, images):
        _, taps = trunk.apply(variables, task.model_inputs(images), train=False)
        taps = dict(taps)
        if "pool5" in specs:
            taps["pool5"] = taps["res5"]
        out = {}
        for name, spec in specs.items():
            if adaptive and spec != "global":
                out[name] = adaptive_pool(taps[name], grid_of(spec, taps[name]))
            else:
                out[name] = pool_tap(taps[name], spec)
        return out

    return jax.jit(extract_taps)


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


def feature_dims(
    task: Pretext, features: ml_collections.ConfigDict | None, size: int
) -> dict[str, int]:
    """Width of each layer's features, from shapes alone (in the table's order)."""
    fn = make_feature_fn(task, features, size)
    trunk = make_trunk(task.config.model, jnp.float32)
    example = jnp.zeros((1, size, size, task.input_channels), jnp.float32)
    variables = jax.eval_shape(lambda: trunk.init(jax.random.PRNGKey(0), example, train=False))
    shapes = jax.eval_shape(fn, variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8))
    return {name: int(shapes[name].shape[1]) for name in layer_specs(task.config.model, features)}


def _read_json(path: str) -> dict | None:
    return paths.read_json(path) if paths.isfile(path) else None


def _part(out_dir: str, name: str, first: int) -> str:
    return paths.join(out_dir, name, f"{first:09d}.npy")


def extract(
    task: Pretext,
    features: ml_collections.ConfigDict | None,
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
      task: the pretext task whose trunk is evaluated (model config, input convention).
      features: the feature settings (layers, pooling), or None for the table's.
      variables: the trunk's {"params", "batch_stats"} (``trunk_variables``), any sharding.
      dataset: an ``ssl_jax.data.labelled.LabelledSet`` (with its labels).
      out_dir: where the arrays go (local or a URL; created).
      batch_size: global images per forward pass; a multiple of the device count.
      size: input size; None for 224 (ResNet) / 227 (AlexNet).
      description: what the weights are (a workdir and step), stored in meta.json; a different
        description or dataset in an existing out_dir restarts the extraction, and so do the
        same set's images in another order (ids.txt and labels.npy are compared row by row).

    Returns:
      meta.json's content: {"layers": {name: dim}, "num_examples", "skipped", ...}.
    """
    model_config = task.config.model
    size = size or default_size(model_config)
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size % devices or batch_size % processes:
        raise ValueError(
            f"Feature batch {batch_size} does not split over {devices} devices in {processes} "
            f"processes; set config.features.batch_size to a multiple of {devices}."
        )
    dataset = dataset.with_labels()
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    n = dataset.num_examples
    dims = feature_dims(task, features, size)
    part_rows = PART_BATCHES * batch_size
    meta = {
        "format": FORMAT,
        "dataset": dataset.name,
        "num_examples": n,
        "num_classes": len(dataset.class_names),
        "class_names": list(dataset.class_names),
        "layers": dims,
        "size": size,
        "model": model_config.to_dict(),
        "task": task.name,
        "input_channels": task.input_channels,
        "weights": description,
        "batch_size": batch_size,
        "part_rows": part_rows,
    }
    meta_path, progress_path = (paths.join(out_dir, f) for f in ("meta.json", "progress.json"))
    old = _read_json(meta_path)
    same = old is not None and {k: v for k, v in old.items() if k not in _OUTCOME} == meta
    same = same and _same_rows(out_dir, dataset)
    progress = _read_json(progress_path) if same else None
    done = int(progress["rows"]) if progress else 0
    if done >= n:
        return old
    if done:
        _log.info(
            "features %s: resuming after the %d/%d rows saved in %s", dataset.name, done, n, out_dir
        )
    leader = base.is_leader()
    if leader and not done:
        paths.makedirs(out_dir)
        paths.write_json(meta_path, meta)
        paths.write_json(progress_path, {"rows": 0})
        paths.save_npy(paths.join(out_dir, "labels.npy"), dataset.labels.astype(np.int8))
        paths.write_text(paths.join(out_dir, "ids.txt"), "\n".join(map(str, dataset.ids)) + "\n")

    variables = jax.device_put(variables, replicated)
    fn = make_feature_fn(task, features, size)
    index = jax.process_index()
    local = batch_size // processes
    # Global batch b holds positions [b * batch_size, (b + 1) * batch_size); process p reads its
    # strided share of them, so that every process walks the same number of batches.
    ds = dataset.images(size=size, process_index=index, process_count=processes)
    ds = ds.skip(done // processes).batch(local).prefetch(2)
    start, written, resumed_at = time.perf_counter(), done, done
    part: dict[str, list[np.ndarray]] = {}
    for batch in ds.as_numpy_iterator():
        preemption.check(f"features {dataset.name}: {done}/{n} rows saved in {out_dir}")
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
        out = {name: _fetch(value) for name, value in fn(variables, images).items()}
        positions, ok = _gather(batch["position"]), _gather(batch["ok"])
        keep = positions >= 0
        order = np.argsort(positions[keep], kind="stable")  # global batches are in row order
        for name, value in out.items():
            part.setdefault(name, []).append(value[keep][order])
        part.setdefault("ok", []).append(ok[keep][order])
        written += int(keep.sum())
        if written - done >= part_rows or written >= n:
            if leader:
                for name, chunks in part.items():
                    paths.save_npy(_part(out_dir, name, done), np.concatenate(chunks))
                paths.write_json(progress_path, {"rows": written})
            part, done = {}, written
            rate = (written - resumed_at) / max(time.perf_counter() - start, 1e-9)
            _log.info("features %s: %d/%d images (%.1f img/s)", dataset.name, written, n, rate)
    if leader:
        ok_all = np.concatenate(
            [paths.load_npy(_part(out_dir, "ok", first)) for first in _parts(n, part_rows)]
        )
        meta["skipped"] = int(n - np.count_nonzero(ok_all))
        meta["seconds"] = time.perf_counter() - start
        paths.write_json(meta_path, meta)
        paths.write_json(progress_path, {"rows": n})
    base.barrier(f"features {out_dir}")
    return meta


def _same_rows(out_dir: str, dataset) -> bool:
    """Whether out_dir's ids.txt and labels.npy are the dataset's, row for row. meta.json names
    the set but not its order: the same set from another source (VOC07 from TFDS, stored
    shuffled, or from a VOCdevkit, in id order) must start afresh, not resume or reuse rows
    stored in another order."""
    ids_path, labels_path = (paths.join(out_dir, f) for f in ("ids.txt", "labels.npy"))
    if not (paths.isfile(ids_path) and paths.isfile(labels_path)):
        return False
    if paths.read_text(ids_path).splitlines() != [str(i) for i in dataset.ids]:
        return False
    return bool(np.array_equal(paths.load_npy(labels_path), dataset.labels))


def _parts(n: int, part_rows: int) -> range:
    """The first rows of the stored parts of n rows."""
    return range(0, n, part_rows)


def _gather(local: np.ndarray) -> np.ndarray:
    """Every process's rows of a per-process array, in process order."""
    if jax.process_count() == 1:
        return np.asarray(local)
    return np.asarray(multihost_utils.process_allgather(local)).reshape(-1, *local.shape[1:])


def _fetch(value: jax.Array) -> np.ndarray:
    """A global array's full value on every process."""
    if jax.process_count() == 1:
        return np.asarray(value)
    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


class Stored:
    """Features written by ``extract``: meta, labels (N, C), ids, ok (N,), and each layer's rows
    read on demand (``layer(name)``, float32 (N, D)), one layer in memory at a time."""

    def __init__(self, out_dir: str):
        meta = _read_json(paths.join(out_dir, "meta.json"))
        progress = _read_json(paths.join(out_dir, "progress.json"))
        if (
            meta is None
            or meta.get("format") != FORMAT
            or progress is None
            or progress["rows"] < meta["num_examples"]
        ):
            raise FileNotFoundError(
                f"{out_dir} holds no complete feature extraction; run the evaluation again to "
                "finish it."
            )
        self.out_dir, self.meta = out_dir, meta
        self.labels = paths.load_npy(paths.join(out_dir, "labels.npy"))
        self.ids = paths.read_text(paths.join(out_dir, "ids.txt")).splitlines()
        self.ok = self._rows("ok")

    def _rows(self, name: str) -> np.ndarray:
        parts = _parts(self.meta["num_examples"], self.meta["part_rows"])
        return np.concatenate([paths.load_npy(_part(self.out_dir, name, first)) for first in parts])

    def layer(self, name: str) -> np.ndarray:
        if name not in self.meta["layers"]:
            raise KeyError(f"{name!r} is not a stored layer; stored: {list(self.meta['layers'])}.")
        return self._rows(name)


def load(out_dir: str) -> Stored:
    """The features ``extract`` wrote in ``out_dir`` (complete, else FileNotFoundError)."""
    return Stored(out_dir)
