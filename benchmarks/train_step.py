"""Times the Jigsaw or Colorization train step (ResNet-50, AlexNet) against the same in PyTorch.

Usage:
  python benchmarks/train_step.py [--task jigsaw|colorization] [--models resnet50,alexnet]
      [--batch_sizes 8,16,32] [--steps N] [--dtype auto|float32|bfloat16] [--width 1.0]
      [--num_perms 2000] [--k 10] [--no_torch] [--out FILE]
The default output is benchmarks/results/train_step.json for Jigsaw and
benchmarks/results/colorization_train_step.json for Colorization.

Jigsaw (the default task):
JAX side: the library's own step, built as the trainer builds it: the config file
(configs/jigsaw_r50.py or configs/jigsaw_alexnet.py) with overrides for the batch, compute dtype,
width and |P|; tasks.create, optim.make_plan / make_schedule for ImageNet-1k's 1,281,167 images;
train.state.pretext_state; jax.jit(train.pretrain.make_train_step(...), donate_argnums=0).
Its input is a batch of random uint8 crops (B, 255, 255, 3) already on the device, so puzzle
making (tile cutting at random offsets, grayscale, normalisation, permutation) is inside the step,
as in training. config.model.bn_group_size stays at the paper's 32 images where the batch is a
multiple of 32; a smaller batch is one group (both tasks).

PyTorch side: the same network written in torch (ResNet-50 v1.5 or the CFN AlexNet trunk, the
same siamese head with BatchNorm over the same groups of images), the same puzzle making from the
same uint8 (B, 255, 255, 3) crops, softmax cross-entropy, SGD with momentum 0.9 and weight decay
1e-4 off BatchNorm; forward, backward and optimizer step. Both memory formats
(torch.channels_last and contiguous NCHW) are timed for one step and the faster one is used.

Colorization (--task colorization):
JAX side: the library's step from configs/colorize_r50.py (ResNet-50, 224 crops, res5 at stride
1 with dilation 2, set here: the config's default is FAIR's undilated res5) or
configs/colorize_alexnet.py (Zhang's AlexNet, 227 crops), with the same
overrides and colorization.k = --k, colorization.rebalance = True, colorization.lab = "float"
(the float Lab formulas, which the PyTorch side restates; the default OpenCV 8-bit path is
cheaper, BENCHMARKS.md "Lab conversion") and colorization.priors_file
a smooth, Zhang-like prior (most mass near grey, a Gaussian of width 30 in ab) written to a
temporary directory, so no data is read. Input: random uint8 crops (B, crop, crop, 3) on the
device; Lab conversion, 8-bit quantisation, 4 x 4 pooling of ab to the 56 x 56 target grid, soft
encoding over the K nearest bins and the rebalancing weights are inside the step.
PyTorch side: the same network (ResNet-50 v1.5 on the L channel with res5 at stride 1 and
dilation 2 in all of res5's 3x3 convs, as the library; or the colorization AlexNet: conv1
96x11x11 stride 4, BatchNorm after every conv, no LRN, groups 2 on conv2/4/5, max pools after
conv1 and conv2; pool5 is left out because nothing reads it, and XLA drops it from the JAX step
too), BatchNorm over the same groups of images, a 1x1 conv to 313 logits, bilinear upsampling to
56 x 56 (align_corners=False, as jax.image.resize), and the same targets computed in torch on the
device from the same kind of uint8 crops (sRGB -> Lab with the library's formulas, 8-bit
quantisation, 4 x 4 average pooling of ab, the K nearest of the 313 bins by torch.cdist + topk,
Gaussian weights, the rebalancing weight of the nearest bin), the per-pixel soft cross-entropy
over the pixels of colour images, and SGD as above.
For both tasks, "prepare ms" is the input/target making alone (JAX: jax.jit(pretext.prepare);
PyTorch: the same code as in its step), best of 3 calls after the timed steps.

Timing: compilation and one warm-up step per side are excluded. Then the timed steps alternate
JAX, PyTorch, JAX, PyTorch, ... (each blocked until done), so both sides see the same load on a
shared machine. The headline ms/step is the best timed step (a shared CPU only ever slows a
step down); the median is printed beside it, and "others" is how many CPU cores other processes
kept busy during the timed steps (from /proc/stat), so a disturbed run shows itself.

FLOPs per step come from XLA's cost analysis of the compiled JAX step (forward, backward,
optimizer and puzzle or target making; XLA does not count multiplications with a convolution's zero
padding); the same count is used for the PyTorch row, which does the same work. An analytic
forward count (2 x multiply-adds of every conv and fully-connected layer, padding included, from
the torch model's output shapes) is printed as a check. The machine's matmul FLOP/s is measured
at the start and at the end of the run (a jitted 2048 x 2048 jnp.dot, best of 10; torch.mm for
reference); the better JAX figure is the peak that achieved FLOP/s are a fraction of.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import machine_info as shared_machine_info  # noqa: E402
from benchmarks.machine import write_result  # noqa: E402
from ssl_jax import config_lib, tasks  # noqa: E402
from ssl_jax.colorization import encode as colorization_encode  # noqa: E402
from ssl_jax.colorization import lab as lab_lib  # noqa: E402
from ssl_jax.colorization.bins import NUM_BINS, ab_bins  # noqa: E402
from ssl_jax.jigsaw import tiles as tiles_lib  # noqa: E402
from ssl_jax.jigsaw.task import load_permutation_set  # noqa: E402
from ssl_jax.train import loop, optim, pretrain  # noqa: E402
from ssl_jax.train import state as state_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "jigsaw": {"resnet50": "configs/jigsaw_r50.py", "alexnet": "configs/jigsaw_alexnet.py"},
    "colorization": {
        "resnet50": "configs/colorize_r50.py",
        "alexnet": "configs/colorize_alexnet.py",
    },
}
DEFAULT_OUT = {"jigsaw": "train_step.json", "colorization": "colorization_train_step.json"}
IMAGENET_TRAIN = 1_281_167
BN_GROUP = 32  # images per BatchNorm group: config.model.bn_group_size of the paper configs
CPU_BATCHES = {
    "jigsaw": {"resnet50": (4, 8, 16), "alexnet": (8, 16, 32)},
    "colorization": {"resnet50": (8, 16), "alexnet": (8, 16, 32)},
}
GPU_BATCHES = {"resnet50": (32, 64, 128, 256), "alexnet": (32, 64, 128, 256)}
CPU_STEPS, GPU_STEPS = 3, 20


# ---------------------------------------------------------------------------------------------
# Machine


def library_commit() -> str | None:
    """The repository's HEAD commit, with "+changes" if ssl_jax/ differs from it."""
    import subprocess

    def git(*cmd):
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+changes" if git("status", "--porcelain", "--", "ssl_jax") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict:
    info = shared_machine_info()
    info["library_commit"] = library_commit()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        info["torch"] = None
    return info


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_step(fn) -> dict:
    """Runs fn once: wall seconds, and the cores other processes kept busy meanwhile."""
    busy, own = _busy_seconds(), _own_seconds()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    row = {"s": wall, "own_cores": (_own_seconds() - own) / wall}
    if busy is not None:
        row["other_cores"] = max(0.0, (_busy_seconds() - busy) / wall - row["own_cores"])
    return row


