"""Times the Faster R-CNN ResNet-C4 train step and inference against the same detector built
from torchvision's detection parts.

Usage:
  python benchmarks/detection.py [--depth 50] [--width 0.25] [--short_side 288] [--max_side 512]
      [--long_side 0] [--batch 2] [--rois 128] [--pre_nms_train 2000] [--post_nms_train 300]
      [--pre_nms_test 1000] [--post_nms_test 150] [--freeze_at 4] [--gt_boxes 3]
      [--steps 3] [--warmup 1] [--torch_threads 0] [--dtype auto|float32|bfloat16] [--paper]
      [--no_torch] [--out FILE]
The default output is benchmarks/results/detection.json. ``--paper`` sets the paper's sizes
(ResNet-50 at width 1, short side 600 / max 1000, 4 images, 512 RoIs per image, proposals
12000 / 2000 in training and 2000 / 1000 at test): a GPU's setting. The defaults are sized for
a 2-core CPU (under two minutes): ResNet-50 at 1/4 width, 288 x 384 images (the paper's shape at
about half its scale), 2 images, 128 RoIs per image, proposals 2000 / 300 and 1000 / 150.

The batch: B random uint8 images of one size, short side ``--short_side`` by a long side of
``--long_side`` (0: 4/3 of the short side, VOC's usual landscape shape, at most ``--max_side``),
with ``--gt_boxes`` random ground-truth boxes of random classes (1..20) each. The images are not
resized by either side: they are what the data pipeline would hand over.

JAX side: exactly the library's step. The config is ``ssl_jax.evals.detection.defaults()``
with the sizes above as overrides; the task is configs/jigsaw_r50.py at ``--depth`` /
``--width`` (only its trunk shape and input normalisation matter); ``make_model``,
``make_optimizer`` on ``plan`` / ``make_schedule`` for VOC07 trainval's 5,011 images,
``loop.create_state``, ``jax.jit(make_train_step(...), donate_argnums=0)`` and
``jax.jit(make_detect_step(...))``. The batch is a train_batches-style dict already on the device
("image" padded to the library's bucket shape, "image_hw", "boxes", "classes", "box_valid"
with ``config.input.max_boxes`` rows); normalisation, padding masks, RPN losses, proposals (top-k,
NMS), RoI sampling, RoIAlign, the res5 head and the box losses are inside the step, as in
training.

PyTorch side: ``torchvision.models.detection.FasterRCNN`` assembled from torchvision's parts
into the same C4 detector: a ResNet of torchvision's own ``BasicBlock`` / ``Bottleneck`` blocks
with ssl_jax's channel counts at that width (stride on the 3x3, FrozenBatchNorm2d everywhere)
whose stem..res4 is the body (``out_channels`` = res4's width); ``AnchorGenerator`` with sizes
32..512 x ratios 0.5, 1, 2 (15 anchors per position, one level at stride 16); ``RPNHead`` with
one 3x3 conv of res4's width; ``MultiScaleRoIAlign(["0"], 14, sampling_ratio=0)`` (adaptive
sampling, no half-pixel offset); res5 (first block stride 2) + average pool as the box head; a
``FastRCNNPredictor`` (K + 1 classes, class-specific boxes); the same RPN and RoI numbers
(anchors per image 256, half positive; pre / post NMS per image; RoIs per image, 25 %
foreground; test score 0.05, NMS 0.3, 100 detections); stem..res{freeze_at} with
requires_grad False; SGD momentum 0.9, weight decay 1e-4 on weights, biases at 2x the rate
without decay, as the library's optimizer. Both sides train at a learning rate of 1e-6 (random
weights diverge at the recipe's 0.002; the update is computed and applied all the same), so
every timed step sees the same detector. The torch detector's weights are copied from the JAX
detector's initial ones (the RPN's outputs reordered to torchvision's anchor order), so both
compute the same function at the start (the res4 features of the batch are compared and the
largest difference printed). ``GeneralizedRCNNTransform`` gets the task's
mean and std and its resize is turned off (the images are already at their size); it pads the
batch to a multiple of 32 itself, where the library pads to its bucket shape (a multiple of
128 on the long side), so the two sides convolve the same padded size only when the long side
is a multiple of 128 (the defaults are). The train step is the forward with losses, backward
and ``optimizer.step()``; inference is ``model.eval()``'s forward under ``torch.no_grad()``.
uint8 -> float conversion is inside both steps. torch runs NCHW, on a CPU with as many threads
as there are cores or with one, whichever runs a train step and an inference faster after a
warm-up (``--torch_threads`` to fix it: on a shared CPU OpenMP's barriers can make two threads
ten times slower than one); on a GPU in bfloat16 under ``torch.autocast``.

Timing: compilation (reported) and ``--warmup`` steps per side are excluded; then the timed
steps alternate JAX, PyTorch, JAX, ... (each blocked until done: ``jax.block_until_ready`` /
the torch call returning, ``torch.cuda.synchronize`` on a GPU): train steps first, then
inference, then the body's forward alone (stem..res4 with the input normalisation: "body fwd",
to show how much of a step the frozen body is). The headline is the best timed step (a shared
CPU only ever slows a step down), images/s from it, the median beside it; "others" is how many
CPU cores other processes kept busy during the timed steps (/proc/stat), so a disturbed run
shows itself.

Known differences of the two detectors (none changes the work much): torchvision's anchors are
rounded to whole pixels and centred on the cell's corner (the library's: unrounded, on the cell's
centre), its proposals drop boxes under 1e-3 pixels, its box
loss uses smooth-L1 beta 1/9 (Detectron and the library: 1), its RoIAlign samples each RoI's own
adaptive count (the library: a static cap with masks), and its NMS and detection filtering keep
only what passes (dynamic shapes), where the library's static shapes always process the full
counts; with untrained weights few boxes score above 0.05, which makes torchvision's test-time
filtering cheaper than on a trained model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.train_step import machine_info, timed_step  # noqa: E402
from ssl_jax import config_lib, tasks  # noqa: E402
from ssl_jax.detection import inputs as inputs_lib  # noqa: E402
from ssl_jax.detection import model as model_lib  # noqa: E402
from ssl_jax.evals import detection as det  # noqa: E402
from ssl_jax.models import resnet  # noqa: E402
from ssl_jax.models.resnet import EXPANSION, scaled_channels  # noqa: E402
from ssl_jax.train import loop  # noqa: E402
from ssl_jax.train import optim as optim_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_CONFIG = "configs/jigsaw_r50.py"
VOC07_TRAINVAL = 5011
NUM_CLASSES = 20
LEARNING_RATE = 1e-6
KINDS = ("train", "infer", "body")  # train step, inference, body forward (stem..res4) alone
PAPER = dict(
    depth=50, width=1.0, short_side=600, max_side=1000, batch=4, rois=512,
    pre_nms_train=12000, post_nms_train=2000, pre_nms_test=2000, post_nms_test=1000,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The batch


def image_shape(args) -> tuple[int, int]:
    """(height, width) of every image: landscape, short side by the long side."""
    long = args.long_side or min(args.max_side, round(args.short_side * 4 / 3))
    return args.short_side, long


def make_batch(args, max_boxes: int) -> dict[str, np.ndarray]:
    """The images (unpadded), boxes and classes both sides get, as NumPy arrays."""
    rng = np.random.default_rng(0)
    h, w = image_shape(args)
    images = rng.integers(0, 256, (args.batch, h, w, 3), dtype=np.uint8)
    boxes = np.zeros((args.batch, max_boxes, 4), np.float32)
    classes = np.zeros((args.batch, max_boxes), np.int32)
    valid = np.zeros((args.batch, max_boxes), bool)
    n = min(args.gt_boxes, max_boxes)
    for b in range(args.batch):
        bw = rng.uniform(0.1, 0.6, n) * w
        bh = rng.uniform(0.1, 0.6, n) * h
        x1 = rng.uniform(0, 1, n) * (w - bw)
        y1 = rng.uniform(0, 1, n) * (h - bh)
        boxes[b, :n] = np.stack([x1, y1, x1 + bw, y1 + bh], -1)
        classes[b, :n] = rng.integers(1, NUM_CLASSES + 1, n)
        valid[b, :n] = True
    return {"image": images, "boxes": boxes, "classes": classes, "box_valid": valid}


# ---------------------------------------------------------------------------------------------
# JAX: the library's steps


def jax_config(args):
    """``evals.detection.defaults()`` with the benchmark's sizes, and the task."""
    config = det.defaults()
    config.input.short_side, config.input.max_side = args.short_side, args.max_side
    config.rpn.train_pre_nms, config.rpn.train_post_nms = args.pre_nms_train, args.post_nms_train
    config.rpn.test_pre_nms, config.rpn.test_post_nms = args.pre_nms_test, args.post_nms_test
    config.roi.per_image = args.rois
    config.optim.batch_size = config.test.batch_size = args.batch
    config.optim.steps, config.optim.decay_steps = 1000, (750,)
    # Random weights diverge at the recipe's rate; a tiny one keeps every timed step on the
    # same detector (the same work: the update is computed and applied all the same).
    config.optim.base_lr = LEARNING_RATE
    config.detector.freeze_at = args.freeze_at
    config.detector.dtype = args.dtype
    task_config = config_lib.load_config(os.path.join(ROOT, TASK_CONFIG))
    task_config.model.depth, task_config.model.width = args.depth, args.width
    task = tasks.create(task_config, check_values=False)
    return config, task


