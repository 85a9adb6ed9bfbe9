"""Frozen-feature extraction: the pooling table, input conventions, storage and resumption."""

import functools
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config_lib, paths, tasks
from ssl_jax.evals import features as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(spec):
    return config_lib.load_config(os.path.join(ROOT, spec))


def _task(spec):
    return tasks.create(_config(spec))


def _avg_pool_reference(x, kernel, stride, pad):
    """numpy AvgPool2d(count_include_pad=True) on NHWC, flattened (C, H, W) per image."""
    b, h, w, c = x.shape
    padded = np.zeros((b, h + 2 * pad, w + 2 * pad, c), np.float64)
    padded[:, pad : pad + h, pad : pad + w] = x
    oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    out = np.zeros((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = padded[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
            out[:, :, i, j] = window.sum((1, 2)) / kernel**2
    return out.reshape(b, -1)


@pytest.mark.parametrize(
    "shape,spec",
    [((2, 112, 112, 3), (10, 10, 4)), ((2, 14, 14, 5), (8, 3, 0)), ((1, 55, 55, 4), (19, 4, 0))],
)
def test_pool_tap_matches_reference(shape, spec):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = np.asarray(F.pool_tap(jnp.asarray(x), spec))
    np.testing.assert_allclose(got, _avg_pool_reference(x, *spec), rtol=1e-5, atol=1e-6)


def test_pool_tap_global_and_too_small():
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(F.pool_tap(x, "global")), x.mean((1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        F.pool_tap(jnp.zeros((1, 5, 5, 2)), (8, 3, 0))


def test_adaptive_pool_matches_reference():
    x = np.random.default_rng(2).normal(size=(2, 10, 10, 3)).astype(np.float32)
    got = np.asarray(F.adaptive_pool(jnp.asarray(x), 3))
    ref = np.zeros((2, 3, 3, 3))
    for i in range(3):
        r0, r1 = (i * 10) // 3, -(-((i + 1) * 10) // 3)
        for j in range(3):
            c0, c1 = (j * 10) // 3, -(-((j + 1) * 10) // 3)
            ref[:, :, i, j] = x[:, r0:r1, c0:c1].mean((1, 2))
    np.testing.assert_allclose(got, ref.reshape(2, -1), rtol=1e-5)


# PROTOCOLS.md's table: C x H x W per tap at full width.
EXPECTED = {
    "configs/jigsaw_r50.py": {
        "conv1": 64 * 144, "res2": 256 * 36, "res3": 512 * 16, "res4": 1024 * 9,
        "res5": 2048 * 4, "pool5": 2048,
    },
    "configs/colorize_r50.py": {
        "conv1": 64 * 144, "res2": 256 * 36, "res3": 512 * 16, "res4": 1024 * 9,
        "res5": 2048 * 4, "pool5": 2048,
    },
    "configs/jigsaw_alexnet.py": {
        "conv1": 96 * 100, "conv2": 256 * 36, "conv3": 384 * 25, "conv4": 384 * 25,
        "conv5": 256 * 36,
    },
    "configs/colorize_alexnet.py": {
        "conv1": 96 * 100, "conv2": 256 * 36, "conv3": 384 * 25, "conv4": 384 * 25,
        "conv5": 256 * 36,
    },
}  # fmt: skip


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_feature_dims_follow_the_table(spec):
    task = _task(spec)
    assert F.feature_dims(task, None, F.default_size(task.config.model)) == EXPECTED[spec]


def test_model_inputs_conventions():
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    jig = _task("configs/jigsaw_r50.py")
    x = np.asarray(jig.model_inputs(jnp.asarray(images)))
    mean, std = np.asarray(jig.config.input.mean), np.asarray(jig.config.input.std)
    np.testing.assert_allclose(x, (images / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    jig.config.input.channel_order = "bgr"  # a trunk whose conv1 reads BGR (Caffe2 layout)
    bgr = np.asarray(jig.model_inputs(jnp.asarray(images)))
    np.testing.assert_allclose(
        bgr, ((images / 255.0 - mean) / std)[..., ::-1], rtol=1e-5, atol=1e-5
    )
    col = _task("configs/colorize_r50.py")
    lightness = np.asarray(col.model_inputs(jnp.asarray(images)))
    assert lightness.shape == (2, 8, 8, 1)
    # OpenCV's 8-bit L (the paper's pipeline), as L * 100 / 255 - 50.
    codes = np.stack(
        [cv2.cvtColor(np.ascontiguousarray(im[..., ::-1]), cv2.COLOR_BGR2LAB) for im in images]
    )
    np.testing.assert_allclose(lightness[..., 0], codes[..., 0] * 100.0 / 255.0 - 50.0, atol=1e-4)


def test_trunk_variables_errors():
    with pytest.raises(ValueError, match="trunk"):
        F.trunk_variables({"params": {"head": {}}})


# ---------------------------------------------------------------------------------------------
# Extraction, storage, resumption


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A narrow ResNet-18 Jigsaw config, its variables, and a labelled folder of 21 images."""
    from PIL import Image

    from ssl_jax.data import labelled

    pretext = _task("configs/jigsaw_r50.py:runlocal,depth=18,width=0.125")
    features = {"layers": ("conv1", "res3", "pool5"), "pooling": "adaptive"}
    variables = pretext.model.init(jax.random.PRNGKey(0), pretext.example_inputs, train=False)
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(4)
    for c in range(3):
        os.makedirs(root / f"class{c}")
        for i in range(7):
            size = (40 + 3 * i, 30 + 5 * c)
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.jpg")
    dataset = labelled.make_labelled({"source": "folder", "split": "train", "path": str(root)})
    return pretext, features, F.trunk_variables(variables), dataset


def test_extract_matches_direct_forward_and_resumes(tiny, tmp_path, monkeypatch):
    task, features, variables, dataset = tiny
    out = str(tmp_path / "features")
    extract = functools.partial(F.extract, task, features, variables, dataset, out, size=64)
    meta = extract(batch_size=8, description="w")
    assert meta["num_examples"] == 21 and meta.get("skipped") == 0
    stored = F.load(out)
    np.testing.assert_array_equal(stored.labels, dataset.labels)
    assert stored.ids == [str(i) for i in dataset.ids]
    # The same features as one direct forward pass over the resized images.
    images = np.stack([e["image"] for e in dataset.images(size=64).as_numpy_iterator()])
    direct = F.make_feature_fn(task, features, 64)(variables, jnp.asarray(images))
    for name, value in direct.items():
        np.testing.assert_allclose(stored.layer(name), np.asarray(value), rtol=2e-4, atol=1e-5)
    full = {name: stored.layer(name) for name in direct}
    # A finished extraction of the same weights and data is reused, not redone.
    first = os.path.join(out, "conv1", f"{0:09d}.npy")
    written = os.path.getmtime(first)
    assert extract(batch_size=8, description="w") == paths.read_json(os.path.join(out, "meta.json"))
    assert os.path.getmtime(first) == written

    # Parts of one batch (8 rows): an interruption after the second part loses the third, and
    # progress says 16 rows; the rerun computes only rows 16-20 again.
    monkeypatch.setattr(F, "PART_BATCHES", 1)
    meta = extract(batch_size=8, description="parts")
    assert meta["part_rows"] == 8
    for name in (*full, "ok"):
        os.remove(os.path.join(out, name, f"{16:09d}.npy"))
    paths.write_json(os.path.join(out, "progress.json"), {"rows": 16})
    with pytest.raises(FileNotFoundError, match="no complete"):
        F.load(out)
    before = {name: os.path.getmtime(os.path.join(out, name, f"{8:09d}.npy")) for name in full}
    extract(batch_size=8, description="parts")
    resumed = F.load(out)
    for name, value in full.items():
        np.testing.assert_allclose(resumed.layer(name), value, rtol=1e-5, atol=1e-6)
        assert os.path.getmtime(os.path.join(out, name, f"{8:09d}.npy")) == before[name]


def test_extract_starts_afresh_for_the_same_set_in_another_order(tiny, tmp_path):
    """meta.json names the set, not its order: the same images in another order (VOC07 from
    TFDS, then from a VOCdevkit) are extracted again, not reused or resumed row for row."""
    import dataclasses

    from ssl_jax.data import labelled

    task, features, variables, dataset = tiny
    out = str(tmp_path / "features")
    F.extract(task, features, variables, dataset, out, batch_size=8, size=64)
    first = F.load(out).layer("pool5")
    backwards = np.arange(dataset.num_examples)[::-1]
    source = dataset.source
    reordered = labelled.LabelledSet(
        name=dataset.name,
        source=dataclasses.replace(
            source, paths=source.paths[backwards], labels=source.labels[backwards],
            ids=None if source.ids is None else source.ids[backwards],
        ),
        labels=dataset.labels[backwards],
        class_names=dataset.class_names,
        ids=dataset.ids[backwards],
    )  # fmt: skip
    F.extract(task, features, variables, reordered, out, batch_size=8, size=64)
    again = F.load(out)
    assert again.ids == [str(i) for i in reordered.ids]
    np.testing.assert_array_equal(again.labels, reordered.labels)
    np.testing.assert_allclose(again.layer("pool5"), first[backwards], rtol=1e-5, atol=1e-6)


def test_extract_on_8_devices_matches_1(tiny, tmp_path):
    task, features, variables, dataset = tiny
    assert jax.device_count() == 8
    out = str(tmp_path / "a")
    eight = F.extract(task, features, variables, dataset, out, batch_size=8, size=64)
    assert eight["num_examples"] == 21
    with jax.default_device(jax.devices()[0]):
        fn = F.make_feature_fn(task, features, 64)
        images = np.stack([e["image"] for e in dataset.images(size=64).as_numpy_iterator()])
        one = jax.device_get(fn(variables, jnp.asarray(images)))
    stored = F.load(out)
    for name, value in one.items():
        np.testing.assert_allclose(stored.layer(name), value, rtol=2e-4, atol=1e-5)
