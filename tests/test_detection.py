"""The detection benchmark: the C4 detector's structure, what trains, the jitted step on the
shared two-class set (loss goes down, 8 devices = 1), and runs through the evaluator contract."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from ssl_jax import config_lib, tasks
from ssl_jax.detection import inputs as inputs_lib
from ssl_jax.detection import model as model_lib
from ssl_jax.detection import voc
from ssl_jax.evals import base
from ssl_jax.evals import detection as det
from ssl_jax.evals import features as features_lib
from ssl_jax.models.resnet import ResNet
from ssl_jax.train import loop
from ssl_jax.train import optim as optim_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEVKIT = os.path.join(ROOT, "..", "shared", "data", "detection", "VOCdevkit")
TINY = os.path.join(ROOT, "configs/jigsaw_r50.py") + ":runlocal,depth=18,width=0.125"


@pytest.fixture(scope="module")
def devkit():
    if not os.path.isdir(os.path.join(DEVKIT, "VOC2007", "Annotations")):
        pytest.skip(f"{DEVKIT} is not present")
    return DEVKIT


@pytest.fixture(scope="module")
def task():
    return tasks.create(config_lib.load_config(TINY), check_values=False)


def small_config(devkit, **overrides):
    c = det.defaults()
    det.apply_args(c, config_lib.parse_arg(f"runlocal,devkit={devkit}", **det.ARGS))
    c.input.short_side, c.input.max_side = 128, 224
    c.input.workers = 2
    c.train.progress_bar = False
    c.train.log_every = 4
    c.train.checkpoint_every = 8
    c.optim.steps, c.optim.decay_steps = 8, (6,)
    c.optim.warmup_steps = 2
    c.test.picture_images = 2
    for key, value in overrides.items():
        _set(c, key, value)
    return c


def _set(c, key, value):
    *parents, leaf = key.split(".")
    for p in parents:
        c = c[p]
    c[leaf] = value


def trunk_weights(task, seed=0):
    variables = task.model.init(jax.random.PRNGKey(seed), task.example_inputs, train=False)
    return base.Weights(variables, None, f"random init (seed {seed})")


# ---------------------------------------------------------------------------------------------
# Structure


def test_body_and_head_are_the_trunks_stages(task):
    """The detector's body is the trunk's stem..res4 and its head the trunk's res5, with the
    trunk's own weights and inference-mode BatchNorm (a misnamed or re-initialised block, or a
    training-mode BatchNorm, changes the features)."""
    trunk = ResNet(depth=18, width=0.125)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 96, 128, 3))
    tv = trunk.init(jax.random.PRNGKey(2), x, train=False)
    # Non-trivial running statistics so inference mode is visible.
    tv = {
        "params": tv["params"],
        "batch_stats": jax.tree.map(
            lambda v: v + 0.3 * jax.random.uniform(jax.random.PRNGKey(3), v.shape),
            tv["batch_stats"],
        ),
    }
    _, taps = trunk.apply(tv, x, train=False)
    detector = model_lib.C4Detector(depth=18, width=0.125, num_classes=2, freeze_at=0)
    dv = detector.init(jax.random.PRNGKey(4), x, jnp.zeros((2, 1, 4)))
    dv = model_lib.from_trunk(tv, dv)
    features = detector.apply(dv, x, method="features")
    np.testing.assert_allclose(features, taps["res4"], rtol=1e-5, atol=1e-5)
    res5 = detector.apply(dv, taps["res4"], method=lambda m, f: m.head(f))
    np.testing.assert_allclose(res5, taps["res5"], rtol=1e-5, atol=1e-5)


def test_from_trunk_refuses_another_width():
    x = jnp.zeros((1, 64, 64, 3))
    tv = ResNet(depth=18, width=0.25).init(jax.random.PRNGKey(0), x, train=False)
    detector = model_lib.C4Detector(depth=18, width=0.125, num_classes=2)
    dv = detector.init(jax.random.PRNGKey(0), x, jnp.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="another ResNet depth or width"):
        model_lib.from_trunk(tv, dv)


@pytest.mark.parametrize(
    "path, freeze_at, rpn, role",
    [
        (("body", "conv1", "kernel"), 2, True, "frozen"),
        (("body", "res2_1", "conv2", "kernel"), 2, True, "frozen"),
        (("body", "res3_0", "conv1", "kernel"), 2, True, "weight"),
        (("body", "res3_0", "bn1", "scale"), 2, True, "frozen"),
        (("body", "res4_0", "downsample_bn", "bias"), 0, True, "frozen"),
        (("body", "res4_1", "conv2", "kernel"), 4, True, "frozen"),
        (("head", "res5_0", "conv1", "kernel"), 4, True, "weight"),
        (("head", "res5_0", "bn2", "bias"), 4, True, "frozen"),
        (("rpn_conv", "bias"), 4, True, "bias"),
        (("rpn_conv", "kernel"), 4, False, "frozen"),
        (("cls_score", "kernel"), 4, True, "weight"),
        (("bbox_pred", "bias"), 2, False, "bias"),
    ],
)
def test_param_roles(path, freeze_at, rpn, role):
    assert det.param_role(path, freeze_at, rpn) == role


def test_plan_scales_the_rate_and_picks_the_recipe():
    c = det.defaults()
    p = det.plan(c, 5011)
    assert (p.total_steps, p.decay_steps, p.warmup_steps) == (50_000, (38_000,), 500)
    assert p.peak_lr == pytest.approx(0.002) and p.warmup_start_lr == pytest.approx(0.002 / 3)
    c.proposals.source = "/data/ss_{split}.pkl"
    c.optim.batch_size = 16
    p = det.plan(c, 5011)
    assert (p.total_steps, p.decay_steps) == (30_000, (22_000,))
    assert p.peak_lr == pytest.approx(0.008)
    schedule = optim_lib.make_schedule(p, 0.1)
    assert float(schedule(0)) == pytest.approx(0.008 / 3)
    assert float(schedule(250)) == pytest.approx(0.008 * (1 / 3 + 0.5 * 2 / 3), rel=1e-5)
    assert float(schedule(22_000)) == pytest.approx(0.0008)


def test_bad_configs_name_the_key(task, devkit):
    c = small_config(devkit)
    c.detector.freeze_at = 5
    with pytest.raises(config_lib.ConfigError, match="freeze_at"):
        det.DetectionBenchmark(c, task)
    c = small_config(devkit)
    c.optim.batch_size = 3
    with pytest.raises(config_lib.ConfigError, match="optim.batch_size"):
        det.DetectionBenchmark(c, task)
    c = small_config(devkit)
    c.data.test_images = -8
    with pytest.raises(config_lib.ConfigError, match="data.test_images=-8"):
        det.DetectionBenchmark(c, task)
    c = small_config(devkit)
    c.data.train = "voc2012"
    with pytest.raises(config_lib.ConfigError, match="data.train"):
        det.DetectionBenchmark(c, task)
    alexnet = tasks.create(
        config_lib.load_config(os.path.join(ROOT, "configs/jigsaw_alexnet.py") + ":runlocal"),
        check_values=False,
    )
    with pytest.raises(config_lib.ConfigError, match="ResNet"):
        det.DetectionBenchmark(small_config(devkit), alexnet)


# ---------------------------------------------------------------------------------------------
# The jitted step on real images


def _setup(task, devkit, mesh, batch_size, freeze_at=2):
    c = small_config(devkit)
    c.optim.batch_size = batch_size
    c.detector.freeze_at = freeze_at
    dataset = voc.with_objects(voc.read_devkit(devkit, "trainval", classes="auto"))
    settings = det.settings_of(c)
    model = det.make_model(c, task, dataset.num_classes)
    schedule = optim_lib.make_schedule(det.plan(c, dataset.num_images), 0.1)
    tx = det.make_optimizer(c, schedule)
    trunk = features_lib.trunk_variables(trunk_weights(task).variables)
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def init(rng):
        v = model.init(rng, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 1, 4)))
        return model_lib.from_trunk(trunk, v)

    state, _ = loop.create_state(init, lambda _: tx, 0, replicated, rng=jax.random.PRNGKey(1))
    step = jax.jit(
        det.make_train_step(task, model, settings, tx, schedule),
        in_shardings=(replicated, sharded),
        out_shardings=(replicated, replicated),
    )
    batches = inputs_lib.train_batches(
        dataset, global_batch=batch_size, short_side=128, max_side=224, workers=2, seed=0
    )
    keys = ("image", "image_hw", "boxes", "classes", "box_valid")

    def next_batch():
        local = next(batches)
        return {k: jax.make_array_from_process_local_data(sharded, local[k]) for k in keys}

    return state, step, next_batch


def test_steps_lower_the_loss_and_frozen_parameters_stay(task, devkit):
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    state, step, next_batch = _setup(task, devkit, mesh, 4)
    before = jax.device_get(state["params"])
    batch = next_batch()
    losses = []
    for _ in range(12):  # the same batch: the loss must fall
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses
    after = jax.device_get(state["params"])
    np.testing.assert_array_equal(
        after["body"]["res2_0"]["conv1"]["kernel"], before["body"]["res2_0"]["conv1"]["kernel"]
    )
    np.testing.assert_array_equal(
        after["body"]["res3_0"]["bn1"]["scale"], before["body"]["res3_0"]["bn1"]["scale"]
    )
    assert not np.array_equal(
        after["body"]["res3_0"]["conv1"]["kernel"], before["body"]["res3_0"]["conv1"]["kernel"]
    )
    assert not np.array_equal(after["rpn_conv"]["kernel"], before["rpn_conv"]["kernel"])
    for name in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"):
        assert np.isfinite(float(metrics[name])) and float(metrics[name]) >= 0


@pytest.mark.slow
def test_eight_devices_match_one(task, devkit):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (virtual) devices")
    results = []
    for devices in (1, 8):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
        state, step, next_batch = _setup(task, devkit, mesh, 8)
        metrics_seen = []
        for _ in range(2):
            state, metrics = step(state, next_batch())
            metrics_seen.append(jax.device_get(metrics))
        results.append((metrics_seen, jax.device_get(state["params"]["cls_score"]["kernel"])))
    (m1, k1), (m8, k8) = results
    for a, b in zip(m1, m8, strict=True):
        for name in ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"):
            np.testing.assert_allclose(a[name], b[name], rtol=2e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(k1, k8, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Through the evaluator contract


@pytest.fixture(scope="module")
def finished_run(task, devkit, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("det"))
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    c = small_config(devkit)
    c.test.roi_sampling_variants = (2,)
    metrics = det.DetectionBenchmark(c, task, mesh=mesh).run(trunk_weights(task), workdir)
    return workdir, metrics


@pytest.mark.slow
def test_run_writes_results_detections_and_picture(finished_run, devkit):
    workdir, metrics = finished_run
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert set(results["classes"]) == {"kangaroo", "raccoon"}
    assert results["step"] == 8 and results["freeze_at"] == 4
    assert metrics["mAP"] == pytest.approx(results["mAP"])
    assert 0.0 <= results["mAP"] <= 100.0 and 0.0 <= results["mAP_all_points"] <= 100.0
    assert "2" in results["roi_sampling_variants"]
    detections = json.load(open(os.path.join(workdir, "detections.json")))
    assert results["test"]["detections"] == len(detections)
    if detections:
        d = detections[0]
        assert set(d) == {"image_id", "class", "score", "box"} and len(d["box"]) == 4
        assert 1.0 <= d["box"][0] <= d["box"][2] and 1.0 <= d["box"][1] <= d["box"][3]
    # The picture's 2 images are spread over the split: its first and middle one (not the first
    # two), side by side under the title.
    spread = voc.evenly_spaced(voc.read_devkit(devkit, "test", classes="auto"), 2)
    with Image.open(os.path.join(workdir, "detections.png")) as picture:
        assert picture.size == (
            2 * max(a.width for a in spread.annotations),
            max(a.height for a in spread.annotations) + 20,
        )
    # Scoring apart from training gives the same numbers.
    out = os.path.join(workdir, "rescored.json")
    rc = det.main(
        [
            "detection",
            "score",
            f"--devkit={os.path.join(devkit, 'VOC2007')}",
            "--split=test",
            f"--detections={os.path.join(workdir, 'detections.json')}",
            f"--out={out}",
        ]
    )
    assert rc == 0
    rescored = json.load(open(out))
    assert rescored["mAP"] == pytest.approx(results["mAP"], abs=1e-6)


@pytest.mark.slow
def test_rerun_resumes_finished_and_refuses_other_weights(finished_run, task, devkit):
    workdir, metrics = finished_run
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    c = small_config(devkit)
    again = det.DetectionBenchmark(c, task, mesh=mesh).run(trunk_weights(task), workdir)
    assert again["mAP"] == pytest.approx(metrics["mAP"])
    with pytest.raises(ValueError, match="new --workdir"):
        det.DetectionBenchmark(c, task, mesh=mesh).run(trunk_weights(task, seed=5), workdir)


@pytest.mark.slow
def test_fast_rcnn_on_a_proposals_file(task, devkit, tmp_path):
    """Fast R-CNN on a Detectron-format proposals pickle (jittered ground truth plus random
    boxes), one file for both splits."""
    from ssl_jax.detection import proposals as proposals_lib

    rng = np.random.default_rng(0)
    ids, boxes, scores = [], [], []
    for split in ("trainval", "test"):
        for a in voc.read_devkit(devkit, split, classes="auto").annotations:
            gt = np.asarray(a.boxes, np.float64).reshape(-1, 4) - [1, 1, 0, 0]
            jitter = gt + rng.normal(0, 4, gt.shape)
            x1 = rng.uniform(0, a.width / 2, (20, 1))
            y1 = rng.uniform(0, a.height / 2, (20, 1))
            rand = np.hstack([x1, y1, x1 + rng.uniform(8, a.width / 2, (20, 1)),
                              y1 + rng.uniform(8, a.height / 2, (20, 1))])  # fmt: skip
            b = np.clip(np.vstack([jitter, rand]), 0, [a.width, a.height, a.width, a.height])
            ids.append(a.image_id)
            boxes.append(b.astype(np.float32))
            scores.append(rng.random(len(b)).astype(np.float32))
    path = str(tmp_path / "proposals.pkl")
    proposals_lib.save(path, ids, boxes, scores)
    with open(path, "rb") as f:
        assert set(pickle.load(f)) >= {"boxes", "scores"}
    c = small_config(devkit, **{"proposals.source": path})
    c.proposals.max_train = c.proposals.max_test = 32
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    workdir = str(tmp_path / "fast")
    metrics = det.DetectionBenchmark(c, task, mesh=mesh).run(trunk_weights(task), workdir)
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["detector"] == "Fast R-CNN" and results["step"] == 8
    assert np.isfinite(metrics["mAP"])
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert all("loss_rpn_cls" not in r for r in rows) and any("loss_cls" in r for r in rows)


def test_a_proposals_file_for_other_ids_is_refused(task, devkit, tmp_path):
    from ssl_jax.detection import proposals as proposals_lib

    path = str(tmp_path / "other.pkl")
    proposals_lib.save(path, ["999999"], [np.asarray([[0, 0, 10, 10]], np.float32)],
                       [np.asarray([1.0], np.float32)])  # fmt: skip
    c = small_config(devkit, **{"proposals.source": path})
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    with pytest.raises(Exception, match="(?i)proposal"):
        det.DetectionBenchmark(c, task, mesh=mesh).run(trunk_weights(task), str(tmp_path / "w"))