class JaxDetector:
    """The compiled train and detect steps, their state and the batch on the device."""

    def __init__(self, args, config, task, batch: dict[str, np.ndarray]):
        settings = det.settings_of(config)
        self.model = det.make_model(config, task, NUM_CLASSES)
        schedule = optim_lib.make_schedule(
            det.plan(config, VOC07_TRAINVAL), config.optim.decay_factor
        )
        tx = det.make_optimizer(config, schedule)
        replicated = jax.sharding.NamedSharding(loop.make_mesh(), jax.sharding.PartitionSpec())
        example = jnp.zeros((1, 64, 64, task.input_channels), jnp.float32)
        example_rois = jnp.zeros((1, 1, 4), jnp.float32)
        self.state, _ = loop.create_state(
            lambda rng: self.model.init(rng, example, example_rois),
            lambda _: tx,
            config.seed,
            replicated,
            rng=jax.random.PRNGKey(config.seed + 1),
        )
        # The initial variables, on the host, for the torch side's copy.
        self.initial = jax.device_get(
            {"params": self.state["params"], "batch_stats": self.state["batch_stats"]}
        )
        self.num_params = int(sum(x.size for x in jax.tree.leaves(self.state["params"])))
        h, w = image_shape(args)
        self.padded = inputs_lib.bucket_shape(
            h, w, config.input.short_side, config.input.max_side,
            int(config.input.size_divisor), int(config.input.bucket_step),
        )  # fmt: skip
        image = np.zeros((args.batch, *self.padded, 3), np.uint8)
        image[:, :h, :w] = batch["image"]
        host = dict(batch, image=image, image_hw=np.tile(np.int32([h, w]), (args.batch, 1)))
        self.train_batch = jax.device_put(host)
        self.test_batch = jax.device_put(
            dict(
                image=image,
                image_hw=host["image_hw"],
                image_index=np.arange(args.batch, dtype=np.int32),
                scale=np.ones(args.batch, np.float32),
                valid=np.ones(args.batch, bool),
            )
        )
        train = jax.jit(
            det.make_train_step(task, self.model, settings, tx, schedule), donate_argnums=0
        )
        start = time.perf_counter()
        self.train_compiled = train.lower(self.state, self.train_batch).compile()
        self.train_compile_s = time.perf_counter() - start
        detect = jax.jit(det.make_detect_step(task, self.model, settings))
        start = time.perf_counter()
        self.detect_compiled = detect.lower(self.variables(), self.test_batch).compile()
        self.detect_compile_s = time.perf_counter() - start
        self.train_gflops = _gflops(self.train_compiled)
        self.detect_gflops = _gflops(self.detect_compiled)
        self.features = jax.jit(
            lambda v, images, hw: self.model.apply(
                v, det.trunk_inputs(task, images, hw), method="features"
            )
        )
        self.last_metrics = None
        self.last_detections = None

    def variables(self):
        return {"params": self.state["params"], "batch_stats": self.state["batch_stats"]}

    def train(self) -> None:
        self.state, metrics = self.train_compiled(self.state, self.train_batch)
        self.last_metrics = jax.block_until_ready(metrics)

    def infer(self) -> None:
        self.last_detections = jax.block_until_ready(
            self.detect_compiled(self.variables(), self.test_batch)
        )

    def body(self) -> None:
        b = self.train_batch
        jax.block_until_ready(self.features(self.variables(), b["image"], b["image_hw"]))

    def res4(self, variables) -> np.ndarray:
        """res4 of the batch (B, h, w, C), the unpadded region only."""
        b = self.train_batch
        out = self.features(variables, b["image"], b["image_hw"])
        h, w = image_shape_from(b)
        return np.asarray(out)[:, : math.ceil(h / 16), : math.ceil(w / 16)]

    def detections_per_image(self) -> float:
        return float(np.mean(np.sum(np.asarray(self.last_detections["valid"]), axis=1)))


