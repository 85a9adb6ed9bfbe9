"""Object detection on VOC07 test: Faster (or Fast) R-CNN, ResNet-50-C4 (PROTOCOLS.md,
"Detection"), the paper's third transfer benchmark.

  python -m ssl_jax.main --config=configs/evals/voc07_detection.py --config.pretrained=W \
      --workdir=E
  python -m ssl_jax.evals.detection score --devkit=DIR/VOCdevkit/VOC2007 --split=test \
      --detections=E/detections.json --out=R.json

The pretrained trunk's stem..res4 becomes the body and its res5 the box head
(``ssl_jax.detection.model``); the RPN and the box predictor start from Detectron's
initialisation. BatchNorm is frozen everywhere, ``detector.freeze_at`` stages of the body too
(4: the paper's frozen conv body; 2: full fine-tuning). Training runs through the library's one
loop (``ssl_jax.train.loop``: data-parallel over images on the mesh's "data" axis, orbax
checkpoints with the input position, metrics.jsonl, resume by rerunning), one jitted step with
static shapes: images padded into aspect-ratio buckets (``ssl_jax.detection.inputs``), fixed
anchor, proposal and RoI counts with masks. At the end every test image is detected once and
scored with the VOC2007 devkit's rule (11-point AP, and all-points beside it):
E/detections.json, E/results.json, E/results.md and E/detections.png.

Optimizer (Detectron's): SGD momentum 0.9, weight decay 1e-4 on weights only, biases at twice
the learning rate without decay, linear warm-up from ``warmup_factor`` x the rate; the rate is
``base_lr * batch_size / base_batch_size`` (linear scaling, logged).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ssl_jax import config_lib, paths
from ssl_jax.detection import inputs as inputs_lib
from ssl_jax.detection import model as model_lib
from ssl_jax.detection import picture, rcnn, score, voc, voc_eval
from ssl_jax.detection import proposals as proposals_lib
from ssl_jax.evals import base
from ssl_jax.evals import features as features_lib
from ssl_jax.pretext import Pretext, compute_dtype
from ssl_jax.train import loop, preemption
from ssl_jax.train import optim as optim_lib

_log = logging.getLogger(__name__)

SOURCES = ("tfds", "vocdevkit")
TRAIN_SETS = {"voc07": ("2007",), "voc0712": ("2007", "2012")}
WEIGHTS_FILE = "detection_weights.json"
DETECTIONS_FILE = "detections.json"
PICTURE_FILE = "detections.png"
# (steps, decay steps) by (proposals, training set): PROTOCOLS.md's VOC07 recipe (Faster R-CNN
# 50k iterations, x0.1 at 38k; Fast R-CNN 30k, x0.1 at 22k) and FAIR's longer VOC07+12 ones
# (its configs/benchmark_tasks/object_detection_frozen/voc0712: 100k / 65k and 80k / 66k).
SCHEDULES = {
    ("rpn", "voc07"): (50_000, (38_000,)),
    ("file", "voc07"): (30_000, (22_000,)),
    ("rpn", "voc0712"): (100_000, (65_000,)),
    ("file", "voc0712"): (80_000, (66_000,)),
}


def defaults() -> ml_collections.ConfigDict:
    """The benchmark at PROTOCOLS.md's values: Faster R-CNN, frozen body, VOC07 from TFDS."""
    c = base.evaluator_config("voc07_detection")

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # tfds (voc/2007, voc/2012) | vocdevkit
    c.data.path = ""  # vocdevkit: the VOCdevkit folder (VOC2007, and VOC2012 for voc0712)
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
    c.data.train = "voc07"  # voc07 | voc0712 (the union of both trainval sets)
    c.data.train_split = "trainval"
    c.data.test_split = "test"  # VOC2007's
    # > 0: detect and score only N test images, spread evenly over the split (voc.evenly_spaced;
    # a quick look, e.g. a notebook on a CPU: not numbers to compare with the benchmark's).
    c.data.test_images = 0
    c.data.classes = "voc"  # voc (the 20) | auto (those in the annotations) | "a,b,..."

    c.proposals = ml_collections.ConfigDict()
    # rpn: Faster R-CNN end to end; or a Detectron proposals pickle (Fast R-CNN), "{split}" in
    # the path replaced by the split (e.g. /data/voc_2007_{split}.pkl).
    c.proposals.source = "rpn"
    c.proposals.max_train = 2000  # Fast R-CNN: proposals per image (the top by score)
    c.proposals.max_test = 2000

    c.detector = ml_collections.ConfigDict()
    c.detector.freeze_at = 4  # 4: frozen conv body (the paper); 2: full fine-tuning; 0: none
    c.detector.roi_size = 14
    c.detector.roi_sampling = 0  # samples per bin and axis; 0 = Detectron's adaptive count
    c.detector.roi_max_sampling = 0  # static cap of the adaptive count; 0: exact (from max_side)
    c.detector.roi_aligned = False  # Detectron2's half-pixel offset (Detectron: none)
    c.detector.roi_chunk = 256  # RoIs per RoIAlign chunk (memory)
    c.detector.dtype = "auto"  # compute dtype: auto = bfloat16 on GPU/TPU, float32 on CPU
    settings = rcnn.Settings()
    c.rpn = ml_collections.ConfigDict()
    c.rpn.anchor_sizes = settings.anchor_sizes
    c.rpn.anchor_ratios = settings.anchor_ratios
    c.rpn.batch = settings.rpn_batch
    c.rpn.positive_fraction = settings.rpn_positive_fraction
    c.rpn.positive_iou = settings.rpn_positive_iou
    c.rpn.negative_iou = settings.rpn_negative_iou
    c.rpn.straddle = settings.rpn_straddle
    c.rpn.nms = settings.rpn_nms
    c.rpn.train_pre_nms = settings.train_pre_nms
    c.rpn.train_post_nms = settings.train_post_nms
    c.rpn.test_pre_nms = settings.test_pre_nms
    c.rpn.test_post_nms = settings.test_post_nms
    c.roi = ml_collections.ConfigDict()
    c.roi.per_image = settings.num_rois
    c.roi.fg_fraction = settings.fg_fraction
    c.roi.fg_iou = settings.fg_iou
    c.roi.bg_iou = settings.bg_iou
    c.roi.box_weights = settings.box_weights

    c.input = ml_collections.ConfigDict()
    c.input.short_side = 600
    c.input.max_side = 1000
    c.input.flip = True
    c.input.size_divisor = 32  # the padded short side: a multiple of this
    c.input.bucket_step = 128  # the padded long side: a multiple of this (one shape per bucket)
    c.input.max_boxes = 64  # ground-truth boxes per image (more: the first ones, counted)
    c.input.workers = 4  # decoding threads

    c.optim = ml_collections.ConfigDict()
    c.optim.batch_size = 4  # images (FAIR: 2 GPUs x 2)
    c.optim.base_lr = 0.002
    c.optim.base_batch_size = 4  # lr = base_lr * batch_size / base_batch_size
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.bias_lr_factor = 2.0  # Detectron: biases at 2x the rate, no weight decay
    c.optim.warmup_steps = 500
    c.optim.warmup_factor = 1.0 / 3.0
    c.optim.steps = 0  # 0: the recipe's (SCHEDULES: by proposals and training set)
    c.optim.decay_steps = ()  # (): the recipe's
    c.optim.decay_factor = 0.1

    c.test = ml_collections.ConfigDict()
    c.test.batch_size = 8
    c.test.score_threshold = settings.test_score
    c.test.nms = settings.test_nms
    c.test.max_detections = settings.test_max
    # Also score the trained model with these RoIAlign sampling counts (e.g. (2,): Detectron2's
    # fixed count against the adaptive one); results.json "roi_sampling_variants".
    c.test.roi_sampling_variants = ()
    c.test.picture_images = 8  # test images in detections.png, spread over the test set

    c.train = ml_collections.ConfigDict()
    c.train.log_every = 20
    c.train.checkpoint_every = 2000  # a multiple of log_every
    c.train.keep_checkpoints = 2
    # Seconds an object-store operation (gs:// workdir, data, checkpoint writes) retries a store
    # that does not answer before the run stops, keeping its last complete checkpoint.
    c.train.store_retry_seconds = 300.0
    c.train.stop_after_steps = ml_collections.FieldReference(None, field_type=int)
    c.train.progress_bar = True
    return c


