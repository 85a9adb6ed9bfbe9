"""Input images/s per core and checkpoint times, from a (emulated) bucket and local disk; pod sums.

Usage:
  python benchmarks/pod_throughput.py [--images N] [--rounds R] [--cores 1,2]
      [--tasks jigsaw,colorization] [--sets photos,cifar] [--batch B] [--saves S]
      [--skip_input] [--skip_checkpoint] [--quick] [--out FILE]
Writes benchmarks/results/pod_throughput.json. `--quick` (a few dozen images, one round, one
save, no CIFAR rows) checks that everything runs in a few minutes.

Input pipeline. The library's own pretraining input (`ssl_jax.data.make_source` of a
``folder=PATH`` config and `pretrain_iterator`), built from configs/jigsaw_r50.py (resize the
short side to 256, random 255 crop, flip) and configs/colorize_r50.py (256, random 224 crop,
flip), without `:runlocal`: read the JPEG, decode it with Pillow (at a reduced DCT scale when it
is at least twice 256 on its short side), resize the crop window (antialiased), flip, batch as
uint8 (B, crop, crop, 3). That is the whole host side: Jigsaw's tiles and Colorization's Lab
conversion and targets are made on the accelerator, inside the jitted train step (the train-step
sections of BENCHMARKS.md time them there). Each measurement is a fresh subprocess pinned with
`taskset` to the first 1 (or 2) cores, with the pipeline's defaults (tf.data AUTOTUNE, prefetch 2,
batch --batch); it takes 3 warm-up batches, then times about --images images. Two figures per
run: images per second of wall time, and images per CPU-second of the input process (its user +
system time in the timed window; the one a busy machine disturbs least).

Where the JPEGs are read from, in turn for each setting so that the two are a same-run pair:
- the bucket: `gs://pod-bench/...` on the GCS emulator of tests/gcs.py (`gcs_emulator()`), read
  through ssl_jax.paths (gcsfs). With one core the emulator is pinned to the other core, so its
  own work (a Python HTTP server) is not charged to the input; with two cores it shares them,
  and its CPU time is reported beside the run;
- local disk: a copy of the same files in a temporary folder (in the page cache after the first
  read, as the emulator's in-memory objects are).

Image sets: "photos", the 364 real photos of /work/shared/data/detection (VOC layout, RGB JPEG
quality 90, at most 500 pixels on the long side: 426 x 316 on average, 49 kB) and the 6 demo
photos of ssl_jax/data/demo_photos (451 x 300 to 640 x 427), close to ImageNet's average of
about 400 x 350 and about 110 kB: the main measure. "cifar": 512 CIFAR-10 training JPEGs
(32 x 32, about 1 kB; upscaled to 256), a reference for a per-file cost with almost no decoding.

Checkpoints. The full ResNet-50 Jigsaw state of configs/jigsaw_r50.py (depth 50, width 1,
|P| = 2000: params, batch_stats, SGD momentum, step, rng) made by the library's
`train.state.pretext_state`, saved and restored by `train.checkpoint.Checkpoints` as the training
loop does (orbax, asynchronous), --saves times to a workdir in the bucket and to one on local
disk, alternating. Per save: the seconds `save` blocks the caller (what a training step waits
for), and the seconds until the write is complete (`wait_until_finished`). Then one restore of
the latest checkpoint from each, blocked until the arrays are ready.

The load of the machine (other processes share its two cores) is recorded before and after
every measurement (/proc/loadavg), and as the cores other processes kept busy meanwhile
(/proc/stat, less this benchmark's processes). A setting whose run saw more than 0.5 busy cores
of others is run again, at most twice.

Pod arithmetic: `pod_estimates` turns the measured per-core rates, the H100 images/s of
benchmarks/results/h100/ and XLA's FLOP counts of benchmarks/results/*train_step.json into
host cores needed per TPU v4-8 host, v5e-8 host and 8x H100 node, and wall time and cost of
the paper's 105-epoch ImageNet-1k run and of one YFCC-100M epoch. Every number there that is not
measured is an assumption listed in ASSUMPTIONS (prices, peaks, utilisation, host sizes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.machine import machine_info, write_result  # noqa: E402
from ssl_jax import config_lib, paths, tasks  # noqa: E402
from ssl_jax.train import checkpoint as ckpt_lib  # noqa: E402
from ssl_jax.train import loop  # noqa: E402
from ssl_jax.train import state as state_lib  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CONFIGS = {
    "jigsaw": os.path.join(ROOT, "configs", "jigsaw_r50.py"),
    "colorization": os.path.join(ROOT, "configs", "colorize_r50.py"),
}
PHOTO_DIRS = (
    "/work/shared/data/detection/VOCdevkit/VOC2007/JPEGImages",
    os.path.join(ROOT, "ssl_jax", "data", "demo_photos"),
)
CIFAR_DIR = "/work/shared/data/cifar10/train"
CIFAR_FILES = 512
BUCKET = "pod-bench"
WARMUP_BATCHES = 3
QUIET_OTHERS = 0.5  # busy cores of other processes above which a run is repeated
MAX_REPEATS = 2

# ---------------------------------------------------------------------------------------------
# Assumptions of the pod arithmetic (not measured here). Prices: on-demand list prices, USD,
# as of 2025, not re-checked from this (offline) machine.
IMAGENET_IMAGES = 1_281_167
IMAGENET_EPOCHS = 105
YFCC_IMAGES = 100_000_000
BATCH = 256  # the paper's global batch
CHECKPOINT_EVERY = 1000  # config.train.checkpoint_every (configs/jigsaw_r50.py's default)
TUNED_FRACTION = 0.40  # assumed fraction of peak bf16 FLOP/s a tuned step reaches


@dataclasses.dataclass(frozen=True)
class Host:
    """One host of a pod or cluster, with what is assumed of it."""

    name: str
    accelerators: int  # chips or GPUs fed by this host
    vcpus: int  # hardware threads for the input pipeline (all of them: an upper bound)
    peak_tflop_s: float  # dense bfloat16, per accelerator, from the vendor
    price_per_hour: float  # USD, on-demand, the whole host
    price_note: str


HOSTS = (
    Host("TPU v4-8 host", 4, 240, 275.0, 4 * 3.22, "4 chips x $3.22 per chip-hour"),
    Host("TPU v5e-8 host", 8, 224, 197.0, 8 * 1.20, "8 chips x $1.20 per chip-hour"),
    Host(
        "8x H100 node",
        8,
        224,
        989.0,
        88.0,
        "about $11 per GPU-hour, a hyperscaler's on-demand 8x H100 SXM VM (e.g. Google Cloud "
        "a3-highgpu-8g); GPU clouds list about $3 per GPU-hour ($24 per node-hour)",
    ),
)


# ---------------------------------------------------------------------------------------------
# Load of the shared machine


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------
# Data: the same JPEGs in the bucket and on local disk


def image_files(name: str) -> list[str]:
    """The JPEG files of an image set ("photos" or "cifar"), in a fixed order."""
    if name == "photos":
        files = []
        for folder in PHOTO_DIRS:
            files += sorted(
                os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg")
            )
        return files
    if name == "cifar":
        classes = sorted(os.listdir(CIFAR_DIR))
        per_class = -(-CIFAR_FILES // len(classes))
        files = []
        for c in classes:
            folder = os.path.join(CIFAR_DIR, c)
            files += [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:per_class]]
        return files[:CIFAR_FILES]
    raise ValueError(f"--sets: unknown image set {name!r}; allowed: photos, cifar")


def describe_images(files: list[str]) -> dict:
    from PIL import Image

    sizes = np.asarray([Image.open(f).size for f in files], np.float64)
    nbytes = np.asarray([os.path.getsize(f) for f in files], np.float64)
    return {
        "files": len(files),
        "mean_width": float(sizes[:, 0].mean()),
        "mean_height": float(sizes[:, 1].mean()),
        "min_short_side": int(sizes.min(1).min()),
        "max_long_side": int(sizes.max(1).max()),
        "mean_kb": float(nbytes.mean() / 1e3),
    }


def copy_set(files: list[str], local_root: str, bucket_root: str) -> None:
    """Writes the files flat (numbered, so names never clash) to a local folder and the bucket."""
    os.makedirs(local_root, exist_ok=True)
    for i, f in enumerate(files):
        name = f"{i:05d}_{os.path.basename(f)}"
        shutil.copyfile(f, os.path.join(local_root, name))
        with open(f, "rb") as src:
            paths.write_bytes(paths.join(bucket_root, name), src.read())


@contextlib.contextmanager
def emulator() -> str:
    """tests/gcs.py's emulator with BUCKET; STORAGE_EMULATOR_HOST set; yields its server's pid."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import gcs  # tests/gcs.py: the emulator the tests use

    with gcs.gcs_emulator(BUCKET) as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        yield server_pid(url.rsplit(":", 1)[1])


