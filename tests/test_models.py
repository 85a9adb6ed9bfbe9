"""Tests for ssl_jax.models: GroupedBatchNorm, ResNet, AlexNet, make_trunk."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.models import AlexNet, GroupedBatchNorm, ResNet, make_trunk
from ssl_jax.models.alexnet import local_response_norm
from ssl_jax.models.resnet import Block

TINY = 1 / 16  # ResNet width for real forward passes: stem 4 channels, res5 32 or 128.


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _variables(model, x, seed: int):
    """Variables of `model` for input `x`, drawn with numpy instead of `model.init`.

    XLA compiles one random-normal kernel per parameter shape (about a second each on a small
    CPU), so the tests get their structure from `eval_shape(model.init)` and fill it here: He
    fan_out normal kernels, and random BN scale, shift and running statistics (so that inference
    checks test more than an identity BN). `test_resnet_block_init` covers the real initializers.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct(x.shape, x.dtype),
    )

    def fill(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            value = rng.normal(0, np.sqrt(2 / (np.prod(shape[:-2]) * shape[-1])), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            value = rng.normal(0, 0.2, shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- GroupedBatchNorm


@pytest.fixture(scope="module")
def bn_input():
    rng = np.random.default_rng(0)
    # Non-zero mean and non-unit scale per channel, so wrong axes or stats show up.
    x = rng.normal(size=(16, 3, 3, 5)) * np.arange(1, 6) + np.arange(5) * 3.0
    return jnp.asarray(x, jnp.float32)


def _bn_variables(module, x):
    variables = module.init(jax.random.key(0), x, train=False)
    rng = np.random.default_rng(1)
    c = x.shape[-1]
    params = {
        "scale": jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=c), jnp.float32),
    }
    return {"params": params, "batch_stats": variables["batch_stats"]}


def test_bn_whole_batch_matches_flax_batchnorm(bn_input):
    ours = GroupedBatchNorm(group_size=None, momentum=0.8, epsilon=1e-3)
    ref = nn.BatchNorm(momentum=0.8, epsilon=1e-3)
    variables = _bn_variables(ours, bn_input)
    y, upd = ours.apply(variables, bn_input, train=True, mutable=["batch_stats"])
    y_ref, upd_ref = ref.apply(
        variables, bn_input, use_running_average=False, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(upd["batch_stats"][k], upd_ref["batch_stats"][k], rtol=1e-5)
    # Inference with the updated statistics.
    new_vars = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    y_eval = ours.apply(new_vars, bn_input, train=False)
    y_eval_ref = ref.apply(new_vars, bn_input, use_running_average=True)
    np.testing.assert_allclose(y_eval, y_eval_ref, rtol=1e-5, atol=1e-5)
    # Group size equal to the batch is the same as None.
    y_full = GroupedBatchNorm(group_size=16, momentum=0.8, epsilon=1e-3).apply(
        variables, bn_input, train=True, mutable=["batch_stats"]
    )[0]
    np.testing.assert_allclose(y_full, y, rtol=1e-6, atol=1e-6)


def test_bn_groups_match_numpy(bn_input):
    g, momentum, eps = 4, 0.9, 1e-5
    bn = GroupedBatchNorm(group_size=g)
    variables = _bn_variables(bn, bn_input)
    y, upd = bn.apply(variables, bn_input, train=True, mutable=["batch_stats"])

    x = np.asarray(bn_input, np.float64).reshape(4, g, 3, 3, 5)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)  # biased
    scale = np.asarray(variables["params"]["scale"])
    bias = np.asarray(variables["params"]["bias"])
    expected = ((x - mean) / np.sqrt(var + eps) * scale + bias).reshape(bn_input.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        upd["batch_stats"]["mean"], (1 - momentum) * mean.mean(axis=0).ravel(), rtol=1e-5
    )
    np.testing.assert_allclose(
        upd["batch_stats"]["var"], momentum + (1 - momentum) * var.mean(axis=0).ravel(), rtol=1e-5
    )
    # Each group is normalised on its own: group means of the (scale-free) output are zero.
    y_plain = GroupedBatchNorm(group_size=g, use_scale=False, use_bias=False).apply(
        {"batch_stats": variables["batch_stats"]}, bn_input, train=True, mutable=["batch_stats"]
    )[0]
    assert "params" not in GroupedBatchNorm(use_scale=False, use_bias=False).init(
        jax.random.key(0), bn_input, train=True
    )
    group_means = np.asarray(y_plain).reshape(4, g, -1, 5).mean(axis=(1, 2))
    np.testing.assert_allclose(group_means, 0, atol=1e-5)


def test_bn_vector_input_and_dtype():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 7)), jnp.bfloat16)
    bn = GroupedBatchNorm(group_size=3, dtype=jnp.bfloat16)
    variables = bn.init(jax.random.key(0), x, train=True)
    assert variables["params"]["scale"].dtype == jnp.float32
    assert variables["batch_stats"]["mean"].dtype == jnp.float32
    y, upd = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16 and y.shape == (6, 7)
    assert upd["batch_stats"]["var"].dtype == jnp.float32
    group_means = np.asarray(y, np.float32).reshape(2, 3, 7).mean(axis=1)
    np.testing.assert_allclose(group_means, 0, atol=2e-2)


