"""The Colorization task: configs, targets, network, priors, training, pictures and commands."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ssl_jax import config_lib, tasks
from ssl_jax.colorization import NUM_BINS, ab_bins, encode, rebalance_weights, soft_encode
from ssl_jax.colorization import __main__ as commands
from ssl_jax.colorization import task as col_task
from ssl_jax.train import loop
from ssl_jax.train import metrics as metrics_lib
from ssl_jax.train.pretrain import pretrain

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
R50 = os.path.join(ROOT, "configs", "colorize_r50.py")
ALEX = os.path.join(ROOT, "configs", "colorize_alexnet.py")

TINY = [
    ("model.depth", "18"),
    ("model.width", "0.125"),
    ("model.bn_group_size", "4"),
    ("data.demo_size", "128"),
    ("input.resize_short", "40"),
    ("input.crop", "32"),
    ("colorization.prior_images", "64"),
    ("evals.samples.images", "4"),
    ("optim.batch_size", "16"),
    ("optim.epochs", "1.0"),
    ("optim.warmup_epochs", "0.25"),
    ("optim.decay_epochs", "(0.75,)"),
    ("train.log_every", "2"),
    ("train.checkpoint_every", "4"),
    ("train.progress_bar", "false"),
    ("evals.probe.every_steps", "0"),  # the :runlocal probe has its own tests
]


def tiny_config(*extra, spec=R50 + ":runlocal"):
    return config_lib.apply_overrides(config_lib.load_config(spec), TINY + list(extra))


def photo(size=64, seed=0):
    """A real photo crop (the built-in demo images), uint8 (size, size, 3)."""
    from ssl_jax.data import demo

    folder = os.path.dirname(demo.__file__)
    names = sorted(n for n in os.listdir(os.path.join(folder, "demo_photos")) if n.endswith("jpg"))
    image = Image.open(os.path.join(folder, "demo_photos", names[seed % len(names)]))
    return np.asarray(image.convert("RGB").resize((size, size)), np.uint8)


# ---------------------------------------------------------------------------------------------
# Configs


def test_paper_defaults():
    c = config_lib.load_config(R50)
    tasks.validate(c)
    assert c.task == "colorization" and c.data.source == "tfds" and c.data.name == "imagenet2012"
    col = c.colorization
    assert (col.k, col.sigma, col.rebalance, col.rebalance_gamma, col.rebalance_alpha) == (
        10,
        5.0,
        True,
        0.5,
        1.0,
    )
    assert (c.model.name, c.model.depth, c.model.res5_stride, c.input.crop) == (
        "resnet",
        50,
        1,
        224,
    )
    a = config_lib.load_config(ALEX)
    tasks.validate(a)
    assert (a.model.name, a.model.alexnet_variant, a.input.crop) == ("alexnet", "colorization", 227)


def test_arguments_and_errors():
    c = config_lib.load_config(R50 + ":k=40,rebalance=False")
    assert c.colorization.k == 40 and not c.colorization.rebalance
    c = config_lib.load_config(R50 + ":runlocal")
    assert c.data.source == "demo" and c.model.width == 0.125
    for bad in ("0", "314"):
        c = config_lib.load_config(R50)
        config_lib.apply_overrides(c, [("colorization.k", bad)])
        with pytest.raises(config_lib.ConfigError, match="colorization.k"):
            tasks.validate(c)
    c = config_lib.load_config(ALEX)
    config_lib.apply_overrides(c, [("model.alexnet_variant", "jigsaw")])
    with pytest.raises(config_lib.ConfigError, match="alexnet_variant"):
        tasks.validate(c)
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [("colorization.priors_file", "/nonexistent/p.npy")])
    with pytest.raises(config_lib.ConfigError, match="priors_file"):
        tasks.validate(c)


# ---------------------------------------------------------------------------------------------
# Targets


def test_lab_targets_match_skimage_block_means():
    skcolor = pytest.importorskip("skimage.color")
    image = np.stack([photo(64, 0), photo(64, 1)])
    lightness, ab_grid, ab_max = col_task.lab_targets(
        jnp.asarray(image), 4, lab="float", quantize=False
    )
    lab = skcolor.rgb2lab(image)
    assert lightness.shape == (2, 64, 64, 1) and ab_grid.shape == (2, 16, 16, 2)
    np.testing.assert_allclose(lightness[..., 0], lab[..., 0] - 50, atol=1e-3)
    blocks = lab[..., 1:].reshape(2, 16, 4, 16, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(ab_grid, blocks, atol=1e-3)
    np.testing.assert_allclose(ab_max, np.abs(lab[..., 1:]).max(axis=(1, 2, 3)), atol=1e-3)
    # OpenCV's 8-bit Lab (the default): L on its 8-bit levels, a and b integers.
    lightness_q, ab_q, _ = col_task.lab_targets(jnp.asarray(image), 1)
    levels = (np.asarray(lightness_q) + 50) * 255 / 100
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    np.testing.assert_array_equal(ab_q, np.round(ab_q))


@pytest.fixture(scope="module")
def prepared():
    col = config_lib.load_config(R50).colorization
    priors = np.random.default_rng(0).dirichlet(np.ones(NUM_BINS))
    weights = rebalance_weights(priors)
    gray = np.repeat(photo(64, 2).mean(-1, keepdims=True), 3, -1).astype(np.uint8)
    images = np.stack([photo(64, 0), gray, photo(64, 3)])
    inputs, targets = col_task.make_prepare(col, weights)(None, {"image": jnp.asarray(images)})
    return col, weights, images, inputs, targets


def test_prepare_targets(prepared):
    col, weights, images, inputs, targets = prepared
    assert inputs.shape == (3, 64, 64, 1) and inputs.dtype == jnp.float32
    assert targets["indices"].shape == (3, 16, 16, col.k)
    np.testing.assert_allclose(np.asarray(targets["weights"]).sum(-1), 1.0, atol=1e-6)
    # Pixel weights: the rebalancing weight of each pixel's nearest bin.
    np.testing.assert_array_equal(
        targets["pixel_weights"], weights[np.asarray(targets["indices"])[..., 0]]
    )
    # The grayscale image is masked out, the colour ones count.
    assert np.asarray(targets["mask"]).all(axis=(1, 2)).tolist() == [True, False, True]


def test_loss_metrics_against_numpy(prepared):
    _, _, _, _, targets = prepared
    logits = jax.random.normal(jax.random.PRNGKey(0), targets["indices"].shape[:3] + (NUM_BINS,))
    loss, metrics = col_task.loss(logits, targets)
    lp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    idx, w = np.asarray(targets["indices"]), np.asarray(targets["weights"], np.float64)
    ce = -(np.take_along_axis(lp, idx, -1) * w).sum(-1)
    mask = np.asarray(targets["mask"])
    pw = np.asarray(targets["pixel_weights"])
    np.testing.assert_allclose(loss, (ce * pw)[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["ce"], ce[mask].mean(), rtol=1e-5)
    top1 = (np.asarray(logits).argmax(-1) == idx[..., 0])[mask].mean()
    np.testing.assert_allclose(metrics["top1"], top1, atol=1e-6)
    np.testing.assert_allclose(metrics["colour_images"], 2 / 3, atol=1e-6)


def _built_targets(sigma, k, quantize, images):
    """The targets of the task as tasks.create makes it (no priors: rebalancing off)."""
    c = config_lib.load_config(R50 + ":runlocal")
    config_lib.apply_overrides(
        c,
        [
            ("input.crop", "32"),
            ("colorization.k", str(k)),
            ("colorization.sigma", str(sigma)),
            ("colorization.rebalance", "false"),
            ("colorization.lab", "opencv" if quantize else "float"),
            ("colorization.quantize", str(quantize).lower()),
        ],
    )
    pretext = tasks.create(c)
    pretext.fit(None)
    _, targets = jax.jit(pretext.prepare)(jax.random.PRNGKey(0), {"image": jnp.asarray(images)})
    assert "pixel_weights" not in targets
    return {name: np.asarray(value) for name, value in targets.items()}


@pytest.fixture(scope="module")
def target_photos():
    return np.stack([photo(48, 0), photo(48, 3)])


@pytest.mark.parametrize("sigma, k, quantize", [(3.0, 4, False), (9.0, 16, False), (3.0, 16, True)])
def test_built_task_targets_use_config_sigma_and_k(
    reference_dir, target_photos, sigma, k, quantize
):
    """Every target pixel holds its K nearest of Zhang's 313 bins (pts_in_hull.npy), weighted
    exp(-d^2 / (2 sigma^2)) / sum, with config.colorization's sigma and K, computed here in
    float64 from ab of the crop: scikit-image Lab averaged over 4 x 4 blocks (the float path,
    unquantised), or the task's own 8-bit ab grid (OpenCV's 8-bit Lab)."""
    bins = np.load(os.path.join(reference_dir, "pts_in_hull.npy")).astype(np.float64)
    images = target_photos
    targets = _built_targets(sigma, k, quantize, images)
    indices, weights = targets["indices"], targets["weights"].astype(np.float64)
    assert indices.shape == (2, 12, 12, k) and weights.shape == (2, 12, 12, k)
    if quantize:
        _, ab, _ = col_task.lab_targets(jnp.asarray(images), 4)
        ab = np.asarray(ab, np.float64)
        # ... and then exactly soft_encode at the config's sigma and K.
        ref_indices, ref_weights = soft_encode(jnp.asarray(ab, jnp.float32), k=k, sigma=sigma)
        np.testing.assert_array_equal(indices, ref_indices)
        np.testing.assert_array_equal(targets["weights"], ref_weights)
        tol = 1e-5
    else:
        skcolor = pytest.importorskip("skimage.color")
        ab = skcolor.rgb2lab(images)[..., 1:].reshape(2, 12, 4, 12, 4, 2).mean(axis=(2, 4))
        tol = 1e-4  # float32 Lab against float64 skimage
    d2 = np.square(ab[..., None, :] - bins).sum(-1)  # (2, 12, 12, 313)
    picked = np.take_along_axis(d2, indices, -1)
    # The K nearest bins, nearest first (up to ties and float32 rounding).
    np.testing.assert_allclose(picked, np.sort(d2, -1)[..., :k], rtol=1e-4, atol=0.05)
    expected = np.exp(-(picked - picked.min(-1, keepdims=True)) / (2 * sigma**2))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, expected, atol=tol)


def test_built_task_targets_change_with_sigma(target_photos):
    narrow = _built_targets(2.0, 10, True, target_photos)
    wide = _built_targets(9.0, 10, True, target_photos)
    np.testing.assert_array_equal(narrow["indices"], wide["indices"])
    # A narrower Gaussian puts more of the weight on the nearest bin.
    assert (narrow["weights"][..., 0] >= wide["weights"][..., 0] - 1e-6).all()
    assert np.abs(narrow["weights"] - wide["weights"]).max() > 0.1


# ---------------------------------------------------------------------------------------------
# Networks


@pytest.mark.parametrize(
    "spec, crop, feature_grid",
    [(R50, 64, 4), (ALEX, 67, 3)],  # ResNet res5 at 1/16 (stride 1); AlexNet conv5
)
def test_network_shapes_and_taps(spec, crop, feature_grid):
    c = config_lib.load_config(spec)
    config_lib.apply_overrides(
        c,
        [
            ("model.width", "0.125"),
            ("input.crop", str(crop)),
            ("colorization.rebalance", "false"),
        ],
    )
    pretext = tasks.create(c)
    x = jnp.zeros((2, crop, crop, 1))
    variables = pretext.model.init(jax.random.PRNGKey(0), x, train=False)
    assert variables["params"]["trunk"]["conv1"]["kernel"].shape[2] == 1  # the L channel only
    logits, taps = pretext.model.apply(variables, x, train=False)
    assert logits.shape == (2, crop // 4, crop // 4, NUM_BINS) and logits.dtype == jnp.float32
    last = "res5" if c.model.name == "resnet" else "conv5"
    assert taps[last].shape[1:3] == (feature_grid, feature_grid)
    if c.model.name == "resnet":
        assert taps["res4"].shape[1:3] == taps["res5"].shape[1:3]  # res5 at stride 1


def test_other_depths_build():
    for depth in ("18", "101"):
        c = config_lib.load_config(R50 + f":depth={depth},width=0.0625")
        config_lib.apply_overrides(c, [("input.crop", "32"), ("colorization.rebalance", "false")])
        pretext = tasks.create(c)
        out = jax.eval_shape(
            lambda p=pretext: p.model.init_with_output(
                jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 1)), train=False
            )[0][0]
        )
        assert out.shape == (2, 8, 8, NUM_BINS)


# ---------------------------------------------------------------------------------------------
# Priors


@pytest.fixture(scope="module")
def demo_priors():
    c = tiny_config()
    return c, col_task.estimate_priors(c)


def test_priors_from_the_data(demo_priors):
    c, (priors, summary) = demo_priors
    assert priors.shape == (NUM_BINS,) and abs(priors.sum() - 1) < 1e-9
    assert summary["images"] == 64 and summary["colour_images"] == 64
    assert summary["pixels"] == 64 * (32 // 4) ** 2
    # Unsmoothed counts are the nearest-bin histogram of the targets, computed independently.
    counts, _, _ = col_task.count_bins(c, 64)
    from ssl_jax import data as data_lib

    batch = next(
        data_lib.pretrain_iterator(
            c.data, c.input, local_batch_size=64, seed=c.seed, process_index=0, process_count=1
        )
    )
    _, ab_grid, _ = col_task.lab_targets(jnp.asarray(batch["image"]), 4)
    d = ((np.asarray(ab_grid)[..., None, :] - ab_bins()) ** 2).sum(-1)
    expected = np.bincount(d.argmin(-1).ravel(), minlength=NUM_BINS)
    np.testing.assert_array_equal(counts, expected)


def test_priors_command_and_files(tmp_path, demo_priors):
    c, (priors, _) = demo_priors
    out = tmp_path / "p.npy"
    args = [f"--config.{k}={v}" for k, v in TINY]
    assert commands.main(["priors", f"--config={R50}:runlocal", f"--out={out}", *args]) == 0
    np.testing.assert_allclose(np.load(out), priors, rtol=1e-9)
    assert json.loads((tmp_path / "p.json").read_text())["images"] == 64
    # A run given the file uses it; a run without one stores its estimate in its workdir.
    c2 = tiny_config(("colorization.priors_file", str(out)))
    np.testing.assert_allclose(col_task.run_priors(c2, None), priors, rtol=1e-9)
    stored = col_task.run_priors(tiny_config(), str(tmp_path / "work"))
    np.testing.assert_allclose(np.load(tmp_path / "work" / col_task.PRIORS_FILE), stored)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(7))
    with pytest.raises(config_lib.ConfigError, match="313"):
        col_task.load_priors(str(bad))


def test_priors_of_real_photos(cifar10_dir):
    """Natural images are mostly unsaturated: on 2,000 CIFAR-10 photos the most frequent bin is
    (0, 0) and most of the mass lies within |a|, |b| <= 20; the few grayscale photos are found,
    and rebalancing gives rare (saturated) bins the larger weights."""
    c = tiny_config(("data.source", "folder"), ("data.path", os.path.join(cifar10_dir, "train")))
    priors, summary = col_task.estimate_priors(c, 2000)
    bins = ab_bins()
    assert tuple(bins[np.argmax(priors)]) == (0.0, 0.0)
    assert priors[np.abs(bins).max(1) <= 20].sum() > 0.7
    assert summary["images"] == 2000 and 1800 < summary["colour_images"] < 2000
    weights = rebalance_weights(priors)
    assert weights[np.argmax(priors)] == weights.min()
    np.testing.assert_allclose((priors * weights).sum(), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Training, pictures, commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("colorize")
    config = tiny_config(("train.stop_after_steps", "8"))
    with open(workdir / "config.json", "w") as f:  # as ssl_jax.main writes it
        f.write(config.to_json_best_effort())
    pretrain(config, str(workdir))
    return workdir


def test_training_logs_and_pictures(trained):
    rows = metrics_lib.read_metrics(str(trained))
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    for r in rows:
        assert {"loss", "ce", "top1", "colour_images", "lr"} <= set(r)
        assert np.isfinite(r["loss"]) and 0 <= r["top1"] <= 1
    assert rows[0]["ce"] == pytest.approx(np.log(NUM_BINS), abs=1.0)  # starts near chance
    assert os.path.isfile(trained / col_task.PRIORS_FILE)
    picture = Image.open(trained / "evals" / "samples" / "step_8" / "picture.png")
    # 4 rows (images) x 3 columns (gray, prediction, truth) of 32-pixel crops with 4-pixel gaps.
    assert picture.size == (3 * 36 + 4, 4 * 36 + 4)


def test_show_command(trained, tmp_path):
    out = tmp_path / "grid.png"
    assert (
        commands.main(["show", f"--workdir={trained}", "--step=4", f"--out={out}", "--num=2"]) == 0
    )
    assert Image.open(out).size == (3 * 36 + 4, 2 * 36 + 4)
    assert commands.main(["show", f"--workdir={trained}", "--step=5"]) == 2  # no such checkpoint
    assert commands.main(["show", f"--workdir={tmp_path}"]) == 2  # not a run
    # The same evaluator through the main entry point, from an evaluation config.
    from ssl_jax import main as main_lib

    spec = os.path.join(ROOT, "configs", "evals", "colorization_picture.py") + ":images=3"
    rc = main_lib.main(
        [f"--config={spec}", f"--config.pretrained={trained}", f"--workdir={tmp_path / 'e'}"]
    )
    assert rc == 0
    assert Image.open(tmp_path / "e" / "picture.png").size == (3 * 36 + 4, 3 * 36 + 4)


def test_picture_of_perfect_logits_is_the_image():
    """The prediction helper inverts the encoding: logits peaked on each pixel's true bin give
    back (nearly) the image, at the target grid's resolution."""
    from ssl_jax.colorization import predict
    from ssl_jax.colorization.lab import rgb_to_lab

    image = photo(64, 4)
    lab = np.asarray(rgb_to_lab(image))
    _, ab_grid, _ = col_task.lab_targets(jnp.asarray(image[None]), 1, lab="float", quantize=False)
    indices, weights = soft_encode(ab_grid, k=313, sigma=5.0)
    dense = np.zeros((1, 64, 64, NUM_BINS), np.float32)
    np.put_along_axis(dense, np.asarray(indices), np.asarray(weights), -1)
    logits = jnp.log(jnp.asarray(dense) + 1e-12)
    ab = predict.annealed_mean(logits, temperature=1.0)  # T = 1: the soft target's mean
    assert np.abs(np.asarray(ab)[0] - lab[..., 1:]).mean() < 1.0
    rgb = predict.colorize(jnp.asarray(lab[None, ..., 0]), logits, temperature=1.0)
    assert np.abs(np.asarray(rgb)[0] * 255 - image).mean() < 3.0