def server_pid(port: str) -> int:
    """The emulator's process, found by the --port argument tests/gcs.py gave it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if f"--port={port}".encode() in args and any(a.endswith(b"gcs.py") for a in args):
            return int(entry)
    raise RuntimeError(f"no emulator process listening on port {port}")


def pin(pid: int, cores: str) -> None:
    """Moves every thread of ``pid`` to ``cores`` (a taskset list such as "1" or "0,1")."""
    subprocess.run(["taskset", "-a", "-p", "-c", cores, str(pid)], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------
# Input rate: one pinned subprocess per measurement


def input_worker(task: str, folder: str, images: int, batch: int) -> dict:
    """Runs in the pinned subprocess: the library's pipeline on ``folder``; rates of one run."""
    from ssl_jax import data as data_lib  # TensorFlow: only in the worker

    config = config_lib.load_config(CONFIGS[task])
    # As --config.data.source=folder --config.data.path=...: the ":folder=" argument of the
    # config files splits at the colon of "gs://".
    config_lib.apply_overrides(config, [("data.source", "folder"), ("data.path", folder)])
    source = data_lib.make_source(config.data)
    batches = data_lib.pretrain_iterator(
        config.data,
        config.input,
        local_batch_size=batch,
        seed=config.seed,
        process_index=0,
        process_count=1,
        source=source,
    )
    start = time.perf_counter()
    for _ in range(WARMUP_BATCHES):
        shape = next(batches)["image"].shape
    warmup = time.perf_counter() - start
    steps = max(1, -(-images // batch))
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        next(batches)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "batch_shape": list(shape),
        "dtype": "uint8",
        "images": steps * batch,
        "wall_s": wall,
        "cpu_s": cpu,
        "warmup_s": warmup,
        "source_files": source.num_examples,
        "skipped": data_lib.skipped_count(),
        "threads_available": len(os.sched_getaffinity(0)),
    }


def measure_input(task, folder, cores, images, batch, emulator_pid) -> dict:
    """One pinned worker run, with the load around it."""
    cpus = ",".join(str(c) for c in range(cores))
    command = ["taskset", "-c", cpus, sys.executable, os.path.abspath(__file__), "--_worker"]
    command += [f"--_task={task}", f"--_folder={folder}", f"--images={images}", f"--batch={batch}"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    load_before, busy, server = loadavg(), busy_seconds(), process_seconds(emulator_pid)
    children = children_seconds()
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"input worker failed ({' '.join(command)}):\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    server = process_seconds(emulator_pid) - server
    # The worker's whole life (imports and warm-up included) against the machine's busy time.
    child = children_seconds() - children
    others = None if busy is None else max(0.0, (busy_seconds() - busy - child - server) / elapsed)
    row.update(
        task=task,
        cores=cores,
        images_per_s=row["images"] / row["wall_s"],
        images_per_s_per_core=row["images"] / row["wall_s"] / cores,
        images_per_cpu_s=row["images"] / row["cpu_s"],
        emulator_cpu_s=server,
        other_cores=others,
        loadavg_before=load_before,
        loadavg_after=loadavg(),
    )
    return row


def emulator_cores(worker_cores: int) -> str:
    """Where the emulator runs while a worker has the first ``worker_cores`` cores: the next
    core if there is one (so its work is not charged to the input), else all of them."""
    total = os.cpu_count() or 1
    if worker_cores < total:
        return str(worker_cores)
    return ",".join(str(c) for c in range(total))


def measure_pair(set_name, task, cores, folders, args, emulator_pid) -> dict:
    """Local disk and bucket runs of one setting, one after the other; repeated (at most
    MAX_REPEATS more times) while other processes kept more than QUIET_OTHERS cores busy.
    Returns the quietest pair and every attempt."""
    pin(emulator_pid, emulator_cores(cores))
    attempts = []
    for _ in range(1 + MAX_REPEATS):
        pair = {
            store: measure_input(task, folders[store], cores, args.images, args.batch, emulator_pid)
            for store in ("local", "bucket")
        }
        noise = max(r["other_cores"] or 0.0 for r in pair.values())
        attempts.append({"pair": pair, "max_other_cores": noise})
        for store, r in pair.items():
            print(
                f"  {set_name:<6} {task:<12} {cores} core(s) {store:<6}: "
                f"{r['images_per_s']:7.1f} images/s, {r['images_per_cpu_s']:7.1f} per CPU-s, "
                f"emulator {r['emulator_cpu_s']:5.1f} CPU-s, others {r['other_cores'] or 0:.2f}, "
                f"load {r['loadavg_before']:.2f} -> {r['loadavg_after']:.2f}",
                flush=True,
            )
        if noise <= QUIET_OTHERS:
            break
        print(f"  others kept {noise:.2f} cores busy: measuring again", flush=True)
    best = min(attempts, key=lambda a: a["max_other_cores"])
    local, bucket = best["pair"]["local"], best["pair"]["bucket"]
    return {
        "set": set_name,
        "task": task,
        "cores": cores,
        "local": local,
        "bucket": bucket,
        "bucket_over_local_wall": bucket["images_per_s"] / local["images_per_s"],
        "bucket_over_local_cpu": bucket["images_per_cpu_s"] / local["images_per_cpu_s"],
        "attempts": attempts,
    }


def measure_inputs(args, tmp: str, emulator_pid: int) -> tuple[list[dict], dict]:
    rows, sets = [], {}
    for set_name in args.sets:
        files = image_files(set_name)
        sets[set_name] = describe_images(files)
        folders = {
            "local": os.path.join(tmp, set_name),
            "bucket": f"gs://{BUCKET}/{set_name}",
        }
        copy_set(files, folders["local"], folders["bucket"])
        sets[set_name]["bucket_files"] = len(paths.listdir(folders["bucket"]))
        print(f"{set_name}: {json.dumps(sets[set_name])}", flush=True)
        # CIFAR is a reference row: one task, the smallest core count.
        tasks = args.tasks if set_name == "photos" else args.tasks[:1]
        cores = args.cores if set_name == "photos" else args.cores[:1]
        for task in tasks:
            for c in cores:
                rows.append(measure_pair(set_name, task, c, folders, args, emulator_pid))
    pin(emulator_pid, emulator_cores(os.cpu_count() or 1))
    return rows, sets


# ---------------------------------------------------------------------------------------------
# Checkpoints of the full ResNet-50 Jigsaw state


def jigsaw_state() -> dict:
    """The initial train state of configs/jigsaw_r50.py, as the trainer makes it (on this CPU)."""
    config = config_lib.load_config(CONFIGS["jigsaw"])
    task = tasks.create(config)
    task.fit(None)  # the permutation set (|P| = config.jigsaw.num_perms)
    replicated = NamedSharding(loop.make_mesh(), PartitionSpec())
    state, _ = state_lib.pretext_state(config, task, replicated)
    # A new state's SGD momentum is all zeros, which orbax's compressed chunks store in almost
    # no bytes; a trained one's is as dense as the weights. Random values of the same shapes
    # give the checkpoint its trained size.
    leaves, treedef = jax.tree.flatten(state["opt_state"])
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    state["opt_state"] = jax.tree.unflatten(
        treedef,
        [
            1e-3 * jax.random.normal(k, x.shape, x.dtype)
            if jnp.issubdtype(x.dtype, jnp.floating)
            else x
            for k, x in zip(keys, leaves, strict=True)
        ],
    )
    return jax.block_until_ready(state)


def stored_bytes(directory: str) -> int:
    """Bytes of every file under a local folder or gs:// prefix."""
    if paths.is_url(directory):
        paths.configure()
        return int(fsspec.filesystem("gs").du(directory))
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(directory) for f in names
    )


def measure_checkpoints(state: dict, workdirs: dict[str, str], saves: int, emulator_pid) -> dict:
    """``saves`` saves to each workdir (alternating), then one restore from each."""
    positions = np.zeros((1, 2), np.int64)
    stores = {name: ckpt_lib.Checkpoints(w, keep=2) for name, w in workdirs.items()}
    rows = {name: {"saves": []} for name in stores}
    for i in range(saves):
        for name, checkpoints in stores.items():
            load, busy, server = loadavg(), busy_seconds(), process_seconds(emulator_pid)
            own = time.process_time()
            start = time.perf_counter()
            checkpoints.save(i + 1, state, positions)
            blocked = time.perf_counter() - start
            checkpoints.manager.wait_until_finished()
            complete = time.perf_counter() - start
            server = process_seconds(emulator_pid) - server
            others = None
            if busy is not None:
                used = busy_seconds() - busy - (time.process_time() - own) - server
                others = max(0.0, used / complete)
            size = stored_bytes(paths.join(checkpoints.directory, str(i + 1)))
            row = {
                "step": i + 1,
                "blocked_s": blocked,
                "complete_s": complete,
                "mb": size / 1e6,
                "mb_per_s": size / 1e6 / complete,
                "emulator_cpu_s": server,
                "other_cores": others,
                "loadavg_before": load,
                "loadavg_after": loadavg(),
            }
            rows[name]["saves"].append(row)
            print(
                f"  save {i + 1} to {name:<6}: blocked {blocked:6.2f} s, complete "
                f"{complete:6.2f} s, {row['mb']:.0f} MB, others {others or 0:.2f}, load "
                f"{load:.2f} -> {row['loadavg_after']:.2f}",
                flush=True,
            )
    for name, checkpoints in stores.items():
        load, start = loadavg(), time.perf_counter()
        restored, _ = checkpoints.restore(checkpoints.latest_step(), ckpt_lib.abstract_like(state))
        jax.block_until_ready(restored)
        seconds = time.perf_counter() - start
        same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True)
        )
        del restored
        rows[name]["restore"] = {
            "s": seconds,
            "equal": same,
            "loadavg_before": load,
            "loadavg_after": loadavg(),
        }
        print(f"  restore from {name:<6}: {seconds:6.2f} s (equal to the saved state: {same})")
        checkpoints.close()
    for row in rows.values():
        saves_ = row["saves"]
        row["blocked_s_median"] = statistics.median(s["blocked_s"] for s in saves_)
        row["complete_s_median"] = statistics.median(s["complete_s"] for s in saves_)
        row["mb"] = saves_[-1]["mb"]
    return rows


