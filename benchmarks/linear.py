"""Times the linear-evaluation step (frozen ResNet-50 trunk, all heads) against PyTorch.

Usage:
  python benchmarks/linear.py [--batch_sizes 32] [--steps N] [--size 224] [--classes 1000]
      [--width 1.0] [--dtype auto|float32|bfloat16] [--no_torch]
      [--out benchmarks/results/linear.json]

JAX side: the library's step, built as ``ssl_jax.evals.linear.evaluate`` builds it: the
pretraining config configs/jigsaw_r50.py (ResNet-50, width --width) with random trunk
weights, configs/evals/imagenet_linear.py for the recipe (1000 classes, SGD Nesterov, weight
decay 1e-4 off BN, lr steps), ``features.make_feature_fn`` (the PROTOCOLS.md pooling table:
conv1, res2, res3, res4, res5, pool5 -> 9216, 9216, 8192, 9216, 8192, 2048 dims) and
``linear.make_train_step`` under jax.jit with the batch sharded over every device and the state
donated. Input: random uint8 (B, 224, 224, 3) images and labels already on the device; the
normalisation is inside the step.

PyTorch side: the same ResNet-50 v1.5 (benchmarks/train_step.py's torch module) frozen in eval
mode under torch.no_grad, the same taps after their ReLUs average-pooled as the table
(AvgPool2d with count_include_pad, as the library), each into BatchNorm1d(affine=False) +
Linear(N(0, 0.01), bias 0), summed cross-entropy, SGD (momentum 0.9, Nesterov, weight decay
1e-4 on the linear layers), forward + backward of the heads + step. The uint8 -> float
normalisation happens in the step, as on the JAX side. Memory format: channels_last and
contiguous are timed for one step and the faster one is used.

Timing (as benchmarks/train_step.py): compilation and one warm-up step per side are excluded;
then the timed steps alternate JAX, PyTorch, ... each blocked until done; the headline is the
best step (images/s = batch / best seconds), the median beside it; "others" is the CPU cores
other processes kept busy meanwhile. The table and machine info go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.train_step import machine_info, timed_step, torch_modules  # noqa: E402
from ssl_jax import config_lib, tasks  # noqa: E402
from ssl_jax.evals import features as features_lib  # noqa: E402
from ssl_jax.evals import linear  # noqa: E402
from ssl_jax.models import make_trunk  # noqa: E402
from ssl_jax.pretext import compute_dtype  # noqa: E402
from ssl_jax.train import loop  # noqa: E402
from ssl_jax.train import optim as optim_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BATCHES, GPU_BATCHES = (32,), (64, 128, 256)
CPU_STEPS, GPU_STEPS = 3, 20


class JaxStep:
    """The library's linear-evaluation train step on random data, state donated each call."""

    def __init__(self, batch: int, size: int, classes: int, width: float, dtype: str = "auto"):
        run_config = config_lib.load_config(os.path.join(ROOT, "configs/jigsaw_r50.py"))
        run_config.model.width = width
        run_config.model.dtype = dtype
        config = config_lib.load_config(os.path.join(ROOT, "configs/evals/imagenet_linear.py"))
        config.features.size = size
        config.optim.batch_size = batch
        task = tasks.create(run_config)
        benchmark = linear.LinearBenchmark(config, task)
        dims = features_lib.feature_dims(task, config.features, size)
        heads = linear.LinearHeads(tuple(dims), classes, benchmark.scale_shift)
        schedule = optim_lib.make_schedule(linear.plan(config, 10 * batch), 0.1)
        example = {name: jnp.zeros((1, d), jnp.float32) for name, d in dims.items()}
        optim = ml_collections.ConfigDict({"weight_decay": 1e-4, "momentum": 0.9, "nesterov": True})
        mesh = loop.make_mesh()
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        trunk = make_trunk(run_config.model)
        trunk_vars = trunk.init(jax.random.PRNGKey(1), jnp.zeros((1, size, size, 3)), train=False)
        self.trunk = jax.device_put(trunk_vars, replicated)
        self.state, tx = loop.create_state(
            lambda rng: heads.init(rng, example, train=False),
            lambda batch_stats: optim_lib.make_optimizer(optim, schedule, batch_stats),
            0,
            replicated,
        )
        rng = np.random.default_rng(0)
        self.batch = jax.device_put(
            {
                "image": rng.integers(0, 256, (batch, size, size, 3), np.uint8),
                "label": rng.integers(0, classes, (batch,), np.int32),
            },
            sharded,
        )
        step = linear.make_train_step(
            features_lib.make_feature_fn(task, config.features, size), heads, tx, schedule
        )
        self.step = jax.jit(
            step,
            in_shardings=(replicated, replicated, sharded),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        start = time.perf_counter()
        self.compiled = self.step.lower(self.state, self.trunk, self.batch).compile()
        self.compile_s = time.perf_counter() - start
        self.dims = dims
        self.head_params = sum(x.size for x in jax.tree.leaves(self.state["params"]))
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.flops = float(cost.get("flops", 0.0)) if cost else None

    def __call__(self) -> None:
        self.state, metrics = self.compiled(self.state, self.trunk, self.batch)
        jax.block_until_ready(metrics)


class TorchStep:
    """The same step in PyTorch: frozen ResNet-50 (eval, no_grad), pooled taps, BN1d + Linear."""

    def __init__(self, batch, size, classes, width, dims, device, channels_last, autocast=False):
        import torch
        from torch import nn

        self.torch, self.device = torch, device
        modules = torch_modules()
        self.trunk = modules.ResNet50(width, rows=batch, pool=False).to(device).eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.memory = torch.channels_last if channels_last else torch.contiguous_format
        self.trunk = self.trunk.to(memory_format=self.memory)
        # Stage ends in the flat list of bottleneck blocks (3, 4, 6, 3 blocks).
        self.stage_ends = {2: "res2", 6: "res3", 12: "res4", 15: "res5"}
        pools = features_lib.POOLING["resnet"]
        self.pools = {
            name: nn.AvgPool2d(spec[0], spec[1], spec[2], count_include_pad=True)
            for name, spec in pools.items()
            if spec != "global"
        }
        self.heads = nn.ModuleDict()
        for name, dim in dims.items():
            fc = nn.Linear(dim, classes)
            nn.init.normal_(fc.weight, 0.0, 0.01)
            nn.init.zeros_(fc.bias)
            self.heads[name] = nn.Sequential(nn.BatchNorm1d(dim, affine=False), fc)
        self.heads = self.heads.to(device).train()
        self.opt = torch.optim.SGD(
            self.heads.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randint(
            0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8
        )
        self.images = self.images.to(device)
        self.labels = torch.randint(0, classes, (batch,), generator=gen).to(device)
        mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1)
        self.mean, self.std = mean, std
        self.channels_last = channels_last
        self.autocast = autocast

    def features(self):
        torch = self.torch
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
            x = (self.images.float() / 255.0 - self.mean) / self.std
            x = x.contiguous(memory_format=self.memory)
            stem = self.trunk.stem
            y = stem[2](stem[1](stem[0](x)))  # conv1 after its ReLU, before the max pool
            taps = {"conv1": y}
            y = stem[3](y)
            for i, block in enumerate(self.trunk.blocks):
                y = block(y)
                if i in self.stage_ends:
                    taps[self.stage_ends[i]] = y
            out = {name: self.pools[name](t).flatten(1) for name, t in taps.items()}
            out["pool5"] = taps["res5"].mean(dim=(2, 3))
        return {name: f.float() for name, f in out.items()}  # float32 heads, as the JAX side

    def __call__(self) -> None:
        torch = self.torch
        features = self.features()
        loss = sum(
            torch.nn.functional.cross_entropy(head(features[name]), self.labels)
            for name, head in self.heads.items()
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device != "cpu":
            torch.cuda.synchronize()


def _summary(times: list[dict], batch: int) -> dict:
    seconds = [t["s"] for t in times]
    others = [t["other_cores"] for t in times if "other_cores" in t]
    return {
        "best_ms": 1e3 * min(seconds),
        "median_ms": 1e3 * statistics.median(seconds),
        "images_per_s": batch / min(seconds),
        "other_cores": statistics.mean(others) if others else None,
        "steps": times,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_sizes", default="")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="trunk activations (auto: bfloat16 on GPU/TPU, float32 on CPU); PyTorch runs the "
        "trunk under bfloat16 autocast on CUDA when this resolves to bfloat16",
    )
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/linear.json"))
    args = parser.parse_args(argv)
    gpu = jax.default_backend() != "cpu"
    batches = (
        tuple(int(b) for b in args.batch_sizes.split(","))
        if args.batch_sizes
        else (GPU_BATCHES if gpu else CPU_BATCHES)
    )
    steps = args.steps or (GPU_STEPS if gpu else CPU_STEPS)
    torch_device = None
    if not args.no_torch:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = str(jnp.dtype(compute_dtype(args.dtype)))
    autocast = torch_device == "cuda" and dtype == "bfloat16"
    print(f"trunk dtype: JAX {dtype}, PyTorch {'bfloat16 autocast' if autocast else 'float32'}")
    info = machine_info()
    rows = []
    for batch in batches:
        print(f"\n== linear eval step, ResNet-50 x{args.width}, batch {batch} ==", flush=True)
        jstep = JaxStep(batch, args.size, args.classes, args.width, args.dtype)
        jstep()  # warm-up
        print(
            f"  jax: compiled in {jstep.compile_s:.1f} s, heads {dict(jstep.dims)}, "
            f"{jstep.head_params:,} head params, XLA GFLOP/step "
            f"{(jstep.flops or float('nan')) / 1e9:.1f}",
            flush=True,
        )
        tstep = None
        if torch_device is not None:
            candidates, fmt = {}, {}
            for channels_last in (True, False):
                candidates[channels_last] = TorchStep(
                    batch, args.size, args.classes, args.width, jstep.dims, torch_device,
                    channels_last, autocast,
                )  # fmt: skip
                candidates[channels_last]()  # warm-up
                fmt[channels_last] = timed_step(candidates[channels_last])["s"]
            tstep = candidates[min(fmt, key=fmt.get)]
            del candidates
            print(
                f"  torch: {'channels_last' if tstep.channels_last else 'contiguous'} "
                f"({', '.join(f'{1e3 * s:.0f} ms' for s in fmt.values())} for one step)",
                flush=True,
            )
        jax_times, torch_times = [], []
        for _ in range(steps):  # interleaved, so both see the same background load
            jax_times.append(timed_step(jstep))
            if tstep is not None:
                torch_times.append(timed_step(tstep))
        common = {"batch": batch, "size": args.size, "classes": args.classes, "width": args.width,
                  "dtype": dtype}  # fmt: skip
        rows.append(dict(common, framework="jax", compile_s=jstep.compile_s,
                         gflop_per_step=(jstep.flops or 0) / 1e9 or None,
                         **_summary(jax_times, batch)))  # fmt: skip
        if tstep is not None:
            memory = "channels_last" if tstep.channels_last else "contiguous"
            rows.append(dict(common, framework="torch", memory_format=memory, autocast=autocast,
                             **_summary(torch_times, batch)))  # fmt: skip
        del jstep, tstep
    print("\n| framework | batch | dtype | best ms/step | median ms | images/s | others (cores) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        others = "" if r["other_cores"] is None else f"{r['other_cores']:.2f}"
        print(
            f"| {r['framework']} | {r['batch']} | {r['dtype']} | {r['best_ms']:.0f} | "
            f"{r['median_ms']:.0f} | {r['images_per_s']:.1f} | {others} |"
        )
    info["loadavg_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "rows": rows}, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