def test_bn_init_and_errors(bn_input):
    bn = GroupedBatchNorm(group_size=5)
    # init never changes the running statistics, and tolerates a batch of any size.
    variables = bn.init(jax.random.key(0), bn_input, train=True)
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0)
    np.testing.assert_array_equal(variables["batch_stats"]["var"], 1)
    with pytest.raises(ValueError, match=r"16.*5.*config\.model\.bn_group_size"):
        bn.apply(variables, bn_input, train=True, mutable=["batch_stats"])
    # Inference does not group, so any batch size works.
    assert bn.apply(variables, bn_input, train=False).shape == bn_input.shape
    with pytest.raises(ValueError, match="config.model.bn_group_size"):
        GroupedBatchNorm(group_size=0).apply(
            variables, bn_input, train=True, mutable=["batch_stats"]
        )


@pytest.mark.parametrize("group_size", [None, 4, 1])
def test_bn_independent_of_sharding(bn_input, group_size):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    bn = GroupedBatchNorm(group_size=group_size)
    variables = _bn_variables(bn, bn_input)
    step = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=["batch_stats"]))
    y, upd = step(variables, bn_input)

    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    # 2 examples per device: groups of 4 span two devices, the whole batch spans all eight.
    x_sharded = jax.device_put(bn_input, NamedSharding(mesh, PartitionSpec("data")))
    replicated = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
    y_sh, upd_sh = step(replicated, x_sharded)
    assert len(y_sh.sharding.device_set) == 8
    np.testing.assert_allclose(y_sh, y, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(upd_sh["batch_stats"][k], upd["batch_stats"][k], rtol=1e-5)


# ----------------------------------------------------------------------------------- ResNet


def _shapes(depth, size, res5_stride=2, width=1.0, train=False):
    model = ResNet(depth=depth, width=width, res5_stride=res5_stride)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    (pooled, taps), variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=train), x
    )
    return model, pooled, taps, variables


def test_resnet_parameter_counts_match_torchvision():
    # torchvision resnet50 / resnet18 parameter counts minus the 1000-way fc.
    _, _, _, variables = _shapes(50, 224)
    assert _count(variables["params"]) == 25_557_032 - (2048 * 1000 + 1000) == 23_508_032
    _, _, _, variables = _shapes(18, 224)
    assert _count(variables["params"]) == 11_689_512 - (512 * 1000 + 1000) == 11_176_512


