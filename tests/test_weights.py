"""Importing other frameworks' weights reproduces their features; exporting round-trips.

tests/fixtures/weights/ holds, per format, a small network saved in that framework's own layout
with random weights and its outputs on real photos computed in PyTorch (float64) by
tests/fixtures/make_weight_references.py (see its docstring: FAIR's Caffe2 pickles through FAIR's
own renaming rules and input pipeline, a VISSL checkpoint, a torchvision state dict). Here each is
imported with ``python -m ssl_jax.weights import``; the imported run's features, from uint8 RGB
photos through the task's own input conversion, must equal the reference at every tap.

Tolerance: float32 against a float64 reference, ``rtol = 1e-4`` plus ``atol = 1e-4 * max|ref|``
per tap, as test_trunk_reference.py. Without torch everything here runs from the stored files
(ssl_jax reads PyTorch files itself); the tests marked ``torch`` load the exports into PyTorch.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssl_jax import paths
from ssl_jax.models import make_trunk
from ssl_jax.train import state as state_lib
from ssl_jax.weights import __main__ as cli
from ssl_jax.weights import exports, imports, torchfile

WEIGHTS = os.path.join(os.path.dirname(__file__), "fixtures", "weights")
RTOL = 1e-4
# case -> (format, --model, source file)
CASES = {
    "fssb_resnet50_jigsaw": ("fssb", "resnet50_jigsaw", "fssb_resnet50_jigsaw.pkl"),
    "fssb_resnet50_colorization": (
        "fssb",
        "resnet50_colorization",
        "fssb_resnet50_colorization.pkl",
    ),
    "fssb_resnet50_supervised": ("fssb", "resnet50_supervised", "fssb_resnet50_supervised.pkl"),
    "fssb_resnet50_detection": ("fssb", "resnet50_jigsaw", "fssb_resnet50_detection.pkl"),
    "fssb_alexnet_jigsaw": ("fssb", "alexnet_jigsaw", "fssb_alexnet_jigsaw.pkl"),
    "fssb_alexnet_colorization": ("fssb", "alexnet_colorization", "fssb_alexnet_colorization.pkl"),
    "vissl_resnet50": ("vissl", "resnet50_jigsaw", "vissl_resnet50.torch"),
    "torchvision_resnet18": ("torchvision", "resnet18_supervised", "torchvision_resnet18.pth"),
}


def _reference(case):
    with np.load(os.path.join(WEIGHTS, f"{case}.npz")) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Every case imported once: case -> (workdir, record)."""
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for case, (fmt, model, source) in CASES.items():
        workdir = str(root / case)
        record = imports.import_checkpoint(fmt, model, os.path.join(WEIGHTS, source), workdir)
        out[case] = (workdir, record)
    return out


def features(workdir, rgb):
    """Taps and pooled output of an imported run's trunk on uint8 RGB images."""
    config, task, _, variables = state_lib.restore_variables(workdir)
    trunk = make_trunk(config.model, jnp.float32)
    trunk_vars = {
        "params": variables["params"]["trunk"],
        "batch_stats": variables["batch_stats"]["trunk"],
    }
    x = task.model_inputs(jnp.asarray(rgb))
    pooled, taps = jax.jit(lambda v, x: trunk.apply(v, x, train=False))(trunk_vars, x)
    return {**{f"tap/{k}": np.asarray(v) for k, v in taps.items()}, "pooled": np.asarray(pooled)}


def max_relative_difference(out, ref):
    return float(np.max(np.abs(out - ref)) / max(float(np.abs(ref).max()), 1e-12))


@pytest.mark.parametrize("case", list(CASES))
def test_import_reproduces_source_features(imported, case):
    ref = _reference(case)
    out = features(imported[case][0], ref.pop("images"))
    assert sorted(out) == sorted(ref)
    for name, expected in ref.items():
        scale = float(np.abs(expected).max())
        assert out[name].shape == expected.shape, name
        np.testing.assert_allclose(
            out[name], expected, rtol=RTOL, atol=RTOL * scale, err_msg=f"{case} {name}"
        )