def _best_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a jitted n x n jnp.dot on the default device (best of reps, after warm-up)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    return 2 * n**3 / _best_time(lambda: dot(a, b).block_until_ready(), reps)


def torch_matmul_peak(device, dtype, n: int = 2048, reps: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)

    def run():
        torch.mm(a, b)
        _sync(device)

    return 2 * n**3 / _best_time(run, reps)


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# JAX: the library's train step


def jax_config(task: str, model: str, batch: int, args):
    """The task's config file for `model` with the benchmark's overrides, validated."""
    config = config_lib.load_config(os.path.join(ROOT, CONFIGS[task][model]))
    group = BN_GROUP if batch % BN_GROUP == 0 else batch
    overrides = [
        ("optim.batch_size", str(batch)),
        ("model.dtype", args.dtype),
        ("model.width", str(args.width)),
        ("model.bn_group_size", str(group)),
    ]
    if task == "jigsaw":
        overrides.append(("jigsaw.num_perms", str(args.num_perms)))
    else:
        overrides += [
            ("colorization.k", str(args.k)),
            ("colorization.rebalance", "True"),
            ("colorization.priors_file", args.priors_file),
            ("colorization.lab", "float"),  # the formulas the PyTorch side restates
            ("evals.samples.every_steps", "0"),
        ]
        if model == "resnet50":
            # The PyTorch side dilates res5 (the library's default until FAIR's undilated res5
            # became it); the table was measured that way.
            overrides.append(("model.res5_dilation", "2"))
    config_lib.apply_overrides(config, overrides)
    tasks.validate(config)
    return config


def write_priors(directory: str) -> str:
    """A smooth, Zhang-like prior over the 313 bins (a Gaussian of width 30 around grey), as .npy.

    The benchmark's timings do not depend on the values; the file only spares reading data.
    """
    ab = ab_bins().astype(np.float64)
    priors = np.exp(-np.square(ab).sum(-1) / (2 * 30.0**2))
    path = os.path.join(directory, "priors.npy")
    np.save(path, priors / priors.sum())
    return path


