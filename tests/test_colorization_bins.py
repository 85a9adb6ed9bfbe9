"""Colorization's ab bin size: FAIR's bins found in the data (5, 15, 20) against an independent
OpenCV + numpy histogram of real photos, stored in and read back from the workdir, and a task
with data bins built, trained a few steps and restored for evaluation."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ssl_jax import config_lib, evaluators, tasks
from ssl_jax.colorization import __main__ as commands
from ssl_jax.colorization import bins as bins_lib
from ssl_jax.colorization import data_bins
from ssl_jax.colorization import task as col_task
from ssl_jax.colorization.picture import Picture
from ssl_jax.train import state as state_lib
from ssl_jax.train.pretrain import pretrain

cv2 = pytest.importorskip("cv2")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
R50 = os.path.join(ROOT, "configs", "colorize_r50.py")
TINY = [
    ("model.depth", "18"),
    ("model.width", "0.125"),
    ("model.bn_group_size", "4"),
    ("data.demo_size", "64"),
    ("input.resize_short", "40"),
    ("input.crop", "32"),
    ("colorization.prior_images", "64"),
    ("evals.samples.images", "2"),
    ("optim.batch_size", "16"),
    ("optim.epochs", "1.0"),
    ("optim.warmup_epochs", "0.25"),
    ("optim.decay_epochs", "(0.75,)"),
    ("train.log_every", "1"),
    ("train.checkpoint_every", "2"),
    ("train.progress_bar", "false"),
    ("evals.probe.every_steps", "0"),
]


def tiny_config(*extra):
    return config_lib.apply_overrides(config_lib.load_config(R50 + ":runlocal"), TINY + list(extra))


def folder_config(folder, size, *extra):
    return tiny_config(
        ("data.source", "folder"),
        ("data.path", str(folder)),
        ("colorization.bin_size", str(size)),
        ("colorization.prior_images", "1000"),
        *extra,
    )


def fair_histogram(files, size):
    """FAIR's generate_colorization_bins_priors.py, restated with OpenCV and numpy: imread,
    resize to 256 x 256, BGR2LAB, histogram2d of a - 128, b - 128 over arange(-128, 128, size);
    the occupied cells' lower edges and frequencies."""
    edges = np.arange(-128, 128, size)
    total = np.zeros((len(edges) - 1, len(edges) - 1))
    for path in files:
        image = cv2.resize(cv2.imread(path), (256, 256))
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32)
        a, b = lab[..., 1].ravel() - 128.0, lab[..., 2].ravel() - 128.0
        total += np.histogram2d(a, b, bins=(edges, edges))[0]
    rows, cols = np.where(total > 0)
    bins = np.stack([edges[rows], edges[cols]], 1)
    return bins, total[rows, cols] / total.sum()


@pytest.fixture(scope="module")
def photos(cifar10_dir, tmp_path_factory):
    """Real photos in two folders: 40 CIFAR-10 JPEGs (4 per class) as they are, and the same
    upscaled to 256 x 256 PNGs (where resizing to 256 x 256 is the identity, so the
    reference's cv2.resize and our TensorFlow resize cannot differ), plus one grayscale."""
    root = tmp_path_factory.mktemp("bin_photos")
    jpegs, pngs = root / "jpeg", root / "png"
    jpegs.mkdir()
    pngs.mkdir()
    for cls in sorted(os.listdir(os.path.join(cifar10_dir, "train"))):
        for path in sorted(glob.glob(os.path.join(cifar10_dir, "train", cls, "*.jpg")))[:4]:
            name = f"{cls}_{os.path.basename(path)}"
            shutil.copy(path, jpegs / name)
            image = Image.open(path).convert("RGB").resize((256, 256), Image.BICUBIC)
            image.save(pngs / name.replace(".jpg", ".png"))
    Image.open(path).convert("L").convert("RGB").resize((256, 256)).save(pngs / "gray.png")
    return jpegs, pngs


# ---------------------------------------------------------------------------------------------
# The histogram


def test_ab_cells_are_numpy_histogram2d():
    """Every integer ab value (the 8-bit range, edges included), counted by ab_cells, against
    np.histogram2d over FAIR's edges: the same cell, and the same values dropped."""
    values = np.arange(-128, 128)
    ab = np.stack(np.meshgrid(values, values, indexing="ij"), -1).reshape(-1, 2)
    for size in (5, 10, 15, 20):
        edges = np.arange(-128, 128, size)
        reference = np.histogram2d(ab[:, 0], ab[:, 1], bins=(edges, edges))[0].ravel()
        cell, inside = bins_lib.ab_cells(jnp.asarray(ab), size)
        counts = np.bincount(np.asarray(cell)[np.asarray(inside)], minlength=reference.size)
        np.testing.assert_array_equal(counts, reference, err_msg=f"size {size}")
        assert bins_lib.grid_cells(size) == reference.size
        # Float ab (the float Lab path) lands in the same cells.
        cell_f, inside_f = bins_lib.ab_cells(jnp.asarray(ab, jnp.float32), size)
        np.testing.assert_array_equal(cell_f, cell)
        np.testing.assert_array_equal(inside_f, inside)