# ---------------------------------------------------------------------------------------------
# Pod arithmetic (estimates)


def run_estimate(
    host: Host,
    device_images_per_s: float,
    core_images_per_s: float,
    images: int,
    save_blocks_s: float,
    save_complete_s: float,
) -> dict:
    """Wall time and cost of training on ``images`` images with one such host (an estimate).

    The accelerators ask for demand = accelerators x device_images_per_s images/s; the host's
    input can give at most feed = vcpus x core_images_per_s; the run goes at min(demand, feed).
    Every CHECKPOINT_EVERY steps of BATCH images a save blocks the step for save_blocks_s and
    completes in the background after save_complete_s; if that is later than the next save
    (interval = CHECKPOINT_EVERY x BATCH / rate seconds on), the next save waits for it too.
    With H such hosts (a pod slice, a cluster) the hours divide by H and the cost stays the
    same, if the step scales linearly.

      pause = save_blocks_s + max(0, save_complete_s - save_blocks_s - interval)
      hours = (images / min(demand, feed) + checkpoints x pause) / 3600
      cost  = hours x host.price_per_hour
    """
    demand = host.accelerators * device_images_per_s
    feed = host.vcpus * core_images_per_s
    rate = min(demand, feed)
    interval = CHECKPOINT_EVERY * BATCH / rate
    pause = save_blocks_s + max(0.0, save_complete_s - save_blocks_s - interval)
    checkpoints = images // BATCH // CHECKPOINT_EVERY
    seconds = images / rate + checkpoints * pause
    return {
        "demand_images_per_s": demand,
        "cores_needed": demand / core_images_per_s,
        "feed_images_per_s": feed,
        "bound": "input" if feed < demand else "accelerators",
        "images_per_s": rate,
        "checkpoints": checkpoints,
        "checkpoint_interval_s": interval,
        "checkpoint_pause_s": pause,
        "checkpoint_hours": checkpoints * pause / 3600,
        "hours": seconds / 3600,
        "cost_usd": seconds / 3600 * host.price_per_hour,
    }