def _gflops(compiled) -> float | None:
    """XLA's own count of a compiled step's floating-point operations (GFLOP; loops such as
    NMS's are counted once, convolutions and matmuls exactly)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend reports it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return None if flops is None else float(flops) / 1e9


def image_shape_from(batch) -> tuple[int, int]:
    hw = np.asarray(batch["image_hw"])[0]
    return int(hw[0]), int(hw[1])


# ---------------------------------------------------------------------------------------------
# PyTorch: the same detector from torchvision's parts


def torch_resnet_stages(depth: int, width: float):
    """(stem, [res2, res3, res4, res5]) of torchvision blocks at ssl_jax's channel counts."""
    from torch import nn
    from torchvision.models import resnet as tv_resnet
    from torchvision.ops.misc import FrozenBatchNorm2d

    kind, blocks = resnet.stages(depth)
    block = tv_resnet.Bottleneck if kind == "bottleneck" else tv_resnet.BasicBlock
    stem_width = scaled_channels(64, width)
    stem = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, stem_width, 7, 2, 3, bias=False),
            bn1=FrozenBatchNorm2d(stem_width),
            relu=nn.ReLU(inplace=True),
            maxpool=nn.MaxPool2d(3, 2, 1),
        )
    )
    stages, inplanes = [], stem_width
    for stage in range(2, 6):
        planes = scaled_channels(64 * 2 ** (stage - 2), width)
        layers = []
        for i in range(blocks[stage - 2]):
            stride = (1 if stage == 2 else 2) if i == 0 else 1
            out = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, 1, stride, bias=False), FrozenBatchNorm2d(out)
                )
            layers.append(block(inplanes, planes, stride, downsample, norm_layer=FrozenBatchNorm2d))
            inplanes = out
        stages.append(nn.Sequential(*layers))
    return stem, stages