class JaxStep:
    """The compiled train step, its state and a batch of uint8 crops on the device."""

    def __init__(self, config, batch: int):
        pretext = tasks.create(config)
        pretext.fit(None)  # the permutation set, or the priors of --priors_file
        self.pretext = pretext
        plan = optim.make_plan(config.optim, IMAGENET_TRAIN)
        schedule = optim.make_schedule(plan, config.optim.decay_factor)
        replicated = jax.sharding.NamedSharding(loop.make_mesh(), jax.sharding.PartitionSpec())
        self.state, tx = state_lib.pretext_state(config, pretext, replicated, schedule)
        self.num_params = int(sum(x.size for x in jax.tree.leaves(self.state["params"])))
        crop = config.input.crop
        images = jax.random.randint(jax.random.PRNGKey(2), (batch, crop, crop, 3), 0, 256)
        self.batch = {"image": images.astype(jnp.uint8)}
        step = jax.jit(pretrain.make_train_step(pretext, tx, schedule), donate_argnums=0)
        start = time.perf_counter()
        self.compiled = step.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - start
        self.flops = _cost(self.compiled, "flops")
        self.bytes = _cost(self.compiled, "bytes accessed")

    def __call__(self) -> None:
        self.state, metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))

    def prepare_seconds(self, reps: int = 3) -> float:
        """Best time of the task's input/target making alone, jitted on its own."""
        prepare = jax.jit(self.pretext.prepare)
        rng = jax.random.PRNGKey(3)
        jax.block_until_ready(prepare(rng, self.batch))
        return _best_time(lambda: jax.block_until_ready(prepare(rng, self.batch)), reps)


def _cost(compiled, key: str) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # one dict per program in some JAX versions
        analysis = analysis[0] if analysis else None
    if not analysis or key not in analysis:
        return None
    return float(analysis[key])


# ---------------------------------------------------------------------------------------------
# PyTorch: the same network, puzzle making, loss and optimizer


