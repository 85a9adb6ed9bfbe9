"""Config files, argument strings, overrides, validation and the derived schedule."""

import os

import ml_collections
import numpy as np
import pytest

from ssl_jax import config_lib, main, tasks
from ssl_jax.train import optim

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
R50 = os.path.join(ROOT, "configs", "jigsaw_r50.py")
ALEX = os.path.join(ROOT, "configs", "jigsaw_alexnet.py")


@pytest.mark.parametrize("path", [R50, ALEX])
def test_paper_defaults(path):
    c = config_lib.load_config(path)
    tasks.validate(c)
    assert (c.data.source, c.data.name, c.data.split) == ("tfds", "imagenet2012", "train")
    assert c.optim.batch_size == 256 and c.optim.base_lr == 0.1 and c.optim.epochs == 105
    assert c.optim.warmup_epochs == 5 and c.optim.warmup_start_lr == 0.025
    assert c.optim.decay_epochs == (30, 60, 90, 100) and c.optim.weight_decay == 1e-4
    assert c.jigsaw.num_perms == 2000 and c.jigsaw.perm_method == "max_avg"
    assert (c.input.crop, c.jigsaw.cell, c.jigsaw.tile, c.jigsaw.gray_prob) == (255, 85, 64, 0.66)
    assert c.model.bn_group_size == 32
    with pytest.raises(AttributeError):
        c.new_field = 1  # locked


def test_arg_string():
    c = config_lib.load_config(R50 + ":runlocal,perms=500")
    assert c.data.source == "demo" and c.jigsaw.num_perms == 500
    c = config_lib.load_config(R50 + ":perms=10000:depth=101")
    assert c.jigsaw.num_perms == 10000 and c.model.depth == 101
    c = config_lib.load_config(R50 + ":folder=/data/imgs")
    assert (c.data.source, c.data.path) == ("folder", "/data/imgs")


def test_arg_string_errors():
    with pytest.raises(config_lib.ConfigError, match=r"'prems'.*Closest valid key: 'perms'"):
        config_lib.load_config(R50 + ":prems=100")
    with pytest.raises(config_lib.ConfigError, match="not a valid int"):
        config_lib.load_config(R50 + ":perms=many")


def test_overrides():
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(
        c,
        [
            ("optim.base_lr", "0.05"),
            ("optim.batch_size", "512"),
            ("data.data_dir", "/d"),
            ("optim.decay_epochs", "(10, 20)"),
            ("train.progress_bar", "false"),
        ],
    )
    assert c.optim.base_lr == 0.05 and c.optim.batch_size == 512 and c.data.data_dir == "/d"
    assert c.optim.decay_epochs == (10, 20) and c.train.progress_bar is False
    config_lib.apply_overrides(c, [("optim.base_lr", "1")])  # int for a float field
    assert c.optim.base_lr == 1.0 and isinstance(c.optim.base_lr, float)


def test_unknown_key_names_closest():
    c = config_lib.load_config(R50)
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.apply_overrides(c, [("optim.bse_lr", "0.1")])
    assert "config.optim.bse_lr" in str(e.value)
    assert "Closest valid key: 'config.optim.base_lr'" in str(e.value)
    with pytest.raises(
        config_lib.ConfigError, match="Closest valid key: 'config.jigsaw.num_perms'"
    ):
        config_lib.apply_overrides(c, [("jigsaw.num_perm", "100")])


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("model.name", "resnet51", "['resnet', 'alexnet']"),
        ("model.depth", "51", "[18, 34, 50, 101, 152]"),
        ("data.source", "s3", "['tfds', 'folder', 'filelist', 'demo']"),
        ("jigsaw.perm_method", "max_sum", "['max_avg', 'max_min']"),
        ("jigsaw.num_perms", "1", "[2, 362880]"),
        ("optim.momentum", "1.5", "[0, 1]"),
    ],
)
def test_bad_values(key, value, allowed):
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [(key, value)])
    with pytest.raises(config_lib.ConfigError) as e:
        tasks.validate(c)
    assert f"config.{key}" in str(e.value) and allowed in str(e.value)