def res5_channels(depth: int, width: float) -> int:
    kind, _ = resnet.stages(depth)
    return scaled_channels(512, width) * EXPANSION[kind]


def build_torch_detector(args, config, mean, std):
    """torchvision's FasterRCNN as the C4 detector."""
    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    stem, (res2, res3, res4, res5) = torch_resnet_stages(args.depth, args.width)
    channels = model_lib.res4_channels(args.depth, args.width)
    body = nn.Sequential(OrderedDict(stem=stem, res2=res2, res3=res3, res4=res4))
    body.out_channels = channels
    head = nn.Sequential(OrderedDict(res5=res5, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))
    sizes = tuple(int(s) for s in config.rpn.anchor_sizes)
    ratios = tuple(float(r) for r in config.rpn.anchor_ratios)
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    r, roi, t = config.rpn, config.roi, config.test
    model = FasterRCNN(
        body,
        num_classes=None,
        min_size=args.short_side,
        max_size=args.max_side,
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, len(sizes) * len(ratios), conv_depth=1),
        rpn_pre_nms_top_n_train=int(r.train_pre_nms),
        rpn_pre_nms_top_n_test=int(r.test_pre_nms),
        rpn_post_nms_top_n_train=int(r.train_post_nms),
        rpn_post_nms_top_n_test=int(r.test_post_nms),
        rpn_nms_thresh=float(r.nms),
        rpn_fg_iou_thresh=float(r.positive_iou),
        rpn_bg_iou_thresh=float(r.negative_iou),
        rpn_batch_size_per_image=int(r.batch),
        rpn_positive_fraction=float(r.positive_fraction),
        box_roi_pool=MultiScaleRoIAlign(["0"], int(config.detector.roi_size), sampling_ratio=0),
        box_head=head,
        box_predictor=FastRCNNPredictor(res5_channels(args.depth, args.width), NUM_CLASSES + 1),
        box_score_thresh=float(t.score_threshold),
        box_nms_thresh=float(t.nms),
        box_detections_per_img=int(t.max_detections),
        box_fg_iou_thresh=float(roi.fg_iou),
        box_bg_iou_thresh=float(roi.fg_iou),
        box_batch_size_per_image=int(roi.per_image),
        box_positive_fraction=float(roi.fg_fraction),
        bbox_reg_weights=tuple(float(v) for v in roi.box_weights),
    )

    # The images come at their final size (as the JAX side's): no resizing.
    def no_resize(image, target=None):
        return image, target

    model.transform.resize = no_resize
    frozen = [stem, res2, res3, res4][: max(0, args.freeze_at)]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return model