def torch_modules():
    """Builds the torch classes lazily so that --no_torch runs without torch installed."""
    import types

    import torch
    import torch.nn.functional as F
    from torch import nn

    class GroupedBN(nn.Module):
        """BatchNorm over fixed groups of `rows` rows, like ssl_jax's GroupedBatchNorm.

        One group (every CPU batch here) is one plain BatchNorm call; several groups are
        normalised one by one (the running statistics are then updated once per group).
        """

        def __init__(self, channels: int, rows: int, dims: int = 2):
            super().__init__()
            self.bn = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
            self.rows = rows

        def forward(self, x):
            if x.shape[0] <= self.rows:
                return self.bn(x)
            b = self.bn
            parts = [
                F.batch_norm(c, b.running_mean, b.running_var, b.weight, b.bias, True, 0.1, 1e-5)
                for c in x.split(self.rows)
            ]
            return torch.cat(parts)

    bn = GroupedBN

    def scaled(c, width):
        return max(1, round(c * width))

    def even(c, width):
        return max(2, 2 * round(c * width / 2))

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride, rows, dilation=1):
            super().__init__()
            out = planes * 4
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = bn(planes, rows)
            # v1.5: the stride sits on the 3x3 conv.
            self.conv2 = nn.Conv2d(
                planes, planes, 3, stride, dilation, dilation=dilation, bias=False
            )
            self.bn2 = bn(planes, rows)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = bn(out, rows)
            self.down = None
            if stride != 1 or cin != out:
                self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), bn(out, rows))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        """ResNet-50 v1.5 trunk; forward gives res5 pooled, or the res5 map with pool=False.

        res5_stride=1 keeps res5 at 1/16 with dilation 2 in all of res5's 3x3 convs, as
        ssl_jax's ResNet (torchvision's replace_stride_with_dilation leaves the first block's
        3x3 conv undilated; the cost is the same).
        """

        def __init__(self, width, rows, in_channels=3, res5_stride=2, pool=True):
            super().__init__()
            stem = scaled(64, width)
            self.pool = pool
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False),
                bn(stem, rows),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], stem
            for stage, num in enumerate((3, 4, 6, 3)):
                planes = scaled(64 * 2**stage, width)
                dilated = stage == 3 and res5_stride == 1
                for i in range(num):
                    stride = 2 if stage > 0 and i == 0 and not dilated else 1
                    blocks.append(Bottleneck(cin, planes, stride, rows, 2 if dilated else 1))
                    cin = planes * 4
            self.blocks = nn.Sequential(*blocks)
            self.num_features = cin

        def forward(self, x):
            y = self.blocks(self.stem(x))
            return y.mean(dim=(2, 3)) if self.pool else y

    class AlexNetCFN(nn.Module):
        """ssl_jax.models.AlexNet(variant="jigsaw"): LRN after pool1/pool2, BN on conv3-5."""

        def __init__(self, width, rows, tile):
            super().__init__()
            c1, c2, c3, c4, c5 = (even(c, width) for c in (96, 256, 384, 384, 256))
            lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
            self.features = nn.Sequential(
                nn.Conv2d(3, c1, 11, 2, 0),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
                nn.LocalResponseNorm(**lrn),
                nn.Conv2d(c1, c2, 5, 1, 2, groups=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
                nn.LocalResponseNorm(**lrn),
                nn.Conv2d(c2, c3, 3, 1, 1, bias=False),
                bn(c3, rows),
                nn.ReLU(inplace=True),
                nn.Conv2d(c3, c4, 3, 1, 1, groups=2, bias=False),
                bn(c4, rows),
                nn.ReLU(inplace=True),
                nn.Conv2d(c4, c5, 3, 1, 1, groups=2, bias=False),
                bn(c5, rows),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2),
            )
            size = (tile - 11) // 2 + 1
            for _ in range(3):
                size = (size - 3) // 2 + 1
            self.num_features = size * size * c5

        def forward(self, x):
            return self.features(x).flatten(1)

    class AlexNetColorization(nn.Module):
        """ssl_jax.models.AlexNet(variant="colorization") up to conv5's ReLU (the head's input)."""

        def __init__(self, width, rows):
            super().__init__()
            c1, c2, c3, c4, c5 = (even(c, width) for c in (96, 256, 384, 384, 256))

            def conv_bn(cin, cout, kernel, stride, pad, groups=1):
                return [
                    nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                    bn(cout, rows),
                    nn.ReLU(inplace=True),
                ]

            self.features = nn.Sequential(
                *conv_bn(1, c1, 11, 4, 0),
                nn.MaxPool2d(3, 2),
                *conv_bn(c1, c2, 5, 1, 2, groups=2),
                nn.MaxPool2d(3, 2),
                *conv_bn(c2, c3, 3, 1, 1),
                *conv_bn(c3, c4, 3, 1, 1, groups=2),
                *conv_bn(c4, c5, 3, 1, 1, groups=2),
            )
            self.num_features = c5

        def forward(self, x):
            return self.features(x)

    class ColorizationNet(nn.Module):
        """ssl_jax.colorization.task.ColorizationNet: 1x1 conv to the bins, bilinear upsampling."""

        def __init__(self, trunk, grid):
            super().__init__()
            self.trunk, self.grid = trunk, grid
            self.classifier = nn.Conv2d(trunk.num_features, NUM_BINS, 1)

        def forward(self, x):  # x: (B, 1, H, W), L - 50
            logits = self.classifier(self.trunk(x))
            if tuple(logits.shape[2:]) != (self.grid, self.grid):
                logits = F.interpolate(
                    logits.float(), (self.grid, self.grid), mode="bilinear", align_corners=False
                )
            return logits.float()

    class JigsawNet(nn.Module):
        """The siamese head of ssl_jax.jigsaw.task.JigsawNet, with head_bn=True."""

        def __init__(self, trunk, tiles, tile_features, hidden_features, num_perms, group):
            super().__init__()
            self.trunk, self.tiles = trunk, tiles
            self.tile_fc = nn.Linear(trunk.num_features, tile_features)
            self.tile_bn = bn(tile_features, group * tiles, dims=1)
            self.hidden = None
            width = tiles * tile_features
            if hidden_features:
                self.hidden = nn.Linear(width, hidden_features)
                self.hidden_bn = bn(hidden_features, group, dims=1)
                width = hidden_features
            self.classifier = nn.Linear(width, num_perms)

        def forward(self, x):  # x: (B * tiles, 3, T, T), image-major
            y = F.relu(self.tile_bn(self.tile_fc(self.trunk(x))))
            y = y.reshape(-1, self.tiles * y.shape[1])
            if self.hidden is not None:
                y = F.relu(self.hidden_bn(self.hidden(y)))
            return self.classifier(y)

    return types.SimpleNamespace(
        ResNet50=ResNet50,
        AlexNetCFN=AlexNetCFN,
        AlexNetColorization=AlexNetColorization,
        JigsawNet=JigsawNet,
        ColorizationNet=ColorizationNet,
    )