@pytest.mark.parametrize("size", [5, 15, 20])
def test_data_bins_equal_fair_histogram(photos, size):
    _, pngs = photos
    files = sorted(glob.glob(str(pngs / "*.png")))
    bins, priors, summary = data_bins.estimate(folder_config(pngs, size))
    ref_bins, ref_priors = fair_histogram(files, size)
    assert bins.dtype == np.float32 and priors.dtype == np.float64
    np.testing.assert_array_equal(bins, ref_bins)
    np.testing.assert_allclose(priors, ref_priors, rtol=1e-12)
    assert summary["images"] == len(files) == 41 and summary["bins"] == len(bins)
    assert summary["pixels"] <= len(files) * 256 * 256  # values beyond the last edge dropped
    assert bins_lib.check_data_bins(bins, size) is None


def test_data_bins_of_jpegs_match_fair_up_to_resize_rounding(photos):
    """32 x 32 JPEGs upscaled to 256 x 256: TensorFlow's bilinear resize and cv2.resize round
    differently, by a level at some pixels; the bins found are the same, the priors within
    1e-3 (L1)."""
    jpegs, _ = photos
    files = sorted(glob.glob(str(jpegs / "*.jpg")))
    bins, priors, _ = data_bins.estimate(folder_config(jpegs, 15))
    ref_bins, ref_priors = fair_histogram(files, 15)
    np.testing.assert_array_equal(bins, ref_bins)
    assert np.abs(priors - ref_priors).sum() < 1e-3


# ---------------------------------------------------------------------------------------------
# Stored in the workdir


def test_data_bins_stored_and_read_back(photos, tmp_path, monkeypatch):
    _, pngs = photos
    config = folder_config(pngs, 15)
    work = tmp_path / "work"
    bins, priors = col_task.run_data_bins(config, str(work))
    np.testing.assert_array_equal(np.load(work / col_task.BINS_FILE), bins)
    np.testing.assert_array_equal(np.load(work / col_task.PRIORS_FILE), priors)
    summary = json.loads((work / "colorization_priors.json").read_text())
    assert summary["bin_size"] == 15 and summary["bins"] == len(bins) and summary["images"] == 41

    # A resumed run (or an evaluation) reads them back and reads no data.
    def no_data(*args, **kwargs):
        raise AssertionError("the data was read again")

    monkeypatch.setattr(data_bins, "estimate", no_data)
    again_bins, again_priors = col_task.run_data_bins(config, str(work))
    np.testing.assert_array_equal(again_bins, bins)
    np.testing.assert_allclose(again_priors, priors, rtol=1e-15)
    task = tasks.create(config)
    task.fit(str(work))
    np.testing.assert_array_equal(task.bins, bins)
    assert task.class_weights.shape == (len(bins),)
    # The same workdir under another bin size is refused.
    with pytest.raises(config_lib.ConfigError, match="bin_size=20"):
        col_task.run_data_bins(folder_config(pngs, 20), str(work))


def test_k_above_the_bins_found_is_refused(tmp_path):
    """The data decides Q: a K larger than the bins found stops fit(), naming both keys."""
    work = tmp_path / "work"
    work.mkdir()
    np.save(work / col_task.BINS_FILE, np.array([[-8, -8], [-8, 7], [7, -8]], np.float32))
    np.save(work / col_task.PRIORS_FILE, np.array([0.5, 0.25, 0.25]))
    task = tasks.create(tiny_config(("colorization.bin_size", "15")))
    with pytest.raises(RuntimeError, match="fit"):
        task.model  # noqa: B018
    with pytest.raises(config_lib.ConfigError, match=r"colorization\.k=10.*bin_size=15"):
        task.fit(str(work))