def step_inputs() -> dict:
    """Per task: XLA's FLOPs per training image (ResNet-50, CPU cost analysis) and the H100's
    measured JAX images/s (bfloat16), from the results of benchmarks/train_step.py."""
    out = {}
    for task, cpu_file, gpu_file in (
        ("jigsaw", "train_step.json", "h100/ts_jigsaw_gpu.json"),
        ("colorization", "colorization_train_step.json", "h100/ts_colorization_gpu256.json"),
    ):
        with open(os.path.join(RESULTS, cpu_file)) as f:
            cpu_rows = [r for r in json.load(f)["rows"] if r["model"] == "resnet50"]
        with open(os.path.join(RESULTS, gpu_file)) as f:
            gpu_rows = json.load(f)["rows"]
        cpu = max((r for r in cpu_rows if r["framework"] == "jax"), key=lambda r: r["batch"])
        gpu = next(r for r in gpu_rows if r["model"] == "resnet50" and r["framework"] == "jax")
        out[task] = {
            "flop_per_image": cpu["gflop_per_step"] * 1e9 / cpu["batch"],
            "flop_source": f"benchmarks/results/{cpu_file}, resnet50 batch {cpu['batch']}",
            "h100_images_per_s": gpu["images_per_s"],
            "h100_batch": gpu["batch"],
            "h100_source": f"benchmarks/results/{gpu_file}, resnet50 batch {gpu['batch']}",
        }
    return out