class TorchStep:
    """forward + loss + backward + SGD step in torch; subclasses make the inputs and the loss."""

    def _setup(self, model, config, device: str, channels_last: bool, autocast: bool) -> None:
        import torch

        self.model = model.to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.num_params = sum(p.numel() for p in self.model.parameters())
        bn_params = {
            id(p)
            for m in self.model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()
        }
        params = list(self.model.parameters())
        decay = [p for p in params if id(p) not in bn_params]
        no_decay = [p for p in params if id(p) in bn_params]
        plan = optim.make_plan(config.optim, IMAGENET_TRAIN)
        self.opt = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": config.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=plan.warmup_start_lr,
            momentum=config.optim.momentum,
        )
        self.device, self.channels_last, self.autocast = device, channels_last, autocast

    def _random_crops(self, batch: int, crop: int):
        import torch

        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, crop, crop, 3), generator=gen)
        return images.to(torch.uint8).to(self.device)

    def _memory_format(self):
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self):
        """(network input, targets) from the uint8 crops, on the device."""
        raise NotImplementedError

    def loss(self, outputs, targets):
        raise NotImplementedError

    def __call__(self) -> None:
        import torch

        x, targets = self.prepare()
        with torch.autocast(self.device.split(":")[0], torch.bfloat16, enabled=self.autocast):
            outputs = self.model(x)
        loss = self.loss(outputs, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        loss.item()  # waits for the step, as block_until_ready does
        _sync(self.device)

    def prepare_seconds(self, reps: int = 3) -> float:
        """Best time of the input/target making alone."""
        import torch

        def run():
            with torch.no_grad():
                self.prepare()
            _sync(self.device)

        run()
        return _best_time(run, reps)

    def forward_flops(self) -> int:
        """2 x multiply-adds of every conv and linear layer in one forward pass of the batch."""
        import torch

        total = [0]

        def hook(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                kh, kw = module.kernel_size
                per_out = module.in_channels // module.groups * kh * kw
                total[0] += 2 * output.numel() * per_out
            elif isinstance(module, torch.nn.Linear):
                total[0] += 2 * output.numel() * module.in_features

        handles = [
            m.register_forward_hook(hook)
            for m in self.model.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        ]
        with torch.no_grad():
            self.model(self.prepare()[0])
        for h in handles:
            h.remove()
        return total[0]


class JigsawTorchStep(TorchStep):
    """Puzzle making + forward + backward + SGD step in torch, on the same uint8 crops."""

    def __init__(self, config, batch: int, device: str, channels_last: bool, autocast: bool):
        import torch

        modules = torch_modules()
        jig, width = config.jigsaw, config.model.width
        tiles = jig.grid**2
        group = config.model.bn_group_size or batch
        rows = group * tiles
        if config.model.name == "resnet":
            trunk = modules.ResNet50(width, rows)
        else:
            trunk = modules.AlexNetCFN(width, rows, jig.tile)
        model = modules.JigsawNet(
            trunk, tiles, jig.tile_features, jig.hidden_features, jig.num_perms, group
        )
        self._setup(model, config, device, channels_last, autocast)
        self.grid, self.cell, self.tile = jig.grid, jig.cell, jig.tile
        self.gray_prob = jig.gray_prob
        self.images = self._random_crops(batch, config.input.crop)
        perms = load_permutation_set(jig)  # the library's set (cached after the JAX build)
        self.perms = torch.as_tensor(np.asarray(perms), dtype=torch.long, device=device)
        rows_, cols_ = np.divmod(np.arange(tiles), jig.grid)
        self.origin = torch.as_tensor(np.stack([rows_, cols_], -1) * jig.cell, device=device)
        self.arange = torch.arange(jig.tile, device=device)
        self.luma = torch.tensor(tiles_lib.LUMA, device=device)
        self.mean = torch.tensor(config.input.mean, device=device)
        self.std = torch.tensor(config.input.std, device=device)

    def prepare(self):
        """(B * 9, 3, T, T) float tiles in slot order (image-major) and (B,) labels."""
        import torch

        images, dev = self.images, self.device
        batch, tiles = images.shape[0], self.grid**2
        offsets = torch.randint(0, max(self.cell - self.tile, 1), (batch, tiles, 2), device=dev)
        starts = self.origin[None] + offsets  # (B, 9, 2)
        ys = starts[..., 0, None] + self.arange  # (B, 9, T)
        xs = starts[..., 1, None] + self.arange
        b = torch.arange(batch, device=dev)[:, None, None, None]
        t = images[b, ys[..., :, None], xs[..., None, :]]  # (B, 9, T, T, 3) uint8
        t = t.float() / 255.0
        gray = torch.rand(batch, device=dev) < self.gray_prob
        luma = (t * self.luma).sum(-1, keepdim=True)
        t = torch.where(gray[:, None, None, None, None], luma.expand_as(t), t)
        t = (t - self.mean) / self.std
        labels = torch.randint(0, self.perms.shape[0], (batch,), device=dev)
        order = self.perms[labels]  # (B, 9): slot i receives tile order[i]
        t = t[torch.arange(batch, device=dev)[:, None], order]
        x = t.reshape(batch * tiles, self.tile, self.tile, 3).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self._memory_format()), labels

    def loss(self, logits, labels):
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)