def test_bin_size_config_checks():
    for key, value, match in [
        ("colorization.bin_size", "7", r"config\.colorization\.bin_size=7"),
        ("colorization.lab", "skimage", r"config\.colorization\.lab"),
    ]:
        with pytest.raises(config_lib.ConfigError, match=match):
            tasks.validate(tiny_config((key, value)))
    too_many = [("colorization.bin_size", "20"), ("colorization.k", "145")]
    with pytest.raises(config_lib.ConfigError, match=r"colorization\.k=145.*bin_size=20"):
        tasks.validate(tiny_config(*too_many))
    with pytest.raises(config_lib.ConfigError, match=r"colorization\.k=314.*bin_size=10"):
        tasks.validate(tiny_config(("colorization.k", "314")))
    priors = [("colorization.bin_size", "5"), ("colorization.priors_file", __file__)]
    with pytest.raises(config_lib.ConfigError, match="priors_file"):
        tasks.validate(tiny_config(*priors))
    with pytest.raises(config_lib.ConfigError, match="lab='float'"):
        tasks.validate(tiny_config(("colorization.quantize", "false")))
    for spec, size in [(R50 + ":bins=15", 15), (R50, 10)]:
        assert config_lib.load_config(spec).colorization.bin_size == size
    for name in ("colorize_alexnet.py", "cifar/colorize.py"):
        c = config_lib.load_config(os.path.join(ROOT, "configs", name) + ":bins=20")
        assert c.colorization.bin_size == 20


# ---------------------------------------------------------------------------------------------
# A run with data bins, and its evaluations


@pytest.fixture(scope="module")
def trained15(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bins15")
    config = tiny_config(("colorization.bin_size", "15"), ("train.stop_after_steps", "2"))
    (workdir / "config.json").write_text(config.to_json_best_effort())
    pretrain(config, str(workdir))
    return workdir


def test_bin_size_15_trains_with_one_logit_per_bin(trained15):
    bins = np.load(trained15 / col_task.BINS_FILE)
    priors = np.load(trained15 / col_task.PRIORS_FILE)
    assert bins.shape[1] == 2 and len(priors) == len(bins) >= 10
    assert bins_lib.check_data_bins(bins, 15) is None
    lines = (trained15 / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    # Starts near chance over the Q bins.
    first = next(r for r in rows if "ce" in r)
    assert first["ce"] == pytest.approx(np.log(len(bins)), abs=1.0)
    assert (trained15 / "evals" / "samples" / "step_2" / "picture.png").is_file()


def test_bin_size_15_workdir_round_trip(trained15):
    bins = np.load(trained15 / col_task.BINS_FILE)
    q = len(bins)
    # The run's task from its config alone has no model yet; from its workdir it has Q logits.
    config = state_lib.load_run_config(str(trained15))
    with pytest.raises(RuntimeError, match="restore"):
        tasks.create(config, check_values=False).model  # noqa: B018
    _, task, step, variables = state_lib.restore_variables(str(trained15))
    assert step == 2
    np.testing.assert_array_equal(task.bins, bins)
    assert variables["params"]["classifier"]["kernel"].shape[-1] == q
    logits, _ = task.model.apply(
        variables, task.model_inputs(jnp.zeros((1, 32, 32, 3), jnp.uint8)), train=False
    )
    assert logits.shape == (1, 8, 8, q)
    # An evaluation config on the workdir (the picture evaluator) sees the same bins, and so
    # does the random-init baseline.
    eval_config = config_lib.load_config(
        os.path.join(ROOT, "configs", "evals", "colorization_picture.py") + ":images=2"
    )
    eval_config.pretrained = str(trained15)
    evaluators.check(eval_config)
    task, weights = evaluators.load_weights(eval_config)
    np.testing.assert_array_equal(task.bins, bins)
    picture = evaluators.create(eval_config, task)
    assert isinstance(picture, Picture)
    rows = picture.draw(weights.variables)
    assert len(rows) == 2 and rows[0][1].shape == (32, 32, 3)
    eval_config.random_init = True
    task, weights = evaluators.load_weights(eval_config)
    assert jax.tree.leaves(weights.variables["params"]["classifier"])[-1].shape[-1] == q


def test_priors_command_writes_data_bins(photos, tmp_path):
    _, pngs = photos
    out = tmp_path / "p.npy"
    args = [f"--config.{k}={v}" for k, v in TINY]
    args += [
        "--config.data.source=folder",
        f"--config.data.path={pngs}",
        "--config.colorization.bin_size=20",
    ]
    assert commands.main(["priors", f"--config={R50}:runlocal", f"--out={out}", *args]) == 0
    ref_bins, ref_priors = fair_histogram(sorted(glob.glob(str(pngs / "*.png"))), 20)
    np.testing.assert_array_equal(np.load(tmp_path / "p_bins.npy"), ref_bins)
    np.testing.assert_allclose(np.load(out), ref_priors, rtol=1e-12)