@pytest.mark.parametrize("res5_stride,res5_size", [(2, 7), (1, 14)])
def test_resnet50_tap_shapes_224(res5_stride, res5_size):
    model, pooled, taps, _ = _shapes(50, 224, res5_stride=res5_stride, train=True)
    assert {k: v.shape for k, v in taps.items()} == {
        "conv1": (2, 112, 112, 64),
        "res2": (2, 56, 56, 256),
        "res3": (2, 28, 28, 512),
        "res4": (2, 14, 14, 1024),
        "res5": (2, res5_size, res5_size, 2048),
    }
    assert pooled.shape == (2, 2048) == (2, model.num_features)
    assert pooled.dtype == jnp.float32
    # PROTOCOLS.md's feature pools give ~9k dims per tap: res5 (6,1) -> 2x2, or (12,2) at 14x14.
    k, s = (6, 1) if res5_stride == 2 else (12, 2)
    assert (res5_size - k) // s + 1 == 2


def test_resnet_width_scales_every_stage():
    model, pooled, taps, _ = _shapes(50, 64, width=0.5)
    assert [t.shape[-1] for t in taps.values()] == [32, 128, 256, 512, 1024]
    assert model.num_features == pooled.shape[-1] == 1024
    model, pooled, taps, _ = _shapes(18, 64, width=2.0)
    assert [t.shape[-1] for t in taps.values()] == [128, 128, 256, 512, 1024]
    assert ResNet(depth=18, width=1e-3).num_features == 1


@pytest.fixture(scope="module")
def tiny_x():
    return jnp.asarray(np.random.default_rng(3).normal(size=(4, 64, 64, 3)), jnp.float32)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_forward_every_depth(depth, tiny_x):
    model = ResNet(depth=depth, width=TINY)
    variables = _variables(model, tiny_x, seed=depth)
    (pooled, taps), upd = model.apply(variables, tiny_x, train=True, mutable=["batch_stats"])
    expansion = 1 if depth < 50 else 4
    assert {k: v.shape for k, v in taps.items()} == {
        "conv1": (4, 32, 32, 4),
        "res2": (4, 16, 16, 4 * expansion),
        "res3": (4, 8, 8, 8 * expansion),
        "res4": (4, 4, 4, 16 * expansion),
        "res5": (4, 2, 2, 32 * expansion),
    }
    assert pooled.shape == (4, model.num_features)
    np.testing.assert_allclose(pooled, np.asarray(taps["res5"]).mean(axis=(1, 2)), rtol=1e-5)
    assert all(float(t.min()) >= 0 for t in taps.values())  # after ReLU
    assert np.isfinite(np.asarray(pooled)).all()
    # Training updates every running statistic; inference uses them and gives other outputs.
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], upd["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
    pooled_eval, _ = model.apply(variables, tiny_x, train=False)
    assert not np.allclose(pooled_eval, pooled)


def test_resnet_res5_stride_1_keeps_res4_resolution(tiny_x):
    model = ResNet(depth=50, width=TINY, res5_stride=1)
    variables = _variables(model, tiny_x, seed=0)
    _, taps = model.apply(variables, tiny_x, train=False)
    assert taps["res4"].shape[1:3] == taps["res5"].shape[1:3] == (4, 4)
    # Same parameters as the stride-2 trunk: only strides and dilations change.
    plain = _variables(ResNet(depth=50, width=TINY), tiny_x, seed=0)
    assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, variables)


def test_resnet_bfloat16(tiny_x):
    model = ResNet(depth=18, width=TINY, bn_group_size=2, dtype=jnp.bfloat16)
    model_f32 = ResNet(depth=18, width=TINY, bn_group_size=2)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), tiny_x)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    variables = _variables(model, tiny_x, seed=1)

    @jax.jit  # one compile is much cheaper than op-by-op dispatch of a fresh dtype
    def run(variables, x):
        train = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return (
            train,
            model.apply(variables, x, train=False)[0],
            model_f32.apply(variables, x, train=False)[0],
        )

    ((pooled, taps), upd), pooled_bf16, pooled_f32 = run(variables, tiny_x)
    assert {t.dtype for t in taps.values()} == {jnp.dtype(jnp.bfloat16)}
    assert pooled.dtype == pooled_bf16.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}
    scale = float(np.abs(pooled_f32).max())
    np.testing.assert_allclose(pooled_bf16, pooled_f32, atol=0.05 * scale)