class ColorizationTorchStep(TorchStep):
    """Lab targets + forward + rebalanced soft cross-entropy + backward + SGD step in torch."""

    def __init__(
        self, config, batch: int, device: str, channels_last: bool, autocast: bool, priors
    ):
        import torch

        modules = torch_modules()
        col, width = config.colorization, config.model.width
        rows = config.model.bn_group_size or batch
        if config.model.name == "resnet":
            trunk = modules.ResNet50(width, rows, in_channels=1, res5_stride=1, pool=False)
        else:
            trunk = modules.AlexNetColorization(width, rows)
        crop = config.input.crop
        self.stride, self.grid = col.target_stride, crop // col.target_stride
        self._setup(
            modules.ColorizationNet(trunk, self.grid), config, device, channels_last, autocast
        )
        self.k, self.sigma, self.gray_threshold = col.k, col.sigma, col.gray_threshold
        self.images = self._random_crops(batch, crop)
        table = lab_lib._srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0, np)
        self.linear = torch.tensor(table, dtype=torch.float32, device=device)
        # The library's Lab formulas as two 3x3 matrices (RGB -> XYZ / white; f(XYZ) -> Lab) and
        # an affine map to OpenCV's 8-bit values: a few whole-tensor ops instead of one per
        # formula term, since eager PyTorch makes one pass over the crops per op.
        xyz = np.asarray(lab_lib.XYZ_FROM_RGB) / np.asarray(lab_lib.D65_WHITE)[:, None]
        lab = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
        self.xyz_t = torch.tensor(xyz.T, dtype=torch.float32, device=device)
        self.lab_t = torch.tensor(lab.T * [2.55, 1.0, 1.0], dtype=torch.float32, device=device)
        self.lab_shift = torch.tensor([-16.0 * 2.55, 128.0, 128.0], device=device)
        self.bins = torch.as_tensor(ab_bins().copy(), device=device)
        weights = colorization_encode.rebalance_weights(
            priors, col.rebalance_gamma, col.rebalance_alpha
        )
        self.class_weights = torch.as_tensor(weights, device=device)

    def _lab(self, images):
        """(B, H, W) L and (B, H, W, 2) ab, float32, rounded to OpenCV's 8-bit values."""
        import torch

        t = self.linear[images.long()] @ self.xyz_t  # XYZ / white
        eps, kappa = lab_lib._EPSILON, lab_lib._KAPPA
        f = torch.where(t > eps, t.clamp_min(0.0).pow(1.0 / 3.0), t * kappa + 16.0 / 116.0)
        q = torch.addmm(self.lab_shift, f.reshape(-1, 3), self.lab_t).round_().clamp_(0, 255)
        q = q.reshape(t.shape)
        return q[..., 0] * (100.0 / 255.0), q[..., 1:] - 128.0

    def prepare(self):
        """(B, 1, H, W) L - 50, and the targets on the (grid, grid) target grid."""
        import torch

        lightness, ab = self._lab(self.images)
        batch, s, h = ab.shape[0], self.stride, self.grid
        ab_grid = ab[:, : h * s, : h * s].reshape(batch, h, s, h, s, 2).mean(dim=(2, 4))
        colour = ab.abs().amax(dim=(1, 2, 3)) > self.gray_threshold
        dist, indices = torch.cdist(ab_grid.reshape(-1, 2), self.bins).topk(self.k, largest=False)
        weights = torch.softmax(-dist.square() / (2.0 * self.sigma**2), dim=-1)
        pixel_weights = self.class_weights[indices[:, 0]] * colour.repeat_interleave(h * h)

        def grid(t):  # (B * h * h, k) -> (B, k, h, h), the logits' layout
            return t.reshape(batch, h, h, -1).permute(0, 3, 1, 2)

        x = (lightness - 50.0)[:, None].contiguous(memory_format=self._memory_format())
        targets = {
            "indices": grid(indices),
            "weights": grid(weights),
            "pixel_weights": pixel_weights.reshape(batch, h, h),
            "count": colour.sum() * (h * h),
        }
        return x, targets

    def loss(self, logits, targets):
        import torch

        log_probs = torch.log_softmax(logits.float(), dim=1)
        picked = log_probs.gather(1, targets["indices"])  # (B, k, h, h)
        ce = -(targets["weights"] * picked).sum(dim=1)
        return (ce * targets["pixel_weights"]).sum() / targets["count"].clamp_min(1)


# ---------------------------------------------------------------------------------------------
# One (model, batch) point


def make_torch_step(config, batch, device, channels_last, autocast, priors_file):
    if config.task == "jigsaw":
        return JigsawTorchStep(config, batch, device, channels_last, autocast)
    priors = np.load(priors_file)
    return ColorizationTorchStep(config, batch, device, channels_last, autocast, priors)