def pod_estimates(
    core_rates: dict[str, float], save_blocks_s: float, save_complete_s: float, steps: dict
) -> list:
    """Rows of estimates: per task, host and accelerator-speed scenario, both runs.

    Scenarios for the accelerator's images/s: "measured" (the H100 only); "H100's fraction"
    (a TPU chip reaching the same fraction of its peak as the measured H100 step does of the
    H100's); "tuned" (TUNED_FRACTION of peak, any accelerator).
    """
    h100 = next(h for h in HOSTS if "H100" in h.name)
    rows = []
    for task, core_rate in core_rates.items():
        flop = steps[task]["flop_per_image"]
        measured = steps[task]["h100_images_per_s"]
        h100_fraction = measured * flop / (h100.peak_tflop_s * 1e12)
        for host in HOSTS:
            scenarios = [("tuned", host.peak_tflop_s * 1e12 * TUNED_FRACTION / flop)]
            if host is h100:
                scenarios.insert(0, ("measured", measured))
            else:
                scenarios.insert(
                    0, ("H100's fraction", host.peak_tflop_s * 1e12 * h100_fraction / flop)
                )
            for scenario, device_rate in scenarios:
                runs = {
                    "imagenet_105_epochs": run_estimate(
                        host,
                        device_rate,
                        core_rate,
                        IMAGENET_EPOCHS * IMAGENET_IMAGES,
                        save_blocks_s,
                        save_complete_s,
                    ),
                    "yfcc_one_epoch": run_estimate(
                        host, device_rate, core_rate, YFCC_IMAGES, save_blocks_s, save_complete_s
                    ),
                }
                rows.append(
                    {
                        "task": task,
                        "host": host.name,
                        "scenario": scenario,
                        "fraction_of_peak": device_rate * flop / (host.peak_tflop_s * 1e12),
                        "device_images_per_s": device_rate,
                        "core_images_per_s": core_rate,
                        "vcpus": host.vcpus,
                        "price_per_hour": host.price_per_hour,
                        **runs,
                    }
                )
    return rows