@pytest.mark.parametrize("zero_init_residual", [False, True])
def test_resnet_block_init(zero_init_residual):
    # A basic block without downsampling has one kernel shape: one random-normal compile.
    block = Block(
        kind="basic",
        planes=32,
        stride=1,
        dilation=1,
        bn_group_size=None,
        zero_init_residual=zero_init_residual,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        dtype=jnp.float32,
    )
    variables = block.init(jax.random.key(0), jnp.ones((1, 4, 4, 32)), train=False)
    params = variables["params"]
    assert sorted(params) == ["bn1", "bn2", "conv1", "conv2"]
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["mean"], 0)
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], 1)
    # He normal, fan_out: std = sqrt(2 / (kh * kw * out)), torchvision's kaiming_normal_.
    for name in ("conv1", "conv2"):
        kernel = np.asarray(params[name]["kernel"])
        assert kernel.shape == (3, 3, 32, 32)
        np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 32)), rtol=0.05)
        assert abs(kernel.mean()) < 0.01
    # zero_init_residual: the block's last BN starts at scale 0 (block = ReLU(shortcut)).
    np.testing.assert_array_equal(params["bn2"]["scale"], 0 if zero_init_residual else 1)
    np.testing.assert_array_equal(params["bn1"]["scale"], 1)
    np.testing.assert_array_equal(params["bn2"]["bias"], 0)


def test_resnet_bad_config():
    with pytest.raises(ValueError, match=r"77.*18, 34, 50, 101, 152.*config\.model\.depth"):
        ResNet(depth=77)
    with pytest.raises(ValueError, match="config.model.res5_stride"):
        ResNet(res5_stride=4)


# ---------------------------------------------------------------------- comparison with torch
# Live comparisons with PyTorch (marked "torch": run with `pytest -m torch` where torch is
# installed, e.g. the bench extra). Without torch the same trunks are checked against stored
# PyTorch outputs (tests/test_trunk_reference.py).