def run_point(model, batch, args, torch_device) -> list[dict]:
    dtype = args.dtype
    config = jax_config(args.task, model, batch, args)
    print(
        f"\n== {args.task}, {model}, batch {batch}, dtype {dtype}, width {args.width} ==",
        flush=True,
    )
    jstep = JaxStep(config, batch)
    jstep()  # warm-up
    print(
        f"  jax: {jstep.num_params:,} params, compiled in {jstep.compile_s:.1f} s, "
        f"XLA GFLOP/step {jstep.flops / 1e9 if jstep.flops else float('nan'):.1f}",
        flush=True,
    )
    tstep, fmt_times, fwd_flops = None, {}, None
    if torch_device is not None:
        candidates = {}
        for name in ("channels_last", "contiguous"):
            candidates[name] = make_torch_step(
                config,
                batch,
                torch_device,
                name == "channels_last",
                dtype == "bfloat16",
                args.priors_file,
            )
            candidates[name]()  # warm-up
            fmt_times[name] = timed_step(candidates[name])["s"]
            print(f"  torch {name}: {fmt_times[name] * 1e3:.0f} ms (one step)", flush=True)
        tstep = candidates[min(fmt_times, key=fmt_times.get)]
        del candidates
        fwd_flops = tstep.forward_flops()
        same = "same as" if tstep.num_params == jstep.num_params else "DIFFERS from"
        print(
            f"  torch: {tstep.num_params:,} params ({same} jax), using "
            f"{'channels_last' if tstep.channels_last else 'contiguous'}; "
            f"analytic forward GFLOP {fwd_flops / 1e9:.1f}",
            flush=True,
        )
    jax_times, torch_times = [], []
    for _ in range(args.steps):  # interleaved, so both see the same background load
        jax_times.append(timed_step(jstep))
        if tstep is not None:
            torch_times.append(timed_step(tstep))
    task_fields = (
        {"num_perms": args.num_perms}
        if args.task == "jigsaw"
        else {"k": args.k, "crop": config.input.crop, "rebalance": True}
    )
    common = {
        "task": args.task,
        "model": model,
        "batch": batch,
        "dtype": dtype,
        "width": args.width,
        **task_fields,
        "bn_group_size": config.model.bn_group_size,
        "gflop_per_step": jstep.flops / 1e9 if jstep.flops else None,
        "analytic_forward_gflop": fwd_flops / 1e9 if fwd_flops else None,
    }
    rows = [
        dict(
            common,
            framework="jax",
            params=jstep.num_params,
            steps=jax_times,
            compile_s=jstep.compile_s,
            xla_bytes_accessed=jstep.bytes,
            prepare_ms=jstep.prepare_seconds() * 1e3,
        )
    ]
    if tstep is not None:
        rows.append(
            dict(
                common,
                framework="torch",
                params=tstep.num_params,
                steps=torch_times,
                memory_format="channels_last" if tstep.channels_last else "contiguous",
                one_step_by_format_s=fmt_times,
                prepare_ms=tstep.prepare_seconds() * 1e3,
            )
        )
    for row in rows:
        steps = row.pop("steps")
        row["step_times_s"] = [t["s"] for t in steps]
        row["other_cores_per_step"] = [t.get("other_cores") for t in steps]
        best = min(row["step_times_s"])
        row["ms_per_step"] = best * 1e3
        row["ms_per_step_median"] = statistics.median(row["step_times_s"]) * 1e3
        row["images_per_s"] = batch / best
        row["achieved_gflop_s"] = jstep.flops / best / 1e9 if jstep.flops else None
        others = [c for c in row["other_cores_per_step"] if c is not None]
        row["other_cores_mean"] = statistics.mean(others) if others else None
    if tstep is not None:
        jax_row, torch_row = rows
        jax_row["jax_over_torch_speed"] = torch_row["ms_per_step"] / jax_row["ms_per_step"]
        jax_row["jax_over_torch_speed_median"] = (
            torch_row["ms_per_step_median"] / jax_row["ms_per_step_median"]
        )
    return rows