def assumptions() -> dict:
    return {
        "hosts": [dataclasses.asdict(h) for h in HOSTS],
        "imagenet_images": IMAGENET_IMAGES,
        "imagenet_epochs": IMAGENET_EPOCHS,
        "yfcc_images": YFCC_IMAGES,
        "batch": BATCH,
        "checkpoint_every": CHECKPOINT_EVERY,
        "tuned_fraction_of_peak": TUNED_FRACTION,
        "prices": "on-demand list prices in USD as of 2025, not re-checked from this machine",
    }


# ---------------------------------------------------------------------------------------------
# Tables


def print_input_table(rows: list[dict]) -> None:
    head = (
        f"{'set':<7}{'task':<13}{'cores':>5} {'local img/s':>11} {'bucket img/s':>12} "
        f"{'per core':>9} {'per CPU-s':>9} {'bucket/local':>12} {'emul. CPU-s':>11} "
        f"{'others':>6} {'load':>11}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        b, l_ = r["bucket"], r["local"]
        others = max(b["other_cores"] or 0.0, l_["other_cores"] or 0.0)
        print(
            f"{r['set']:<7}{r['task']:<13}{r['cores']:>5} {l_['images_per_s']:>11.1f} "
            f"{b['images_per_s']:>12.1f} {b['images_per_s_per_core']:>9.1f} "
            f"{b['images_per_cpu_s']:>9.1f} {r['bucket_over_local_wall']:>12.2f} "
            f"{b['emulator_cpu_s']:>11.1f} {others:>6.2f}"
            f" {b['loadavg_before']:>5.2f}-{b['loadavg_after']:<5.2f}"
        )
    print(
        "per core, per CPU-s: the bucket run's images/s over its cores, and its images per"
        " CPU-second of the input process.\nbucket/local: wall images/s of the bucket run over"
        " the local run's. others: the larger of the two runs' busy cores of other processes."
    )


def print_checkpoint_table(rows: dict) -> None:
    head = f"{'store':<8}{'MB':>6} {'save blocks s':>13} {'save complete s':>15} {'restore s':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:<8}{r['mb']:>6.0f} {r['blocked_s_median']:>13.2f} "
            f"{r['complete_s_median']:>15.2f} {r['restore']['s']:>9.2f}"
        )
    print("save: medians over the saves; restore: one, of the latest checkpoint.")