def test_cross_field_checks():
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [("optim.batch_size", "100")])
    with pytest.raises(config_lib.ConfigError, match="bn_group_size"):
        tasks.validate(c)
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [("jigsaw.tile", "90")])
    with pytest.raises(config_lib.ConfigError, match="config.jigsaw.tile=90"):
        tasks.validate(c)
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [("input.crop", "300")])
    with pytest.raises(config_lib.ConfigError, match="config.input.resize_short=256"):
        tasks.validate(c)
    c = config_lib.load_config(R50)
    config_lib.apply_overrides(c, [("data.source", "folder")])
    with pytest.raises(config_lib.ConfigError, match="config.data.path"):
        tasks.validate(c)
    # A warm-up that ends at or after the first decay: the peak learning rate is never used.
    for warmup in ("3.0", "5.0"):
        c = config_lib.load_config(R50)
        config_lib.apply_overrides(
            c, [("optim.decay_epochs", "(3.0, 6.0, 9.0)"), ("optim.epochs", "10.0"),
                ("optim.warmup_epochs", warmup)]
        )  # fmt: skip
        with pytest.raises(config_lib.ConfigError) as e:
            tasks.validate(c)
        assert f"config.optim.warmup_epochs={float(warmup)}" in str(e.value)
        assert "config.optim.decay_epochs=(3.0, 6.0, 9.0)" in str(e.value)
    config_lib.apply_overrides(c, [("optim.warmup_epochs", "2.9")])
    tasks.validate(c)


def test_main_stops_before_compiling(monkeypatch, tmp_path, capsys):
    from ssl_jax.train import pretrain

    def must_not_run(*a, **k):
        raise AssertionError("training started despite a config error")

    monkeypatch.setattr(pretrain, "pretrain", must_not_run)
    argv = [f"--config={R50}:runlocal", f"--workdir={tmp_path}", "--config.optim.lrr=1"]
    assert main.main(argv) == 2
    assert "Closest valid key" in capsys.readouterr().err
    argv = [f"--config={R50}:runlocal", f"--workdir={tmp_path}", "--config.model.name=vgg"]
    assert main.main(argv) == 2
    assert "['resnet', 'alexnet']" in capsys.readouterr().err


def test_plan_imagenet():
    c = config_lib.load_config(R50)
    plan = optim.make_plan(c.optim, 1_281_167)
    assert plan.steps_per_epoch == 5004 and plan.total_steps == 105 * 5004
    assert plan.warmup_steps == 5 * 5004
    assert plan.decay_steps == tuple(e * 5004 for e in (30, 60, 90, 100))
    assert plan.peak_lr == 0.1 and plan.warmup_start_lr == 0.025
    schedule = optim.make_schedule(plan, 0.1)
    lrs = [
        float(schedule(s))
        for s in (
            0,
            plan.warmup_steps // 2,
            plan.warmup_steps,
            30 * 5004 - 1,
            30 * 5004,
            100 * 5004,
        )
    ]
    np.testing.assert_allclose(lrs, [0.025, 0.0625, 0.1, 0.1, 0.01, 1e-5], rtol=1e-5)
    # Linear scaling with batch.
    config_lib.apply_overrides(c, [("optim.batch_size", "1024")])
    plan = optim.make_plan(c.optim, 1_281_167)
    assert plan.peak_lr == pytest.approx(0.4) and plan.warmup_start_lr == pytest.approx(0.1)
    assert plan.steps_per_epoch == 1251


def test_decay_mask_skips_batchnorm():
    params = {"conv": {"kernel": 1}, "bn": {"scale": 1, "bias": 1}, "fc": {"kernel": 1, "bias": 1}}
    stats = {"bn": {"mean": 0, "var": 1}}
    mask = optim.decay_mask(params, stats)
    assert mask == {
        "conv": {"kernel": True},
        "bn": {"scale": False, "bias": False},
        "fc": {"kernel": True, "bias": True},
    }