ARGS = dict(
    runlocal=False, freeze_at=4, proposals="rpn", train="voc07", devkit="", data_dir=""
)  # fmt: skip


def apply_args(c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> None:
    """``freeze_at=4|2``, ``proposals=rpn|FILE``, ``train=voc07|voc0712``, ``devkit=PATH`` (a
    VOCdevkit folder instead of TFDS), ``data_dir=D`` (TFDS), ``runlocal``."""
    c.detector.freeze_at = int(arg.freeze_at)
    c.proposals.source = arg.proposals
    c.data.train = arg.train
    if arg.devkit:
        c.data.source, c.data.path = "vocdevkit", arg.devkit
    if arg.data_dir:
        c.data.data_dir = arg.data_dir
    if arg.runlocal:
        runlocal(c, devkit=arg.devkit)


SHARED_DEVKIT = "../shared/data/detection/VOCdevkit"


def runlocal(c: ml_collections.ConfigDict, devkit: str = "") -> None:
    """A small-scale run on the shared two-class set (raccoons, kangaroos): short side 320,
    fewer proposals and RoIs, 400 steps of 4 images at a rate for a short schedule, and the
    test also with RoIAlign's fixed 2 samples; about 5 minutes on 2 CPU cores with a narrow
    trunk."""
    c.data.source, c.data.path = "vocdevkit", devkit or SHARED_DEVKIT
    c.data.classes = "auto"
    c.input.short_side, c.input.max_side = 320, 512
    c.rpn.train_pre_nms, c.rpn.train_post_nms = 2000, 300
    c.rpn.test_pre_nms, c.rpn.test_post_nms = 1000, 300
    c.roi.per_image = 128
    c.optim.base_lr = 0.01
    c.optim.warmup_steps = 50
    c.optim.steps = 400
    c.optim.decay_steps = (300,)
    c.test.batch_size = 8
    c.test.roi_sampling_variants = (2,)
    c.train.log_every = 20
    c.train.checkpoint_every = 200


# ---------------------------------------------------------------------------------------------
# Derived numbers, in one place


def schedule_of(config: ml_collections.ConfigDict) -> tuple[int, tuple[int, ...]]:
    """(steps, decay steps): the config's, or the recipe's for RPN / proposals-file training."""
    kind = "rpn" if config.proposals.source == "rpn" else "file"
    steps, decay = SCHEDULES[
        kind, config.data.train if config.data.train in TRAIN_SETS else "voc07"
    ]
    if config.optim.steps:
        steps = int(config.optim.steps)
        decay = tuple(config.optim.decay_steps)
    elif config.optim.decay_steps:
        decay = tuple(config.optim.decay_steps)
    return steps, tuple(int(d) for d in decay)


def plan(config: ml_collections.ConfigDict, num_images: int) -> optim_lib.Plan:
    o = config.optim
    steps, decay = schedule_of(config)
    peak = float(o.base_lr) * o.batch_size / o.base_batch_size
    return optim_lib.Plan(
        num_examples=num_images,
        batch_size=o.batch_size,
        steps_per_epoch=max(1, num_images // o.batch_size),
        total_steps=steps,
        warmup_steps=int(o.warmup_steps),
        decay_steps=decay,
        peak_lr=peak,
        warmup_start_lr=peak * float(o.warmup_factor),
    )


def settings_of(config: ml_collections.ConfigDict) -> rcnn.Settings:
    r, roi, t = config.rpn, config.roi, config.test
    return rcnn.Settings(
        anchor_sizes=tuple(float(s) for s in r.anchor_sizes),
        anchor_ratios=tuple(float(s) for s in r.anchor_ratios),
        rpn_batch=int(r.batch),
        rpn_positive_fraction=float(r.positive_fraction),
        rpn_positive_iou=float(r.positive_iou),
        rpn_negative_iou=float(r.negative_iou),
        rpn_straddle=float(r.straddle),
        rpn_nms=float(r.nms),
        train_pre_nms=int(r.train_pre_nms),
        train_post_nms=int(r.train_post_nms),
        test_pre_nms=int(r.test_pre_nms),
        test_post_nms=int(r.test_post_nms),
        num_rois=int(roi.per_image),
        fg_fraction=float(roi.fg_fraction),
        fg_iou=float(roi.fg_iou),
        bg_iou=tuple(float(v) for v in roi.bg_iou),
        box_weights=tuple(float(v) for v in roi.box_weights),
        test_score=float(t.score_threshold),
        test_nms=float(t.nms),
        test_max=int(t.max_detections),
        rpn=config.proposals.source == "rpn",
    )


def make_model(
    config: ml_collections.ConfigDict, task: Pretext, num_classes: int, roi_sampling: int = -1
) -> model_lib.C4Detector:
    m, d = task.config.model, config.detector
    sampling = int(d.roi_sampling if roi_sampling < 0 else roi_sampling)
    cap = int(d.roi_max_sampling) or model_lib.max_sampling(
        padded_max_side(config), 16, int(d.roi_size)
    )
    return model_lib.C4Detector(
        depth=int(m.depth),
        width=float(m.get("width", 1.0)),
        stride_in_1x1=bool(m.get("stride_in_1x1", False)),
        bn_epsilon=float(m.get("bn_epsilon", 1e-5)),
        num_classes=num_classes,
        num_anchors=len(config.rpn.anchor_sizes) * len(config.rpn.anchor_ratios),
        freeze_at=int(d.freeze_at),
        roi_size=int(d.roi_size),
        roi_sampling=sampling,
        roi_max_sampling=cap,
        roi_aligned=bool(d.roi_aligned),
        roi_chunk=int(d.roi_chunk),
        dtype=compute_dtype(d.dtype),
    )


def padded_max_side(config: ml_collections.ConfigDict) -> int:
    step = int(config.input.bucket_step)
    return int(math.ceil(config.input.max_side / step) * step)


# ---------------------------------------------------------------------------------------------
# The optimizer: what trains, at which rate


def _module_stage(path: tuple[str, ...]) -> int:
    """The ResNet stage of a body parameter (1 = stem)."""
    name = path[1]
    return 1 if name in ("conv1", "bn1") else int(name[3])


def param_role(path: tuple[str, ...], freeze_at: int, rpn: bool) -> str:
    """ "frozen", "bias" or "weight" for a detector parameter (its key path)."""
    top = path[0]
    if top in ("body", "head"):
        # Frozen BatchNorm (AffineChannel): never trained; and the body up to freeze_at.
        if any(p.startswith("bn") or p.endswith("_bn") for p in path[1:-1]):
            return "frozen"
        if top == "body" and _module_stage(path) <= freeze_at:
            return "frozen"
    elif top.startswith("rpn_") and not rpn:
        return "frozen"
    return "bias" if path[-1] == "bias" else "weight"


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """SGD with momentum; weight decay on trained weights (not biases); biases at
    ``bias_lr_factor`` x the rate; frozen parameters never move."""
    o = config.optim
    freeze_at, rpn = int(config.detector.freeze_at), config.proposals.source == "rpn"
    factor = {"frozen": 0.0, "bias": float(o.bias_lr_factor), "weight": 1.0}

    def roles(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: param_role(tuple(p.key for p in path), freeze_at, rpn), tree
        )

    def scale(updates, params=None):
        del params
        return jax.tree.map(lambda u, r: u * factor[r], updates, roles(updates))

    return optax.chain(
        optax.add_decayed_weights(
            float(o.weight_decay),
            mask=lambda params: jax.tree.map(lambda r: r == "weight", roles(params)),
        ),
        optax.stateless(scale),
        optax.sgd(learning_rate=schedule, momentum=float(o.momentum)),
    )


def trunk_inputs(task: Pretext, images: jax.Array, image_hw: jax.Array) -> jax.Array:
    """The trunk's input (the task's convention) with the padding at 0, as Detectron pads the
    mean-subtracted image with zeros."""
    x = task.model_inputs(images).astype(jnp.float32)
    rows = jnp.arange(images.shape[1])[None, :, None] < image_hw[:, 0, None, None]
    cols = jnp.arange(images.shape[2])[None, None, :] < image_hw[:, 1, None, None]
    return jnp.where((rows & cols)[..., None], x, 0.0)


def make_train_step(task, model, settings, tx, schedule):
    def train_step(state, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])
        inputs = trunk_inputs(task, batch["image"], batch["image_hw"])

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state["batch_stats"]}
            return rcnn.train_losses(settings, model, variables, inputs, batch, rng)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = dict(
            state,
            params=optax.apply_updates(state["params"], updates),
            opt_state=opt_state,
            step=state["step"] + 1,
        )
        return new_state, {"loss": loss, "lr": schedule(state["step"]), **metrics}

    return train_step