def print_table(rows):
    head = (
        f"{'model':<9} {'batch':>5} {'fw':<6} {'ms/step':>8} {'median':>8} {'img/s':>7} "
        f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'of peak':>8} {'JAX/torch':>9} {'others':>6} "
        f"{'prep ms':>7}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    nan = float("nan")
    for r in rows:
        frac = r["fraction_of_matmul_peak"]
        ratio = r.get("jax_over_torch_speed")
        others = r["other_cores_mean"]
        print(
            f"{r['model']:<9} {r['batch']:>5} {r['framework']:<6} {r['ms_per_step']:>8.0f} "
            f"{r['ms_per_step_median']:>8.0f} {r['images_per_s']:>7.2f} "
            f"{r['gflop_per_step'] or nan:>10.1f} {r['achieved_gflop_s'] or nan:>8.1f} "
            f"{nan if frac is None else frac:>8.1%} {'' if ratio is None else f'{ratio:.2f}x':>9} "
            f"{nan if others is None else others:>6.2f} {r.get('prepare_ms', nan):>7.0f}"
        )
    print(
        "ms/step: best timed step (images/s, GFLOP/s and JAX/torch from it); median: median step."
        "\nJAX/torch = torch ms/step / JAX ms/step (above 1: JAX faster). 'of peak': achieved"
        " FLOP/s over the measured JAX matmul FLOP/s.\nothers: mean CPU cores other processes"
        " kept busy during the timed steps (/proc/stat).\nprep ms: input/target making alone,"
        " best of 3 (part of ms/step)."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="jigsaw", choices=sorted(CONFIGS))
    parser.add_argument("--models", default="resnet50,alexnet")
    parser.add_argument("--batch_sizes", default="", help="default: per model, by backend")
    parser.add_argument(
        "--steps", type=int, default=0, help=f"default {CPU_STEPS} (GPU {GPU_STEPS})"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--num_perms", type=int, default=2000, help="Jigsaw's |P|")
    parser.add_argument("--k", type=int, default=10, help="Colorization's soft-encoding K")
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument(
        "--out",
        default="",
        help="default: benchmarks/results/train_step.json (jigsaw) or "
        "benchmarks/results/colorization_train_step.json (colorization)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or os.path.join(ROOT, "benchmarks", "results", DEFAULT_OUT[args.task])
    backend = jax.default_backend()
    on_accelerator = backend in ("gpu", "tpu")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if on_accelerator else "float32"
    args.steps = args.steps or (GPU_STEPS if on_accelerator else CPU_STEPS)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in CONFIGS[args.task]:
            parser.error(f"--models: unknown model {m!r}; allowed: {sorted(CONFIGS[args.task])}")
    with tempfile.TemporaryDirectory() as priors_dir:
        args.priors_file = write_priors(priors_dir) if args.task == "colorization" else ""
        return run(args, models, on_accelerator, backend, argv)


def run(args, models, on_accelerator: bool, backend: str, argv) -> int:
    """Times every (model, batch) point of args and writes args.out."""
    info = machine_info()
    torch_device, torch_note = None, None
    if not args.no_torch:
        try:
            import torch

            if on_accelerator:
                if torch.cuda.is_available() and backend == "gpu":
                    torch_device = "cuda"
                else:
                    torch_note = "torch has no CUDA here: torch rows skipped (a CPU peer is moot)"
            else:
                torch_device = "cpu"
                torch.set_num_threads(os.cpu_count() or 1)
                info["torch_threads"] = torch.get_num_threads()
        except ImportError:
            torch_note = "torch is not installed: torch rows skipped"
    if torch_note:
        print(torch_note)

    def measure_peaks() -> dict:
        busy, start = _busy_seconds(), time.perf_counter()
        out = {"jax_float32": matmul_peak("float32") / 1e9}
        if on_accelerator:
            out["jax_bfloat16"] = matmul_peak("bfloat16") / 1e9
        if torch_device is not None:
            import torch

            out["torch_float32"] = torch_matmul_peak(torch_device, torch.float32) / 1e9
            if on_accelerator:
                out["torch_bfloat16"] = torch_matmul_peak(torch_device, torch.bfloat16) / 1e9
        if busy is not None:
            # Cores busy meanwhile, this process included (about all of them on a quiet machine).
            out["busy_cores"] = (_busy_seconds() - busy) / (time.perf_counter() - start)
        print("matmul 2048x2048 GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()))
        return out

    peak_key = "jax_bfloat16" if args.dtype == "bfloat16" and on_accelerator else "jax_float32"
    peaks_start = measure_peaks()

    rows = []
    for model in models:
        if args.batch_sizes:
            batches = [int(b) for b in args.batch_sizes.split(",")]
        else:
            batches = (GPU_BATCHES if on_accelerator else CPU_BATCHES[args.task])[model]
        for batch in batches:
            rows.extend(run_point(model, batch, args, torch_device))
    peaks_end = measure_peaks()
    # The machine's figure is the better of the two: a shared CPU only ever lowers it.
    peak = max(peaks_start[peak_key], peaks_end[peak_key])
    for r in rows:
        r["fraction_of_matmul_peak"] = (
            r["achieved_gflop_s"] / peak if r["achieved_gflop_s"] else None
        )
    print_table(rows)
    print(f"matmul peak used: {peak:.1f} GFLOP/s ({peak_key}, best of start and end)")
    try:
        info["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join(["python benchmarks/train_step.py", *argv]),
        "task": args.task,
        "machine": info,
        "matmul_gflop_s_start": peaks_start,
        "matmul_gflop_s_end": peaks_end,
        "peak_used_gflop_s": peak,
        "steps": args.steps,
        "torch_note": torch_note,
        "rows": rows,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