def print_estimates(rows: list[dict]) -> None:
    head = (
        f"{'task':<13}{'host':<16}{'accelerator img/s':<26}{'demand':>8} {'cores':>6} "
        f"{'vCPUs':>5} {'bound':<12} {'IN-1k h':>8} {'IN-1k $':>8} {'YFCC h':>7} {'YFCC $':>8}"
    )
    print("\nESTIMATES (not measured)\n" + head + "\n" + "-" * len(head))
    for r in rows:
        i, y = r["imagenet_105_epochs"], r["yfcc_one_epoch"]
        how = f"{r['device_images_per_s']:,.0f} {r['scenario']} ({r['fraction_of_peak']:.0%})"
        print(
            f"{r['task']:<13}{r['host']:<16}{how:<26}{i['demand_images_per_s']:>8,.0f} "
            f"{i['cores_needed']:>6,.0f} {r['vcpus']:>5} {i['bound']:<12} {i['hours']:>8.1f} "
            f"{i['cost_usd']:>8,.0f} {y['hours']:>7.1f} {y['cost_usd']:>8,.0f}"
        )
    print(
        "accelerator img/s: per chip or GPU, and its fraction of the peak bf16 FLOP/s; demand:"
        " per host; cores: host cores needed at the measured per-core rate;\nIN-1k: 105 epochs"
        " of 1,281,167 images; YFCC: one epoch of 100M; one host (H hosts: hours / H, same $)."
    )