def make_detect_step(task, model, settings):
    def detect_step(variables, batch):
        inputs = trunk_inputs(task, batch["image"], batch["image_hw"])
        out = rcnn.detect(settings, model, variables, inputs, batch)
        return {**out, "image_index": batch["image_index"], "scale": batch["scale"],
                "image_valid": batch["valid"]}  # fmt: skip

    return detect_step


def _fetch(tree: Any) -> Any:
    """A pytree of replicated global arrays on the host (every process holds a full copy)."""
    return jax.tree.map(lambda v: np.asarray(v.addressable_data(0)), tree)


# ---------------------------------------------------------------------------------------------
# The benchmark


class DetectionBenchmark:
    """VOC detection with a C4 detector on a pretrained ResNet (``ssl_jax.evals.base``)."""

    def __init__(
        self, config: ml_collections.ConfigDict, task: Pretext, *, mesh: Mesh | None = None
    ):
        self.config, self.task, self.mesh = config, task, mesh
        model = task.config.model
        if model.name != "resnet":
            raise config_lib.ConfigError(
                f"The detection benchmark needs a ResNet trunk (a C4 body: stem..res4, res5 as "
                f"the box head); {config.pretrained or 'this run'} has model.name="
                f"{model.name!r}. The paper's detection table is ResNet-50 only."
            )
        d, o, t = config.data, config.optim, config.train
        if d.source not in SOURCES:
            raise config_lib.ConfigError(
                f"config.data.source={d.source!r}; allowed: {', '.join(SOURCES)}."
            )
        if d.source == "vocdevkit" and not d.path:
            raise config_lib.ConfigError(
                "config.data.source='vocdevkit' needs config.data.path (a VOCdevkit folder)."
            )
        if not isinstance(d.test_images, int) or d.test_images < 0:
            raise config_lib.ConfigError(
                f"config.data.test_images={d.test_images!r}; use 0 (every test image: the "
                "benchmark) or a positive count (that many, spread over the test split)."
            )
        if d.train not in TRAIN_SETS:
            raise config_lib.ConfigError(
                f"config.data.train={d.train!r}; allowed: {', '.join(TRAIN_SETS)}."
            )
        if int(config.detector.freeze_at) not in range(0, 5):
            raise config_lib.ConfigError(
                f"config.detector.freeze_at={config.detector.freeze_at}; allowed: 0 (nothing "
                "frozen) to 4 (stem..res4 frozen: the paper's frozen conv body); 2 is "
                "Detectron's default (full fine-tuning)."
            )
        devices, processes = (mesh.size if mesh else jax.device_count()), jax.process_count()
        for key, value in (
            ("optim.batch_size", o.batch_size),
            ("test.batch_size", config.test.batch_size),
        ):
            if value <= 0 or value % devices or value % processes:
                raise config_lib.ConfigError(
                    f"config.{key}={value} does not split evenly over {devices} devices; use a "
                    f"positive multiple of {devices} (one image or more per device)."
                )
        if t.checkpoint_every % t.log_every:
            raise config_lib.ConfigError(
                f"config.train.checkpoint_every={t.checkpoint_every} must be a multiple of "
                f"config.train.log_every={t.log_every}."
            )
        steps, decay = schedule_of(config)
        if steps <= 0 or any(not 0 < s < steps for s in decay):
            raise config_lib.ConfigError(
                f"config.optim.steps={steps} with decay_steps={decay}: steps must be positive and "
                "every decay step inside (0, steps)."
            )
        if int(config.detector.roi_sampling) < 0:
            raise config_lib.ConfigError(
                f"config.detector.roi_sampling={config.detector.roi_sampling}; use 0 (adaptive, "
                "Detectron) or a positive count (Detectron2: 2)."
            )

    # -- data ---------------------------------------------------------------------------------

    def _read(self, split: str, years: tuple[str, ...]):
        d = self.config.data
        classes: Any = {"voc": None, "auto": "auto"}.get(d.classes)
        if classes is None and d.classes != "voc":
            classes = tuple(n.strip() for n in str(d.classes).split(",") if n.strip())
        sets = []
        for year in years:
            if d.source == "vocdevkit":
                sets.append(
                    voc.read_devkit(d.path, split, year=year, classes=classes,
                                    config_key="config.data")
                )  # fmt: skip
            else:
                sets.append(
                    voc.read_tfds(f"voc/{year}", split, data_dir=d.data_dir, classes=classes,
                                  config_key="config.data")
                )  # fmt: skip
        out = sets[0]
        for other in sets[1:]:
            out = voc.union(out, other)
        return out

    def _proposals(self, dataset, split: str, max_proposals: int):
        path = self.config.proposals.source.replace("{split}", split)
        return proposals_lib.load(path, dataset, max_proposals=max_proposals)

    # -- run ----------------------------------------------------------------------------------

    def run(self, weights: base.Weights, workdir: str) -> dict[str, float]:
        """Trains the detector (resuming from workdir's checkpoint), detects every test image,
        scores them, writes the results; returns {"mAP", "mAP_all_points"} (%)."""
        config, task = self.config, self.task
        start_time = time.perf_counter()
        mesh = self.mesh or loop.make_mesh()
        replicated = NamedSharding(mesh, P())
        batch_sharding = NamedSharding(mesh, P("data"))
        # The batches must split over the processes and devices (ConfigError otherwise).
        loop.local_batch_size(config.optim.batch_size, mesh)
        loop.local_batch_size(config.test.batch_size, mesh, "config.test.batch_size")
        paths.makedirs(workdir)

        train_set = voc.with_objects(self._read(config.data.train_split,
                                                TRAIN_SETS[config.data.train]))  # fmt: skip
        test_set = voc.evenly_spaced(self._read(config.data.test_split, ("2007",)),
                                     int(config.data.test_images))  # fmt: skip
        if train_set.classes != test_set.classes:
            raise config_lib.ConfigError(
                f"The train classes {train_set.classes} differ from the test classes "
                f"{test_set.classes}; name them with config.data.classes."
            )
        classes = train_set.classes
        settings = settings_of(config)
        train_props = test_props = None
        if not settings.rpn:
            train_props = self._proposals(train_set, config.data.train_split,
                                          int(config.proposals.max_train))  # fmt: skip
            test_props = self._proposals(test_set, config.data.test_split,
                                         int(config.proposals.max_test))  # fmt: skip
        run_plan = plan(config, train_set.num_images)
        schedule = optim_lib.make_schedule(run_plan, config.optim.decay_factor)
        model = make_model(config, task, len(classes))
        tx = make_optimizer(config, schedule)
        _log.info(
            "detection: %s; %s: %d train images (%s), %d test images, classes %s; %s, "
            "freeze_at %d; %d steps of %d images, lr %.4g (base %.4g x %d / %d), decay at %s",
            weights.description, "Faster R-CNN" if settings.rpn else "Fast R-CNN",
            train_set.num_images, train_set.name, test_set.num_images, ",".join(classes),
            "RoIAlign adaptive" if model.roi_sampling == 0 else f"RoIAlign {model.roi_sampling}",
            model.freeze_at, run_plan.total_steps, run_plan.batch_size, run_plan.peak_lr,
            config.optim.base_lr, config.optim.batch_size, config.optim.base_batch_size,
            run_plan.decay_steps,
        )  # fmt: skip

        example = jnp.zeros((1, 64, 64, task.input_channels), jnp.float32)
        example_rois = jnp.zeros((1, 1, 4), jnp.float32)
        trunk = features_lib.trunk_variables(weights.variables)

        def init(rng):
            variables = model.init(rng, example, example_rois)
            return model_lib.from_trunk(trunk, variables)

        state, _ = loop.create_state(
            init, lambda _: tx, config.seed, replicated, rng=jax.random.PRNGKey(config.seed + 1)
        )
        base.check_resumed_weights(workdir, WEIGHTS_FILE, weights.description, "The detector")

        train_step = jax.jit(
            make_train_step(task, model, settings, tx, schedule),
            in_shardings=(replicated, batch_sharding),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        batch_keys = ["image", "image_hw", "boxes", "classes", "box_valid"]
        if not settings.rpn:
            batch_keys += ["proposals", "proposal_valid"]
        geometry = dict(
            short_side=int(config.input.short_side), max_side=int(config.input.max_side),
            size_divisor=int(config.input.size_divisor),
            bucket_step=int(config.input.bucket_step), workers=int(config.input.workers),
        )  # fmt: skip

        def batches(start):
            return inputs_lib.train_batches(
                train_set, global_batch=config.optim.batch_size,
                process_index=jax.process_index(), process_count=jax.process_count(),
                flip=bool(config.input.flip), max_boxes=int(config.input.max_boxes),
                seed=config.seed, start=start, proposals=train_props, **geometry,
            )  # fmt: skip

        outcome = loop.run(
            state,
            train_step,
            batches,
            workdir=workdir,
            train=config.train,
            total_steps=run_plan.total_steps,
            batch_size=run_plan.batch_size,
            steps_per_epoch=run_plan.steps_per_epoch,
            mesh=mesh,
            batch_keys=batch_keys,
            what="detection training",
            diverged_fix="Lower config.optim.base_lr or lengthen config.optim.warmup_steps",
        )
        if outcome.preempted:
            raise preemption.Preempted(
                f"the detector stopped at step {outcome.step} with its checkpoint saved"
            )
        variables = {"params": outcome.state["params"],
                     "batch_stats": outcome.state["batch_stats"]}  # fmt: skip
        train_seconds = time.perf_counter() - start_time

        def test(roi_sampling: int):
            test_model = make_model(config, task, len(classes), roi_sampling)
            detect_step = jax.jit(
                make_detect_step(task, test_model, settings),
                in_shardings=(replicated, batch_sharding),
                out_shardings=replicated,
            )
            keys = ["image", "image_hw", "image_index", "scale", "valid"]
            if not settings.rpn:
                keys += ["proposals", "proposal_valid"]
            detections = []
            for local in inputs_lib.test_batches(
                test_set, global_batch=config.test.batch_size,
                process_index=jax.process_index(), process_count=jax.process_count(),
                proposals=test_props, **geometry,
            ):  # fmt: skip
                batch = {
                    k: jax.make_array_from_process_local_data(batch_sharding, local[k])
                    for k in keys
                }
                out = _fetch(detect_step(variables, batch))
                detections.extend(_to_records(out, test_set, classes))
            return detections

        test_start = time.perf_counter()
        detections = test(-1)
        test_seconds = time.perf_counter() - test_start
        scores = voc_eval.evaluate(detections, test_set.annotations, classes)
        variants = {}
        for sampling in config.test.roi_sampling_variants:
            other = voc_eval.evaluate(test(int(sampling)), test_set.annotations, classes)
            variants[str(int(sampling))] = {k: other[k] for k in ("mAP", "mAP_all_points")}
            variants[str(int(sampling))]["classes"] = other["classes"]
        results = {
            **base.results_header(config, task, weights),
            **scores,
            "detector": "Faster R-CNN" if settings.rpn else "Fast R-CNN",
            "freeze_at": int(config.detector.freeze_at),
            "roi_sampling": "adaptive" if model.roi_sampling == 0 else model.roi_sampling,
            "roi_sampling_variants": variants,
            "step": int(outcome.step),
            "steps": run_plan.total_steps,
            "lr": run_plan.peak_lr,
            "train": {"dataset": train_set.name, "images": train_set.num_images,
                      "skipped": dict(train_set.skipped),
                      "box_truncations": inputs_lib.truncated_count()},
            "test": {"dataset": test_set.name, "images": test_set.num_images,
                     "skipped": dict(test_set.skipped), "detections": len(detections)},
            "train_metrics": outcome.metrics,
            "seconds": {"train": train_seconds, "test": test_seconds,
                        "total": time.perf_counter() - start_time},
            "config": config.to_dict(),
        }  # fmt: skip
        table = markdown_table(results)
        if base.is_leader():
            score.write_detections(paths.join(workdir, DETECTIONS_FILE), detections)
            _picture(test_set, detections, paths.join(workdir, PICTURE_FILE),
                     int(config.test.picture_images), weights.description)  # fmt: skip
        base.write_results(workdir, results, table)
        _log.info("\n%s", table)
        return {"mAP": results["mAP"], "mAP_all_points": results["mAP_all_points"]}


def _to_records(out: dict[str, np.ndarray], dataset, classes) -> list[dict[str, Any]]:
    """Detections of a fetched batch as D.json records in original VOC 1-based pixels."""
    records = []
    for row in range(out["boxes"].shape[0]):
        if not out["image_valid"][row]:
            continue
        index = int(out["image_index"][row])
        annotation = dataset.annotations[index]
        keep = out["valid"][row]
        if not keep.any():
            continue
        boxes = inputs_lib.to_original(
            out["boxes"][row][keep], float(out["scale"][row]), annotation.height, annotation.width
        )
        for box, cls, s in zip(
            boxes, out["classes"][row][keep], out["scores"][row][keep], strict=True
        ):
            records.append({
                "image_id": annotation.image_id,
                "class": classes[int(cls)],
                "score": float(s),
                "box": [float(v) for v in box],
            })  # fmt: skip
    return records


def _picture(dataset, detections, path, count, title) -> None:
    if count <= 0:
        return
    by_image: dict[str, list] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    # Spread over the set: one listed class by class shows more than its first class.
    shown = voc.evenly_spaced(dataset, count)
    images, drawn = [], []
    for index, annotation in enumerate(shown.annotations):
        data = np.frombuffer(shown.image_bytes(index), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            continue
        images.append(image[..., ::-1])
        mine = sorted(by_image.get(annotation.image_id, []), key=lambda d: -d["score"])
        drawn.append([
            ([d["box"][0] - 1, d["box"][1] - 1, d["box"][2], d["box"][3]], d["class"], d["score"])
            for d in mine
        ])  # fmt: skip
    if images:
        picture.draw(images, drawn, path, title=title)


def markdown_table(results: dict[str, Any]) -> str:
    """AP (%) per class, 11-point (VOC2007) and all-points."""
    head = (
        f"detection ({results['detector']}, C4, freeze_at {results['freeze_at']}): "
        f"{results['weights']}\n\n{results['train']['dataset']} -> {results['test']['dataset']} "
        f"({results['test']['images']} test images), step {results['step']} of "
        f"{results['steps']}\n\n"
    )
    lines = ["| class | gt | AP (11-point) | AP (all points) |", "|---|---|---|---|"]
    for name, r in results["classes"].items():
        ap = "-" if r["ap"] is None else f"{r['ap']:.2f}"
        ap_all = "-" if r["ap_all_points"] is None else f"{r['ap_all_points']:.2f}"
        lines.append(f"| {name} | {r['num_gt']} | {ap} | {ap_all} |")
    lines.append(f"| **mAP** | | **{results['mAP']:.2f}** | **{results['mAP_all_points']:.2f}** |")
    for sampling, r in results["roi_sampling_variants"].items():
        lines.append(
            f"| mAP, RoIAlign {sampling} samples | | {r['mAP']:.2f} | {r['mAP_all_points']:.2f} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m ssl_jax.evals.detection score ...`` (``ssl_jax.detection.score``)."""
    if len(argv) < 2 or argv[1] != "score":
        print(
            "usage: python -m ssl_jax.evals.detection score --devkit=DIR/VOCdevkit/VOC2007 "
            "--split=test --detections=D.json --out=R.json [--classes=a,b]",
            file=sys.stderr,
        )
        return 2
    return score.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