def copy_jax_variables(model, variables, sizes: int, ratios: int) -> None:
    """Loads the JAX detector's variables into the torch detector (same function at start);
    ``sizes`` and ``ratios``: how many anchor sizes and aspect ratios."""
    import torch

    params, stats = variables["params"], variables["batch_stats"]

    def t(x):
        return torch.from_numpy(np.array(x, np.float32))

    def conv(module, p):
        module.weight.data.copy_(t(p["kernel"]).permute(3, 2, 0, 1))
        if module.bias is not None:
            module.bias.data.copy_(t(p["bias"]))

    def dense(module, p):
        module.weight.data.copy_(t(p["kernel"]).T)
        module.bias.data.copy_(t(p["bias"]))

    def bn(module, p, s):
        module.weight.copy_(t(p["scale"]))
        module.bias.copy_(t(p["bias"]))
        module.running_mean.copy_(t(s["mean"]))
        module.running_var.copy_(t(s["var"]))

    def block(module, p, s):
        for name in ("conv1", "conv2", "conv3"):
            if hasattr(module, name):
                conv(getattr(module, name), p[name])
                bn(getattr(module, "bn" + name[-1]), p["bn" + name[-1]], s["bn" + name[-1]])
        if module.downsample is not None:
            conv(module.downsample[0], p["downsample_conv"])
            bn(module.downsample[1], p["downsample_bn"], s["downsample_bn"])

    with torch.no_grad():
        body, head = model.backbone, model.roi_heads.box_head
        conv(body.stem.conv1, params["body"]["conv1"])
        bn(body.stem.bn1, params["body"]["bn1"], stats["body"]["bn1"])
        for name, stage, p, s in (
            *((f"res{k}", getattr(body, f"res{k}"), params["body"], stats["body"]) for k in
              (2, 3, 4)),
            ("res5", head.res5, params["head"], stats["head"]),
        ):  # fmt: skip
            for i, m in enumerate(stage):
                block(m, p[f"{name}_{i}"], s[f"{name}_{i}"])
        rpn = model.rpn.head
        conv(rpn.conv[0][0], params["rpn_conv"])
        # The library orders a cell's anchors sizes-major, torchvision ratios-major: torch's
        # output channel a takes the library's channel of the same anchor.
        order = np.asarray([s * ratios + r for r in range(ratios) for s in range(sizes)])
        boxes4 = (order[:, None] * 4 + np.arange(4)).reshape(-1)
        logits, deltas = params["rpn_logits"], params["rpn_deltas"]
        conv(rpn.cls_logits, {k: np.asarray(v)[..., order] for k, v in logits.items()})
        conv(rpn.bbox_pred, {k: np.asarray(v)[..., boxes4] for k, v in deltas.items()})
        predictor = model.roi_heads.box_predictor
        dense(predictor.cls_score, params["cls_score"])
        dense(predictor.bbox_pred, params["bbox_pred"])


class TorchDetector:
    """torchvision's Faster R-CNN, its SGD and the same batch on the device."""

    def __init__(self, args, config, task, batch, variables, device: str, bfloat16: bool):
        import torch

        self.torch, self.device = torch, device
        mean, std = tuple(task.config.input.mean), tuple(task.config.input.std)
        model = build_torch_detector(args, config, mean, std)
        copy_jax_variables(
            model, variables, len(config.rpn.anchor_sizes), len(config.rpn.anchor_ratios)
        )
        self.model = model.to(device)
        self.num_params = sum(p.numel() for p in model.parameters())
        self.num_params += sum(  # FrozenBatchNorm2d's scale and shift: buffers in torch
            m.weight.numel() + m.bias.numel()
            for m in model.modules()
            if type(m).__name__ == "FrozenBatchNorm2d"
        )
        o = config.optim
        lr = float(o.base_lr) * o.batch_size / o.base_batch_size
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        weights = [p for n, p in trained if not n.endswith("bias")]
        biases = [p for n, p in trained if n.endswith("bias")]
        self.optimizer = torch.optim.SGD(
            [
                {"params": weights, "weight_decay": float(o.weight_decay)},
                {"params": biases, "weight_decay": 0.0, "lr": lr * float(o.bias_lr_factor)},
            ],
            lr=lr,
            momentum=float(o.momentum),
        )
        self.images = [torch.from_numpy(im).permute(2, 0, 1).to(device) for im in batch["image"]]
        self.targets = []
        for b in range(len(batch["image"])):
            keep = batch["box_valid"][b]
            self.targets.append({
                "boxes": torch.from_numpy(batch["boxes"][b][keep]).to(device),
                "labels": torch.from_numpy(batch["classes"][b][keep].astype(np.int64)).to(device),
            })  # fmt: skip
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if bfloat16 and device == "cuda" else None
        )
        self.last_losses = None
        self.last_detections = None

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _floats(self):
        return [im.float().div_(255.0) for im in self.images]

    def _context(self):
        import contextlib

        return self.autocast if self.autocast is not None else contextlib.nullcontext()

    def train(self) -> None:
        self.model.train()
        with self._context():
            losses = self.model(self._floats(), self.targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._sync()
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}

    def infer(self) -> None:
        self.model.eval()
        with self.torch.no_grad(), self._context():
            self.last_detections = self.model(self._floats())
        self._sync()

    def body(self) -> None:
        self.model.eval()
        with self.torch.no_grad(), self._context():
            images, _ = self.model.transform(self._floats())
            self.model.backbone(images.tensors)
        self._sync()

    def res4(self) -> np.ndarray:
        self.model.eval()
        with self.torch.no_grad():
            images, _ = self.model.transform(self._floats())
            out = self.model.backbone(images.tensors)
        h, w = self.images[0].shape[1:]
        return (
            out.permute(0, 2, 3, 1)
            .float()
            .cpu()
            .numpy()[:, : math.ceil(h / 16), : math.ceil(w / 16)]
        )

    def detections_per_image(self) -> float:
        return float(np.mean([len(d["boxes"]) for d in self.last_detections]))