# ---------------------------------------------------------------------------------------------


def core_rates_from(input_rows: list[dict]) -> dict[str, float]:
    """Per task, the per-core input rate the arithmetic uses: the bucket, real photos, one
    core, images per CPU-second of the input process."""
    return {
        r["task"]: r["bucket"]["images_per_cpu_s"]
        for r in input_rows
        if r["set"] == "photos" and r["cores"] == 1
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1920, help="timed images per run")
    parser.add_argument("--batch", type=int, default=32, help="the pipeline's local batch")
    parser.add_argument("--cores", default="1,2")
    parser.add_argument("--tasks", default="jigsaw,colorization")
    parser.add_argument("--sets", default="photos,cifar")
    parser.add_argument("--saves", type=int, default=3, help="checkpoint saves per store")
    parser.add_argument("--skip_input", action="store_true", help="reuse --out's input rows")
    parser.add_argument("--skip_checkpoint", action="store_true", help="reuse --out's")
    parser.add_argument("--quick", action="store_true", help="a few images, one save, no CIFAR")
    parser.add_argument("--out", default=os.path.join(RESULTS, "pod_throughput.json"))
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_task", default="jigsaw", help=argparse.SUPPRESS)
    parser.add_argument("--_folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the emulator and a running worker are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args._worker:
        print(json.dumps(input_worker(args._task, args._folder, args.images, args.batch)))
        return 0
    if args.quick:
        args.images, args.saves, args.sets = min(args.images, 64), 1, "photos"
    args.cores = [int(c) for c in args.cores.split(",")]
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.sets = [s for s in args.sets.split(",") if s]
    for t in args.tasks:
        if t not in CONFIGS:
            parser.error(f"--tasks: unknown task {t!r}; allowed: {', '.join(CONFIGS)}")
    if max(args.cores) > (os.cpu_count() or 1):
        parser.error(f"--cores={args.cores}: this machine has {os.cpu_count()} cores")

    previous = {}
    if (args.skip_input or args.skip_checkpoint) and os.path.exists(args.out):
        with open(args.out) as f:
            previous = json.load(f)
    result = {
        "command": " ".join(["python benchmarks/pod_throughput.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "input": previous.get("input"),
        "image_sets": previous.get("image_sets"),
        "checkpoint": previous.get("checkpoint"),
    }
    with emulator() as emulator_pid, tempfile.TemporaryDirectory() as tmp:
        if not args.skip_input:
            print("Input pipeline (each run a fresh pinned process):", flush=True)
            result["input"], result["image_sets"] = measure_inputs(args, tmp, emulator_pid)
        if not args.skip_checkpoint:
            print("Checkpoints of the ResNet-50 Jigsaw state:", flush=True)
            state = jigsaw_state()
            nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
            print(f"  state: {nbytes / 1e6:.0f} MB in {len(jax.tree.leaves(state))} arrays")
            workdirs = {"local": os.path.join(tmp, "workdir"), "bucket": f"gs://{BUCKET}/workdir"}
            result["checkpoint"] = measure_checkpoints(state, workdirs, args.saves, emulator_pid)
            result["checkpoint_state_mb"] = nbytes / 1e6
            del state
    result["machine"]["loadavg_end"] = os.getloadavg()
    if result["input"]:
        print_input_table(result["input"])
    if result["checkpoint"]:
        print_checkpoint_table(result["checkpoint"])
    if result["input"] and result["checkpoint"]:
        steps = step_inputs()
        rates = core_rates_from(result["input"])
        bucket = result["checkpoint"]["bucket"]
        result["step_inputs"] = steps
        result["assumptions"] = assumptions()
        result["estimates"] = pod_estimates(
            rates, bucket["blocked_s_median"], bucket["complete_s_median"], steps
        )
        print_estimates(result["estimates"])
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