def test_eight_devices_match_one(tmp_path, monkeypatch):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (virtual) devices")
    from jax.sharding import Mesh

    extra = [
        ("train.stop_after_steps", "2"),
        ("train.log_every", "1"),
        ("evals.samples.every_steps", "0"),
    ]
    pretrain(tiny_config(*extra), str(tmp_path / "eight"))
    monkeypatch.setattr(loop, "make_mesh", lambda: Mesh(np.asarray(jax.devices()[:1]), ("data",)))
    pretrain(tiny_config(*extra), str(tmp_path / "one"))
    eight = metrics_lib.read_metrics(str(tmp_path / "eight"))
    one = metrics_lib.read_metrics(str(tmp_path / "one"))
    for a, b in zip(eight, one, strict=True):
        for key in ("loss", "ce", "top1"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_alexnet_trains(tmp_path):
    c = tiny_config(
        ("input.resize_short", "72"),
        ("input.crop", "67"),
        ("train.stop_after_steps", "2"),
        ("evals.samples.every_steps", "0"),
        spec=ALEX + ":runlocal",
    )
    last = pretrain(c, str(tmp_path))
    assert np.isfinite(last["loss"])


def test_masked_loss_of_a_gray_batch_is_zero():
    ab = jnp.zeros((2, 4, 4, 2))
    indices, weights = soft_encode(ab)
    loss, count = encode.colorization_loss(
        jnp.zeros((2, 4, 4, NUM_BINS)), indices, weights, mask=jnp.zeros((2, 4, 4), bool)
    )
    assert float(loss) == 0.0 and float(count) == 0.0