# ---------------------------------------------------------------------------------------------
# The run


def choose_torch_threads(tdet, args) -> dict | None:
    """On a CPU, torch's thread count: --torch_threads, or (0) the faster of all cores and one
    thread for a train step plus an inference after a warm-up of each. OpenMP's barriers make
    torch very slow when other processes hold some of the cores (a shared machine), where one
    thread is then the faster; both trial times are kept.
    """
    torch = tdet.torch
    if tdet.device != "cpu":
        return None
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
        return None
    trial = {}
    for n in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.set_num_threads(n)
        tdet.train()
        tdet.infer()
        trial[n] = timed_step(tdet.train)["s"] + timed_step(tdet.infer)["s"]
    best = min(trial, key=trial.get)
    torch.set_num_threads(best)
    print(
        "  torch threads: "
        + ", ".join(f"{n}: {t * 1e3:.0f} ms" for n, t in trial.items())
        + f" (train + infer); using {best}",
        flush=True,
    )
    return {str(n): t for n, t in trial.items()}


def summarise(times: list[dict], batch: int) -> dict:
    seconds = [t["s"] for t in times]
    others = [t["other_cores"] for t in times if t.get("other_cores") is not None]
    best = min(seconds)
    return {
        "step_times_s": seconds,
        "ms_per_step": best * 1e3,
        "ms_per_step_median": statistics.median(seconds) * 1e3,
        "images_per_s": batch / best,
        "other_cores_mean": statistics.mean(others) if others else None,
    }