def test_parse_arg_types():
    a = config_lib.parse_arg("runlocal,k=40,name=x", runlocal=False, k=10, name="", lr=0.1)
    assert a.runlocal is True and a.k == 40 and a.name == "x" and a.lr == 0.1
    assert isinstance(config_lib.parse_arg(None, x=1), ml_collections.ConfigDict)


@pytest.mark.parametrize(
    "spec",
    [
        "configs/cifar/jigsaw.py",
        "configs/cifar/jigsaw.py:model=alexnet,perms=10",
        "configs/cifar/colorize.py:k=2",
        "configs/cifar/colorize.py:model=alexnet",
        "configs/cifar/supervised.py",
        "configs/cifar/supervised.py:model=alexnet",
    ],
)
def test_small_scale_recipes(spec):
    """RESULTS.md's recipes: valid, 10 epochs on the CIFAR-10 folder, no demo-photo probe."""
    c = config_lib.load_config(os.path.join(ROOT, spec))
    tasks.validate(c)
    assert c.data.source == "folder" and c.data.path.endswith(os.path.join("cifar10", "train"))
    assert c.optim.epochs == 10 and c.optim.batch_size == 32 and c.evals.probe.every_steps == 0


def test_alexnet_input_too_small_is_refused():
    """The AlexNet recipes pass; tiles or crops below the trunk's smallest input are refused."""
    jig = config_lib.load_config(os.path.join(ROOT, "configs/cifar/jigsaw.py:model=alexnet"))
    assert (jig.jigsaw.tile, jig.model.width) == (40, 0.125)
    jig.jigsaw.tile, jig.jigsaw.cell, jig.input.crop = 32, 37, 111
    with pytest.raises(config_lib.ConfigError, match=r"jigsaw.tile=32 .* at least 39 pixels"):
        tasks.validate(jig)
    col = config_lib.load_config(os.path.join(ROOT, "configs/cifar/colorize.py:model=alexnet"))
    col.input.resize_short, col.input.crop = 72, 64
    with pytest.raises(config_lib.ConfigError, match=r"input.crop=64 .* at least 67 pixels"):
        tasks.validate(col)
    sup = config_lib.load_config(os.path.join(ROOT, "configs/cifar/supervised.py:model=alexnet"))
    sup.input.resize_short, sup.input.crop = 36, 32
    with pytest.raises(config_lib.ConfigError, match=r"input.crop=32 .* at least 39 pixels"):
        tasks.validate(sup)


def test_small_scale_svm_config():
    c = config_lib.load_config(os.path.join(ROOT, "configs/cifar/svm.py:train_images=0"))
    assert c.evaluation == "voc07_svm" and c.data.train.max_examples == 0
    assert (c.features.size, c.features.pooling, c.svm.solver) == (64, "adaptive", "sklearn")
    assert c.data.test.path.endswith(os.path.join("cifar10", "test"))


def test_small_scale_lowshot_config():
    """configs/cifar/lowshot.py: svm.py's images and features, the low-shot benchmark."""
    c = config_lib.load_config(os.path.join(ROOT, "configs/cifar/lowshot.py:train_images=300"))
    assert c.evaluation == "voc07_lowshot" and c.data.train.max_examples == 300
    assert (c.features.size, c.features.pooling) == (64, "adaptive")
    assert c.low_shot.ks == (1, 2, 4, 8, 16, 32, 64, 96) and c.low_shot.samples == 5
    assert c.data.test.path.endswith(os.path.join("cifar10", "test"))


def test_config_argument_holds_a_url():
    """A bucket path keeps its scheme's colon; other colons still separate items."""
    a = config_lib.parse_arg(
        "runlocal:folder=gs://b/images,depth=18", runlocal=False, folder="", depth=50
    )
    assert (a.runlocal, a.folder, a.depth) == (True, "gs://b/images", 18)
    c = config_lib.load_config("configs/jigsaw_r50.py:runlocal,filelist=gs://b/list.txt")
    assert (c.data.source, c.data.path) == ("filelist", "gs://b/list.txt")