def _torch_modules():
    """Minimal torchvision-layout ResNet and VISSL-layout AlexNet in torch, named like ours."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    def conv(cin, cout, k, stride=1, dilation=1, groups=1, bias=False, pad=None):
        pad = dilation * (k // 2) if pad is None else pad
        return tnn.Conv2d(cin, cout, k, stride, pad, dilation, groups=groups, bias=bias)

    class Block(tnn.Module):
        def __init__(self, kind, cin, planes, stride, dilation):
            super().__init__()
            self.kind = kind
            cout = planes * (4 if kind == "bottleneck" else 1)
            if kind == "basic":
                self.conv1 = conv(cin, planes, 3, stride, dilation)
                self.conv2 = conv(planes, planes, 3, 1, dilation)
            else:
                self.conv1 = conv(cin, planes, 1)
                self.conv2 = conv(planes, planes, 3, stride, dilation)
                self.conv3 = conv(planes, cout, 1)
                self.bn3 = tnn.BatchNorm2d(cout)
            self.bn1, self.bn2 = tnn.BatchNorm2d(planes), tnn.BatchNorm2d(planes)
            self.down = stride != 1 or cin != cout
            if self.down:
                self.downsample_conv = conv(cin, cout, 1, stride)
                self.downsample_bn = tnn.BatchNorm2d(cout)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.kind == "bottleneck":
                y = self.bn3(self.conv3(torch.relu(y)))
            s = self.downsample_bn(self.downsample_conv(x)) if self.down else x
            return torch.relu(y + s)

    class TorchResNet(tnn.Module):
        def __init__(self, kind, blocks, width, res5_stride):
            super().__init__()
            c = max(1, round(64 * width))
            self.conv1, self.bn1 = conv(3, c, 7, 2, pad=3), tnn.BatchNorm2d(c)
            self.names = []
            for stage, n in enumerate(blocks):
                planes = max(1, round(64 * 2**stage * width))
                stride = 1 if stage == 0 else 2
                dilation = 1
                if stage == 3 and res5_stride == 1:
                    stride, dilation = 1, 2
                for i in range(n):
                    name = f"res{stage + 2}_{i}"
                    setattr(self, name, Block(kind, c, planes, stride if i == 0 else 1, dilation))
                    c = planes * (4 if kind == "bottleneck" else 1)
                    self.names.append(name)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = tnn.functional.max_pool2d(x, 3, 2, 1)
            for name in self.names:
                x = getattr(self, name)(x)
            return x.mean(dim=(2, 3)), x

    class TorchAlexNetJigsaw(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = conv(3, c[0], 11, 2, pad=0, bias=True)
            self.conv2 = conv(c[0], c[1], 5, pad=2, groups=2, bias=True)
            self.conv3 = conv(c[1], c[2], 3)
            self.conv4 = conv(c[2], c[3], 3, groups=2)
            self.conv5 = conv(c[3], c[4], 3, groups=2)
            self.bn3, self.bn4, self.bn5 = (tnn.BatchNorm2d(n) for n in c[2:])
            self.lrn = tnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)

        def forward(self, x):
            pool = lambda t: tnn.functional.max_pool2d(t, 3, 2)
            x = self.lrn(pool(torch.relu(self.conv1(x))))
            x = self.lrn(pool(torch.relu(self.conv2(x))))
            x = torch.relu(self.bn3(self.conv3(x)))
            x = torch.relu(self.bn4(self.conv4(x)))
            return pool(torch.relu(self.bn5(self.conv5(x))))

    return torch, TorchResNet, TorchAlexNetJigsaw


def _load_into_torch(torch, module, variables):
    """Copies flax params/batch_stats into a torch module with the same names."""
    with torch.no_grad():
        for collection in ("params", "batch_stats"):
            flat = jax.tree_util.tree_flatten_with_path(variables[collection])[0]
            for path, leaf in flat:
                keys = [p.key for p in path]
                target = module
                for key in keys[:-1]:
                    target = getattr(target, key)
                value = np.asarray(leaf)
                if keys[-1] == "kernel":  # (kh, kw, in/groups, out) -> (out, in/groups, kh, kw)
                    value = value.transpose(3, 2, 0, 1)
                attr = {
                    "kernel": "weight",
                    "scale": "weight",
                    "mean": "running_mean",
                    "var": "running_var",
                }.get(keys[-1], keys[-1])
                getattr(target, attr).copy_(torch.from_numpy(np.array(value, copy=True)))


@pytest.mark.torch
@pytest.mark.parametrize("depth,res5_stride", [(18, 2), (50, 2), (50, 1)])
def test_resnet_matches_torch(depth, res5_stride, tiny_x):
    torch, TorchResNet, _ = _torch_modules()
    kind, blocks = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}[depth]
    model = ResNet(depth=depth, width=TINY, res5_stride=res5_stride)
    variables = _variables(model, tiny_x, seed=depth)
    ref = TorchResNet(kind, blocks, TINY, res5_stride)
    _load_into_torch(torch, ref, variables)
    x_torch = torch.from_numpy(np.asarray(tiny_x).transpose(0, 3, 1, 2).copy())

    pooled, taps = model.apply(variables, tiny_x, train=False)
    ref.eval()
    with torch.no_grad():
        pooled_ref, res5_ref = ref(x_torch)
    scale = float(np.abs(pooled_ref.numpy()).max())
    np.testing.assert_allclose(pooled, pooled_ref.numpy(), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(
        taps["res5"], res5_ref.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4 * scale
    )
    # Training mode: whole-batch statistics, as torch's BatchNorm2d.
    (pooled_train, _), _ = model.apply(variables, tiny_x, train=True, mutable=["batch_stats"])
    ref.train()
    with torch.no_grad():
        pooled_train_ref, _ = ref(x_torch)
    scale = float(np.abs(pooled_train_ref.numpy()).max())
    np.testing.assert_allclose(pooled_train, pooled_train_ref.numpy(), atol=1e-4 * scale)


@pytest.mark.torch
def test_alexnet_jigsaw_matches_torch():
    torch, _, TorchAlexNetJigsaw = _torch_modules()
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 64, 64, 3)), jnp.float32)
    model = AlexNet(variant="jigsaw", width=0.25)
    variables = _variables(model, x, seed=5)
    ref = TorchAlexNetJigsaw([24, 64, 96, 96, 64]).eval()
    _load_into_torch(torch, ref, variables)
    pooled, _ = model.apply(variables, x, train=False)
    with torch.no_grad():
        pool5 = ref(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy()
    expected = pool5.transpose(0, 2, 3, 1).reshape(3, -1)  # our flatten order is (h, w, c)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.torch
def test_local_response_norm_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).normal(size=(2, 3, 3, 11)).astype(np.float32) * 30
    y = local_response_norm(jnp.asarray(x))
    ref = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    )
    np.testing.assert_allclose(y, ref.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- AlexNet


def _alexnet_shapes(variant, size, width=1.0):
    model = AlexNet(variant=variant, width=width)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    (pooled, taps), variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=True), x
    )
    return model, pooled, taps, variables


# PROTOCOLS.md's feature pools (kernel, stride) for a 227 input, and the pooled spatial size.
_ALEXNET_POOLS = {
    "jigsaw": {
        "conv1": (28, 9, 10),
        "conv2": (24, 6, 6),
        "conv3": (14, 3, 5),
        "conv4": (14, 3, 5),
        "conv5": (16, 2, 6),
    },
    "colorization": {
        "conv1": (19, 4, 10),
        "conv2": (12, 3, 6),
        "conv3": (9, 1, 5),
        "conv4": (9, 1, 5),
        "conv5": (8, 1, 6),
    },
}


@pytest.mark.parametrize(
    "variant,sizes,pool5",
    [("jigsaw", (109, 54, 26, 26, 26), 12), ("colorization", (55, 27, 13, 13, 13), 6)],
)
def test_alexnet_tap_shapes_227(variant, sizes, pool5):
    model, pooled, taps, _ = _alexnet_shapes(variant, 227)
    channels = (96, 256, 384, 384, 256)
    assert {k: v.shape for k, v in taps.items()} == {
        f"conv{i + 1}": (2, s, s, c) for i, (s, c) in enumerate(zip(sizes, channels, strict=True))
    }
    assert pooled.shape == (2, pool5 * pool5 * 256) == (2, model.pooled_features(227))
    for name, (k, s, out) in _ALEXNET_POOLS[variant].items():
        assert (taps[name].shape[1] - k) // s + 1 == out


def test_alexnet_jigsaw_tile_and_layers():
    model, pooled, taps, variables = _alexnet_shapes("jigsaw", 64)
    assert pooled.shape == (2, 1024) and model.pooled_features(64) == 1024
    assert taps["conv5"].shape == (2, 6, 6, 256)
    params = variables["params"]
    # VISSL's alexnet_jigsaw: BN on conv3-5 only; conv1/conv2 keep their bias.
    assert sorted(params) == ["bn3", "bn4", "bn5", "conv1", "conv2", "conv3", "conv4", "conv5"]
    assert "bias" in params["conv1"] and "bias" not in params["conv3"]
    assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)  # groups 2
    _, _, _, variables = _alexnet_shapes("colorization", 227)
    assert sorted(variables["batch_stats"]) == [f"bn{i}" for i in range(1, 6)]
    # Jigsaw CFN trunk parameter count (conv weights + biases of conv1/2 + BN scale/shift).
    convs = 11 * 11 * 3 * 96 + 96 + 5 * 5 * 48 * 256 + 256  # conv1, conv2 with bias
    convs += 9 * 256 * 384 + 9 * 192 * 384 + 9 * 192 * 256  # conv3, conv4 and conv5 (groups 2)
    assert _count(params) == convs + 2 * (384 + 384 + 256)


@pytest.mark.parametrize("variant", ["jigsaw", "colorization"])
def test_alexnet_forward_small_width(variant):
    x = jnp.asarray(np.random.default_rng(7).normal(size=(4, 72, 72, 1)), jnp.bfloat16)
    model = AlexNet(variant=variant, width=0.1, bn_group_size=2, dtype=jnp.bfloat16)
    variables = _variables(model, x, seed=8)
    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    (pooled, taps), upd = step(variables, x)
    # Channels rounded to even numbers: 96*0.1 -> 10, 256*0.1 -> 26, 384*0.1 -> 38.
    assert [t.shape[-1] for t in taps.values()] == [10, 26, 38, 38, 26]
    assert {t.dtype for t in taps.values()} == {jnp.dtype(jnp.bfloat16)}
    assert pooled.dtype == jnp.float32
    assert pooled.shape == (4, model.pooled_features(72)) and pooled.shape[1] > 0
    assert np.isfinite(np.asarray(pooled)).all()
    assert all(float(t.min()) >= 0 for t in taps.values())  # after ReLU
    assert {leaf.dtype for leaf in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("variant,smallest", [("jigsaw", 39), ("colorization", 67)])
def test_alexnet_smallest_input(variant, smallest):
    """pool5 is 1 x 1 at the smallest input and empty one pixel below it, which is refused."""
    model = AlexNet(variant=variant, width=0.1)
    assert model.min_input_size() == smallest
    x = jnp.zeros((1, smallest, smallest, 3))
    pooled, _ = model.apply(_variables(model, x, seed=0), x, train=False)
    assert pooled.shape == (1, model.pooled_features(smallest)) == (1, 26)
    assert model.pooled_features(smallest - 1) == 0
    x = jnp.zeros((1, smallest - 1, smallest + 20, 3))
    message = rf"{smallest - 1}x{smallest + 20} input.*{smallest} pixels"
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.PRNGKey(0), x, train=False)


def test_alexnet_bad_variant():
    with pytest.raises(ValueError, match=r"'vgg'.*colorization.*config\.model\.alexnet_variant"):
        AlexNet(variant="vgg")


# ------------------------------------------------------------------------------- make_trunk


def _model_config(**fields):
    config = ml_collections.ConfigDict(fields)
    config.lock()
    return config


def test_make_trunk():
    model = make_trunk(
        _model_config(name="resnet", depth=50, width=2.0, bn_group_size=32), "bfloat16"
    )
    assert isinstance(model, ResNet)
    assert (model.depth, model.width, model.bn_group_size, model.res5_stride) == (50, 2.0, 32, 2)
    assert model.dtype == jnp.bfloat16 and model.num_features == 4096
    model = make_trunk(
        _model_config(name="resnet", depth=18, width=1.0, bn_group_size=None, res5_stride=1),
        jnp.float32,
    )
    assert model.res5_stride == 1 and model.num_features == 512
    model = make_trunk(
        _model_config(name="alexnet", depth=0, width=1.0, bn_group_size=8), jnp.float32
    )
    assert isinstance(model, AlexNet) and model.variant == "jigsaw"
    model = make_trunk(
        _model_config(
            name="alexnet", depth=0, width=1.0, bn_group_size=8, alexnet_variant="colorization"
        ),
        jnp.float32,
    )
    assert model.variant == "colorization" and model.bn_group_size == 8
    with pytest.raises(ValueError, match=r"'vit'.*alexnet.*resnet.*config\.model\.name"):
        make_trunk(_model_config(name="vit", depth=50, width=1.0, bn_group_size=None), "float32")
    with pytest.raises(ValueError, match="config.model.depth"):
        make_trunk(_model_config(name="resnet", depth=51, width=1.0, bn_group_size=None), "float32")