def run(args, torch_device: str | None) -> dict:
    config, task = jax_config(args)
    h, w = image_shape(args)
    batch = make_batch(args, int(config.input.max_boxes))
    print(
        f"== ResNet-{args.depth} x{args.width} C4, {args.batch} images {h}x{w}, "
        f"{args.rois} RoIs/image, proposals train {args.pre_nms_train}/{args.post_nms_train} "
        f"test {args.pre_nms_test}/{args.post_nms_test}, freeze_at {args.freeze_at}, "
        f"{args.dtype} ==",
        flush=True,
    )
    jdet = JaxDetector(args, config, task, batch)
    print(
        f"  jax: {jdet.num_params:,} params, padded {jdet.padded[0]}x{jdet.padded[1]}; compiled "
        f"train step in {jdet.train_compile_s:.1f} s, detect step in "
        f"{jdet.detect_compile_s:.1f} s",
        flush=True,
    )
    print(
        f"  jax: XLA's count: train step {jdet.train_gflops or float('nan'):.1f} GFLOP, detect "
        f"step {jdet.detect_gflops or float('nan'):.1f} GFLOP",
        flush=True,
    )
    if args.cost_only:
        return {
            "cost_only": True,
            "train_gflops": jdet.train_gflops,
            "detect_gflops": jdet.detect_gflops,
            "train_compile_s": jdet.train_compile_s,
            "detect_compile_s": jdet.detect_compile_s,
            "padded_hw": list(jdet.padded),
        }
    tdet, feature_diff = None, None
    if torch_device is not None:
        tdet = TorchDetector(
            args, config, task, batch, jdet.initial, torch_device, args.dtype == "bfloat16"
        )
        same = "same as" if tdet.num_params == jdet.num_params else "DIFFERS from"
        ja, ta = jdet.res4(jdet.initial), tdet.res4()
        feature_diff = float(np.max(np.abs(ja - ta)) / max(np.max(np.abs(ja)), 1e-12))
        print(
            f"  torch: {tdet.num_params:,} params ({same} jax); res4 of the batch: largest "
            f"|jax - torch| / largest |jax| = {feature_diff:.2e}",
            flush=True,
        )
    thread_trial = choose_torch_threads(tdet, args) if tdet is not None else None
    sides = [("jax", jdet)] + ([("torch", tdet)] if tdet is not None else [])
    times = {(name, what): [] for name, _ in sides for what in KINDS}
    for what in KINDS:
        for _ in range(args.warmup):
            for _, side in sides:
                getattr(side, what)()
        for _ in range(args.steps):  # interleaved, so both see the same background load
            for name, side in sides:
                times[(name, what)].append(timed_step(getattr(side, what)))
        print(
            f"  {what}: "
            + ", ".join(
                f"{name} {min(t['s'] for t in times[(name, what)]) * 1e3:.0f} ms"
                for name, _ in sides
            ),
            flush=True,
        )
    print(
        f"  jax: {float(jdet.last_metrics['proposals']):.0f} proposals / image in training, "
        f"{jdet.detections_per_image():.1f} detections / image"
        + (f"; torch: {tdet.detections_per_image():.1f} detections / image" if tdet else ""),
        flush=True,
    )
    settings = {
        "depth": args.depth,
        "width": args.width,
        "batch": args.batch,
        "image_hw": [h, w],
        "jax_padded_hw": list(jdet.padded),
        "torch_padded_hw": [math.ceil(h / 32) * 32, math.ceil(w / 32) * 32],
        "short_side": args.short_side,
        "max_side": args.max_side,
        "rois_per_image": args.rois,
        "pre_nms_train": args.pre_nms_train,
        "post_nms_train": args.post_nms_train,
        "pre_nms_test": args.pre_nms_test,
        "post_nms_test": args.post_nms_test,
        "freeze_at": args.freeze_at,
        "gt_boxes_per_image": args.gt_boxes,
        "dtype": args.dtype,
        "torch_threads": tdet.torch.get_num_threads() if tdet is not None else None,
        "roi_max_sampling": jdet.model.roi_max_sampling,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    result = {"settings": settings, "jax": {}, "torch": None}
    jm = jdet.last_metrics
    result["jax"] = {
        "params": jdet.num_params,
        "train_compile_s": jdet.train_compile_s,
        "train_gflops": jdet.train_gflops,
        "detect_gflops": jdet.detect_gflops,
        "detect_compile_s": jdet.detect_compile_s,
        "train": summarise(times[("jax", "train")], args.batch),
        "infer": summarise(times[("jax", "infer")], args.batch),
        "body": summarise(times[("jax", "body")], args.batch),
        "last_loss": float(jm["loss"]),
        "proposals_per_image_train": float(jm["proposals"]),
        "fg_rois_per_image": float(jm["fg_rois"]),
        "detections_per_image": jdet.detections_per_image(),
    }
    if tdet is not None:
        result["torch"] = {
            "params": tdet.num_params,
            "device": torch_device,
            "threads": tdet.torch.get_num_threads(),
            "threads_trial_s": thread_trial,
            "train": summarise(times[("torch", "train")], args.batch),
            "infer": summarise(times[("torch", "infer")], args.batch),
            "body": summarise(times[("torch", "body")], args.batch),
            "last_losses": tdet.last_losses,
            "last_loss": sum(tdet.last_losses.values()),
            "detections_per_image": tdet.detections_per_image(),
            "res4_relative_max_diff_at_init": feature_diff,
        }
        for what in KINDS:
            j, t = result["jax"][what], result["torch"][what]
            j["jax_over_torch_speed"] = t["ms_per_step"] / j["ms_per_step"]
            j["jax_over_torch_speed_median"] = t["ms_per_step_median"] / j["ms_per_step_median"]
    return result


def markdown_table(result: dict) -> str:
    s = result["settings"]
    h, w = s["image_hw"]
    head = (
        f"ResNet-{s['depth']}-C4 x{s['width']}, {s['batch']} images {h}x{w} (padded: JAX "
        f"{s['jax_padded_hw'][0]}x{s['jax_padded_hw'][1]}, torch "
        f"{s['torch_padded_hw'][0]}x{s['torch_padded_hw'][1]}), {s['rois_per_image']} RoIs per "
        f"image, proposals {s['pre_nms_train']}/{s['post_nms_train']} (train) "
        f"{s['pre_nms_test']}/{s['post_nms_test']} (test), freeze_at {s['freeze_at']}, "
        f"{s['dtype']}, torch threads {s['torch_threads']}; best of {s['steps']} (median)\n\n"
    )
    lines = [
        "| side | train ms/step | train img/s | infer ms/batch | infer img/s | body fwd ms "
        "| compile s (train + detect) | others |",
        "|---|---|---|---|---|---|---|---|",
    ]
    j, t = result["jax"], result["torch"]

    def row(name, r, compile_s):
        cells = [name]
        for what in KINDS:
            x = r[what]
            cells.append(f"{x['ms_per_step']:.0f} ({x['ms_per_step_median']:.0f})")
            if what != "body":
                cells.append(f"{x['images_per_s']:.2f}")
        others = [r[k]["other_cores_mean"] for k in KINDS if r[k]["other_cores_mean"] is not None]
        cells += [compile_s, f"{statistics.mean(others):.2f}" if others else "-"]
        return "| " + " | ".join(cells) + " |"

    compile_s = f"{j['train_compile_s']:.0f} + {j['detect_compile_s']:.0f}"
    lines.append(row("JAX (ssl_jax)", j, compile_s))
    if t is not None:
        lines.append(row("PyTorch (torchvision)", t, "-"))
        cells = ["**JAX / torch speed**"]
        for what in KINDS:
            x = j[what]
            cells.append(
                f"**{x['jax_over_torch_speed']:.2f}x** ({x['jax_over_torch_speed_median']:.2f}x)"
            )
            if what != "body":
                cells.append("")
        lines.append("| " + " | ".join(cells + ["", ""]) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--short_side", type=int, default=288)
    parser.add_argument("--max_side", type=int, default=512)
    parser.add_argument(
        "--long_side", type=int, default=0, help="0: 4/3 of the short side, at most max_side"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rois", type=int, default=128, help="sampled RoIs per image")
    parser.add_argument("--pre_nms_train", type=int, default=2000)
    parser.add_argument("--post_nms_train", type=int, default=300)
    parser.add_argument("--pre_nms_test", type=int, default=1000)
    parser.add_argument("--post_nms_test", type=int, default=150)
    parser.add_argument("--freeze_at", type=int, default=4, choices=range(0, 5))
    parser.add_argument("--gt_boxes", type=int, default=3, help="ground-truth boxes per image")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side")
    parser.add_argument(
        "--torch_threads", type=int, default=0, help="0: the faster of all cores and 1 (CPU)"
    )
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--paper", action="store_true", help="the paper's sizes (a GPU's)")
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument(
        "--cost_only",
        action="store_true",
        help="compile the JAX steps and print XLA's FLOP counts only (no timing, no torch)",
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "detection.json"))  # fmt: skip
    args = parser.parse_args(argv)
    if args.paper:
        for key, value in PAPER.items():
            setattr(args, key, value)
    backend = jax.default_backend()
    on_accelerator = backend in ("gpu", "tpu")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if on_accelerator else "float32"
    info = machine_info()
    torch_device, torch_note = None, None
    if args.cost_only:
        args.no_torch = True
    if not args.no_torch:
        try:
            import torch

            if on_accelerator:
                if torch.cuda.is_available() and backend == "gpu":
                    torch_device = "cuda"
                else:
                    torch_note = "torch has no CUDA here: torch rows skipped"
            else:
                torch_device = "cpu"
                torch.set_num_threads(os.cpu_count() or 1)
                info["torch_threads"] = torch.get_num_threads()
            import torchvision

            info["torchvision"] = torchvision.__version__
        except ImportError:
            torch_device, torch_note = None, "torch / torchvision not installed: torch rows skipped"
    if torch_note:
        print(torch_note)
    result = run(args, torch_device)
    if result.get("cost_only"):
        print(json.dumps(result, indent=2))
        return 0
    if result["torch"] is not None:
        info["torch_threads"] = result["torch"]["threads"]
    table = markdown_table(result)
    print("\n" + table)
    print(
        "ms: best timed step (median in brackets); img/s from the best step. JAX / torch = torch"
        " ms / JAX ms (above 1: JAX faster).\nothers: mean CPU cores other processes kept busy"
        " during the timed steps (/proc/stat)."
    )
    try:
        info["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    out = {
        "command": " ".join(["python benchmarks/detection.py", *argv]),
        "machine": info,
        "torch_note": torch_note,
        **result,
        "table": table,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