def test_import_records_conversions(imported):
    _, jigsaw = imported["fssb_resnet50_jigsaw"]
    assert any("BGR -> RGB" in c for c in jigsaw["conversions"])
    assert any("tower copies dropped" in c for c in jigsaw["conversions"])
    assert {"fc6_w", "fc6_b", "fc7_w"} <= set(jigsaw["dropped"])
    _, detection = imported["fssb_resnet50_detection"]
    assert any("detection pickle" in c for c in detection["conversions"])
    assert detection["input"]["std"] == [1 / 255.0] * 3
    _, alexnet = imported["fssb_alexnet_jigsaw"]
    assert alexnet["config_model"]["alexnet_lrn"] is False
    _, colour = imported["fssb_resnet50_colorization"]
    assert colour["config_model"]["res5_stride"] == 1
    assert colour["config_model"]["res5_dilation"] == 1
    assert "conv_ab_313_w" in colour["dropped"]
    _, vissl = imported["vissl_resnet50"]
    assert vissl["dropped"] == ["heads.0.clf.0.bias", "heads.0.clf.0.weight"]
    stored = paths.read_json(os.path.join(imported["vissl_resnet50"][0], imports.RECORD))
    assert stored["format"] == "vissl"


def _trunk_variables(workdir):
    _, _, _, variables = state_lib.restore_variables(workdir)
    return jax.tree.map(
        np.asarray,
        {"params": variables["params"]["trunk"], "stats": variables["batch_stats"]["trunk"]},
    )


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("case", ["fssb_resnet50_jigsaw", "torchvision_resnet18"])
def test_export_then_import_is_the_identity(imported, case, tmp_path):
    workdir = imported[case][0]
    out = str(tmp_path / "trunk.pth")
    exports.export(workdir, "torchvision", out)
    again = str(tmp_path / "again")
    imports.import_checkpoint(
        "torchvision", "resnet50_jigsaw" if "50" in case else "resnet18_supervised", out, again
    )
    _assert_same(_trunk_variables(workdir), _trunk_variables(again))
    ssl = str(tmp_path / "ssl")
    imports.import_checkpoint("ssl_jax", "", again, ssl)
    _assert_same(_trunk_variables(workdir), _trunk_variables(ssl))


def test_detectron2_export_folds_std_and_reads_bgr(imported, tmp_path):
    workdir = imported["fssb_resnet50_supervised"][0]
    out = str(tmp_path / "model.pkl")
    info = exports.export(workdir, "detectron2", out)
    with open(out, "rb") as f:
        payload = pickle.load(f)
    assert payload["__author__"] == "ssl_jax" and payload["matching_heuristics"] is True
    model = payload["model"]
    # Detectron2's R50 names (its ResNet: stem, res2..res5, convN with .norm, shortcut).
    assert {
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.bias",
        "res5.2.conv3.norm.weight",
        "res4.5.conv2.weight",
    } <= set(model)
    assert not [k for k in model if k.startswith(("layer", "conv1", "bn1"))]
    # Detectron2 feeds conv1 BGR pixels minus PIXEL_MEAN with PIXEL_STD 1: its conv1 output must
    # equal ssl_jax's conv1 on the normalised RGB image (no padding effects: mean-free borders).
    rgb = _reference("fssb_resnet50_supervised")["images"][:1].astype(np.float64)
    config, task, _, variables = state_lib.restore_variables(workdir)
    ours = lax.conv_general_dilated(
        np.asarray(task.model_inputs(jnp.asarray(rgb, jnp.uint8)), np.float64).transpose(
            0, 3, 1, 2
        ),
        np.asarray(variables["params"]["trunk"]["conv1"]["kernel"], np.float64).transpose(
            3, 2, 0, 1
        ),
        (2, 2),
        ((3, 3), (3, 3)),
    )
    mean = np.asarray(info["detectron2"]["MODEL.PIXEL_MEAN"])
    d2_in = rgb[..., ::-1] - mean
    theirs = lax.conv_general_dilated(
        d2_in.transpose(0, 3, 1, 2),
        np.asarray(model["stem.conv1.weight"], np.float64),
        (2, 2),
        ((3, 3), (3, 3)),
    )
    np.testing.assert_allclose(
        np.asarray(theirs), np.asarray(ours), rtol=1e-4, atol=1e-4 * float(np.abs(ours).max())
    )


# ---------------------------------------------------------------------------------------------
# Refusals: a clear error, nothing written


