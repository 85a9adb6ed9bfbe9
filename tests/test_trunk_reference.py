"""ssl_jax's trunks against stored PyTorch reference outputs, at every tap, without torch.

tests/fixtures/trunk_<name>.npz hold a small trunk's config, inputs (photos and a random image),
random weights in ssl_jax's variable layout and the outputs of an independent PyTorch
implementation (torchvision's ResNet layout and forward; the AlexNet variants as documented),
computed once in float64 by tests/fixtures/make_trunk_references.py (see its docstring for the
command and for how the weights are drawn so that BN epsilon, running statistics and LRN all
matter). test_models.py compares with torch directly, but only where torch is installed.

Tolerance: float32 here against a float64 reference, `rtol = 1e-4` plus `atol = 1e-4 * max|ref|`
per tap. The largest differences seen are 2e-5 of a tap's largest value (ResNet-50's res5, where
rounding grows through 16 blocks and BN layers with variances near 1e-4), about 1e-6 in the
AlexNets. The bugs this is meant to catch (stride on the wrong conv, missing dilation, LRN or BN
epsilon changes, batch statistics at inference) move some tap of each trunk they touch by 5e-4
of its scale (BN epsilon 1e-4 instead of 1e-5, AlexNet colorization) to well over 1e-2.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax.models import make_trunk

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TRUNKS = (
    "resnet18",
    "resnet50",
    "resnet50_dilated",
    "resnet50_undilated",
    "resnet50_stride_in_1x1",
    "alexnet_jigsaw",
    "alexnet_jigsaw_nolrn",
    "alexnet_colorization",
)
TAPS = {
    "resnet": ("conv1", "res2", "res3", "res4", "res5"),
    "alexnet": ("conv1", "conv2", "conv3", "conv4", "conv5"),
}
RTOL = 1e-4


def _load(name):
    with np.load(os.path.join(FIXTURES, f"trunk_{name}.npz")) as data:
        arrays = {key: data[key] for key in data.files}
    config = json.loads(str(arrays.pop("config")))
    x = arrays.pop("input")
    pooled = arrays.pop("pooled")
    taps = {key[4:]: arrays.pop(key) for key in list(arrays) if key.startswith("tap/")}
    variables = {}
    for path, value in arrays.items():
        *parents, leaf = path.split("/")
        node = variables
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config, x, variables, taps, pooled


def test_every_fixture_is_checked():
    stored = sorted(f[6:-4] for f in os.listdir(FIXTURES) if f.startswith("trunk_"))
    assert stored == sorted(TRUNKS)


@pytest.mark.parametrize("name", TRUNKS)
def test_trunk_matches_torch_reference(name):
    config, x, variables, taps_ref, pooled_ref = _load(name)
    model = make_trunk(ml_collections.ConfigDict(config), jnp.float32)

    # The stored variables have exactly the trunk's tree, shapes and dtypes.
    expected = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct(x.shape, jnp.float32),
    )
    assert jax.tree.structure(expected) == jax.tree.structure(variables)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), expected) == jax.tree.map(
        lambda a: (a.shape, a.dtype), variables
    )

    pooled, taps = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert sorted(taps) == sorted(taps_ref) == sorted(TAPS[config["name"]])
    for tap, ref in [*taps_ref.items(), ("pooled", pooled_ref)]:
        out = np.asarray(pooled if tap == "pooled" else taps[tap])
        assert out.dtype == np.float32 and out.shape == ref.shape, tap
        scale = float(np.abs(ref).max())
        assert scale > 0, tap
        np.testing.assert_allclose(
            out, ref, rtol=RTOL, atol=RTOL * scale, err_msg=f"{name} tap {tap}"
        )