def _refused(tmp_path, argv, capsys, expect):
    workdir = tmp_path / "w"
    code = cli.main(["import", *argv, f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err, err
    assert not workdir.exists()
    return err


def test_refuses_malformed_pickle(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"blobs": {"conv1_w": [1, 2, 3]}}))
    _refused(
        tmp_path, ["--format=fssb", "--model=resnet50_jigsaw", str(bad)], capsys, "not an array"
    )
    bad.write_bytes(pickle.dumps([1, 2, 3]))
    _refused(tmp_path, ["--format=fssb", "--model=resnet50_jigsaw", str(bad)], capsys, "not FAIR's")
    bad.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00blobsq")
    _refused(tmp_path, ["--format=fssb", "--model=resnet50_jigsaw", str(bad)], capsys, "readable")


def test_refuses_truncated_files(tmp_path, capsys):
    for source, fmt in (("fssb_resnet50_jigsaw.pkl", "fssb"), ("vissl_resnet50.torch", "vissl")):
        data = open(os.path.join(WEIGHTS, source), "rb").read()
        cut = tmp_path / source
        cut.write_bytes(data[: len(data) // 2])
        err = _refused(
            tmp_path, [f"--format={fmt}", "--model=resnet50_jigsaw", str(cut)], capsys, ""
        )
        assert "complete" in err or "damaged" in err or "not a PyTorch zip" in err, err


def test_refuses_another_architecture_with_a_table(tmp_path, capsys):
    source = os.path.join(WEIGHTS, "torchvision_resnet18.pth")
    err = _refused(
        tmp_path, ["--format=torchvision", "--model=resnet50_supervised", source], capsys, "missing"
    )
    assert "layer1.0.conv3.weight" in err and "shape" in err
    source = os.path.join(WEIGHTS, "fssb_alexnet_jigsaw.pkl")
    _refused(tmp_path, ["--format=fssb", "--model=resnet50_jigsaw", source], capsys, "conv1")


def test_refuses_unknown_format_and_model(tmp_path, capsys):
    source = os.path.join(WEIGHTS, "torchvision_resnet18.pth")
    _refused(tmp_path, ["--format=caffe", "--model=resnet18_supervised", source], capsys, "caffe")
    _refused(
        tmp_path, ["--format=torchvision", "--model=vgg16_supervised", source], capsys, "vgg16"
    )
    _refused(tmp_path, ["--format=vissl", "--model=resnet18_supervised", source], capsys, "VISSL")


def test_refuses_an_existing_run(imported, capsys):
    workdir = imported["torchvision_resnet18"][0]
    source = os.path.join(WEIGHTS, "torchvision_resnet18.pth")
    code = cli.main(
        [
            "import",
            "--format=torchvision",
            "--model=resnet18_supervised",
            source,
            f"--workdir={workdir}",
        ]
    )
    assert code == 2 and "already holds a run" in capsys.readouterr().err


def test_torch_reader_refuses_pickled_modules(tmp_path, capsys):
    source = os.path.join(WEIGHTS, "pickled_module.pth")  # torch.save(nn.Linear(2, 2))
    with pytest.raises(torchfile.TorchFileError, match="Linear"):
        torchfile.load(source)
    _refused(
        tmp_path, ["--format=torchvision", "--model=resnet18_supervised", source], capsys, "Linear"
    )


# ---------------------------------------------------------------------------------------------
# PyTorch reads the exports


@pytest.mark.torch
def test_torchvision_export_reproduces_features_in_pytorch(imported, tmp_path):
    torch = pytest.importorskip("torch", reason="the live PyTorch check needs torch (bench extra)")
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
    from make_trunk_references import TorchResNet

    for case, depth in (("fssb_resnet50_supervised", 50), ("torchvision_resnet18", 18)):
        workdir = imported[case][0]
        out = str(tmp_path / f"{case}.pth")
        exports.export(workdir, "torchvision", out)
        state = torch.load(out)
        width = state["conv1.weight"].shape[0] / 64
        module = TorchResNet(depth, width, 2, 3).double().eval()
        missing, unexpected = module.load_state_dict(
            {k: v.double() for k, v in state.items()}, strict=False
        )
        assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing)
        rgb = _reference(case)["images"]
        _, task, _, _ = state_lib.restore_variables(workdir)
        x = np.asarray(task.model_inputs(jnp.asarray(rgb)), np.float64).transpose(0, 3, 1, 2)
        with torch.no_grad():
            pooled, taps = module(torch.from_numpy(x))
        ours = features(workdir, rgb)
        for name, value in taps.items():
            ref = value.numpy().transpose(0, 2, 3, 1)
            np.testing.assert_allclose(
                ours[f"tap/{name}"], ref, rtol=RTOL, atol=RTOL * np.abs(ref).max()
            )
