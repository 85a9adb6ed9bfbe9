"""Colorization kernels against independent references: skimage, OpenCV and brute-force numpy.

Lab conversion is checked on real photos bundled with scikit-image and scikit-learn and on a dense
sample of the sRGB cube; the bin, soft-encoding, rebalancing and loss kernels against float64
numpy written from the definitions in PROTOCOLS.md ("Colorization").
"""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from ssl_jax.colorization import (
    NUM_BINS,
    ab_bins,
    colorization_loss,
    lab_to_rgb,
    nearest_bin,
    quantize_8bit,
    rebalance_weights,
    rgb_to_lab,
    smooth_priors,
    soft_encode,
    soft_encode_dense,
)

cv2 = pytest.importorskip("cv2")
skimage_color = pytest.importorskip("skimage.color")
skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


# ----------------------------------------------------------------------------------------------
# Fixtures and references


@pytest.fixture(scope="module")
def photos():
    """Real RGB uint8 photos that ship inside the installed packages (no download)."""
    found = {}
    for name in SKIMAGE_PHOTOS:
        try:
            found[name] = np.asarray(getattr(skimage_data, name)(), np.uint8)
        except Exception:  # an image missing from this skimage version is not a failure
            continue
    try:
        sample = sklearn_datasets.load_sample_images()
        for path, image in zip(sample.filenames, sample.images, strict=True):
            found[os.path.splitext(os.path.basename(path))[0]] = np.asarray(image, np.uint8)
    except Exception:
        pass
    found = {k: v for k, v in found.items() if v.ndim == 3 and v.shape[-1] == 3}
    if len(found) < 2:
        pytest.skip("fewer than two bundled photos available")
    return found


def _scale_8bit(lab):
    """Lab -> OpenCV's 8-bit Lab units: L * 255 / 100, a + 128, b + 128 (not rounded)."""
    lab = np.asarray(lab, np.float64)
    return np.stack([lab[..., 0] * 255.0 / 100.0, lab[..., 1] + 128.0, lab[..., 2] + 128.0], -1)


def _conversions(rgb):
    """Ours, skimage's float64 and OpenCV's 8-bit Lab of an (N, 3) uint8 array."""
    return {
        "ours": np.asarray(rgb_to_lab(rgb), np.float64),
        "skimage": skimage_color.rgb2lab(rgb[None])[0],
        "opencv": cv2.cvtColor(rgb[None], cv2.COLOR_RGB2Lab)[0].astype(np.float64),
    }


@pytest.fixture(scope="module")
def photo_labs(photos):
    # One call over all pixels, split afterwards: one compilation instead of one per photo.
    names = list(photos)
    pixels = np.concatenate([photos[n].reshape(-1, 3) for n in names])
    splits = np.cumsum([photos[n].shape[0] * photos[n].shape[1] for n in names])[:-1]
    labs = {key: np.split(value, splits) for key, value in _conversions(pixels).items()}
    return {n: {key: labs[key][i] for key in labs} for i, n in enumerate(names)}


@pytest.fixture(scope="module")
def cube():
    """Every 4th level per channel plus 255: 65^3 = 274,625 colours, (N, 3) uint8."""
    levels = np.concatenate([np.arange(0, 256, 4), [255]]).astype(np.uint8)
    return np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)


@pytest.fixture(scope="module")
def cube_labs(cube):
    return _conversions(cube)


@pytest.fixture(scope="module")
def bins64():
    return ab_bins().astype(np.float64)


# ----------------------------------------------------------------------------------------------
# rgb_to_lab against skimage


def test_rgb_to_lab_matches_skimage_on_photos(photo_labs):
    for name, labs in photo_labs.items():
        err = np.abs(labs["ours"] - labs["skimage"]).max(axis=0)
        assert (err < 1e-3).all(), (name, err)


def test_rgb_to_lab_matches_skimage_on_cube(cube, cube_labs):
    err = np.abs(cube_labs["ours"] - cube_labs["skimage"]).max(axis=0)
    assert (err < 1e-3).all(), err
    # The float [0, 1] path, float32 and float64 inputs.
    for dtype in (np.float32, np.float64):
        ours = np.asarray(rgb_to_lab(cube.astype(dtype) / dtype(255)), np.float64)
        err = np.abs(ours - cube_labs["skimage"]).max(axis=0)
        assert (err < 1e-3).all(), (dtype, err)


def test_rgb_to_lab_known_values():
    rgb = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    lab = np.asarray(rgb_to_lab(rgb))
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-5)
    # White is a = b = 0 only to 5e-3: the matrix rows sum to (0.950456, 1, 1.088754), not the
    # D65 white (0.95047, 1, 1.08883). skimage and OpenCV share both constants.
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=5e-3)
    np.testing.assert_allclose(lab, skimage_color.rgb2lab(rgb[None])[0], atol=1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
def test_rgb_to_lab_jit_shapes_dtypes(dtype):
    rng = np.random.default_rng(0)
    jitted = jax.jit(rgb_to_lab)
    for shape in [(3,), (7, 3), (2, 5, 3), (2, 3, 4, 3), (1, 2, 2, 2, 3)]:
        rgb8 = rng.integers(0, 256, shape, dtype=np.uint8)
        rgb = rgb8.astype(dtype)
        if np.issubdtype(dtype, np.floating):
            rgb = rgb / dtype(255)
        out = jitted(rgb)
        assert out.shape == shape and out.dtype == jnp.float32
        ref = skimage_color.rgb2lab(rgb8.reshape(-1, 3)[None])[0].reshape(shape)
        np.testing.assert_allclose(np.asarray(out), ref, atol=1e-3)
    np.testing.assert_allclose(np.asarray(rgb_to_lab(rgb)), np.asarray(out), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# rgb_to_lab (the float path) against OpenCV's 8-bit conversion
#
# OpenCV's 8-bit RGB2Lab works from fixed-point lookup tables and deviates from the exact CIE
# formulas by up to about 2.5 units (very dark saturated colours), so the float formulas cannot
# agree with it exactly (rgb_to_lab_8bit reproduces the tables instead: tests/test_lab_opencv.py).
# What must hold: ours is never further from OpenCV than the exact float64 (skimage) value is.


def _opencv_deviations(labs):
    ours = np.abs(_scale_8bit(labs["ours"]) - labs["opencv"])
    exact = np.abs(_scale_8bit(labs["skimage"]) - labs["opencv"])
    return ours, exact


def _check_against_opencv(labs, min_within_1):
    ours, exact = _opencv_deviations(labs)
    # Per pixel and channel, ours is as close to OpenCV as the exact value, to 1e-3 units.
    assert (ours <= exact + 1e-3).all()
    assert ours.max() < 3.0
    within = ours.max(axis=-1) <= 1.0
    assert within.mean() >= min_within_1, within.mean()
    # Wherever we are more than 1 unit from OpenCV, so is the exact value: OpenCV's rounding.
    far = ~within
    assert (exact.max(axis=-1)[far] > 1.0 - 0.05).all()
    return within.mean()


def test_rgb_to_lab_vs_opencv_on_photos(photo_labs):
    fractions = [_check_against_opencv(labs, 0.93) for labs in photo_labs.values()]
    assert np.mean(fractions) >= 0.95


def test_rgb_to_lab_vs_opencv_on_cube(cube_labs):
    _check_against_opencv(cube_labs, 0.995)


# ----------------------------------------------------------------------------------------------
# quantize_8bit


def test_quantize_8bit_is_round_and_clip():
    rng = np.random.default_rng(0)
    n = 20000
    lab = np.stack(
        [rng.uniform(-10, 110, n), rng.uniform(-140, 140, n), rng.uniform(-140, 140, n)], -1
    ).astype(np.float32)
    got = np.asarray(quantize_8bit(jnp.asarray(lab)))
    assert got.shape == lab.shape and got.dtype == np.float32
    f32 = np.float32
    lightness = np.round(np.clip(lab[:, 0] * f32(255.0 / 100.0), 0, 255)) * f32(100.0 / 255.0)
    ab = np.clip(np.round(lab[:, 1:] + f32(128)), 0, 255) - f32(128)
    np.testing.assert_allclose(got[:, 0], lightness, atol=1e-5)
    np.testing.assert_array_equal(got[:, 1:], ab)
    # Every output is a value OpenCV's uint8 Lab can hold.
    scaled = _scale_8bit(got)
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-3)
    assert scaled.min() >= -1e-3 and scaled.max() <= 255 + 1e-3


def _quantize_exact(lab64):
    return np.clip(np.round(_scale_8bit(lab64)), 0, 255)


def test_quantize_8bit_vs_exact_and_opencv_on_photos(photo_labs):
    for name, labs in photo_labs.items():
        ours = np.round(_scale_8bit(quantize_8bit(jnp.asarray(labs["ours"], jnp.float32))))
        exact_unrounded = _scale_8bit(labs["skimage"])
        exact = _quantize_exact(labs["skimage"])
        # Against the exact formula: identical but for values within float32 error of a .5.
        same = (ours == exact).all(-1)
        assert same.mean() >= 0.9999, (name, same.mean())
        frac = np.abs(exact_unrounded - np.floor(exact_unrounded) - 0.5)
        assert (frac[~same].min(axis=-1) < 1e-3).all()
        # Against OpenCV's uint8 output: exact agreement is limited by OpenCV's own tables, by
        # the same amount for the exact value as for ours.
        cv = labs["opencv"]
        agree = (ours == cv).all(-1).mean()
        agree_exact = (exact == cv).all(-1).mean()
        assert abs(agree - agree_exact) <= 1e-4, (name, agree, agree_exact)
        assert agree >= 0.5, (name, agree)
        assert (np.abs(ours - cv).max(-1) <= 1).mean() >= 0.985, name
        assert np.abs(ours - cv).max() <= 3, name


# ----------------------------------------------------------------------------------------------
# lab_to_rgb


def test_lab_to_rgb_round_trip_on_cube(cube):
    back = lab_to_rgb(rgb_to_lab(cube))
    assert back.dtype == jnp.float32 and back.shape == cube.shape
    back = np.asarray(back, np.float64)
    assert np.abs(back * 255.0 - cube).max() < 0.01
    np.testing.assert_array_equal(np.round(back * 255.0).astype(np.uint8), cube)


def test_lab_to_rgb_matches_skimage_in_gamut(cube_labs):
    ours = np.asarray(lab_to_rgb(cube_labs["skimage"]))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(
        ours, skimage_color.lab2rgb(cube_labs["skimage"][None])[0], atol=1e-4
    )


def test_lab_to_rgb_out_of_gamut_is_clipped():
    rng = np.random.default_rng(0)
    n = 20000
    lab = np.stack(
        [rng.uniform(0, 100, n), rng.uniform(-128, 127, n), rng.uniform(-128, 127, n)], -1
    )
    ours = np.asarray(lab_to_rgb(lab))
    assert ours.dtype == np.float32 and ours.shape == lab.shape
    assert np.isfinite(ours).all() and ours.min() >= 0.0 and ours.max() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about the negative-Z colours
        ref = skimage_color.lab2rgb(lab[None])[0]
    # skimage clamps a negative Z before the matrix, we clip only the final RGB: compare where
    # Z >= 0, which includes many out-of-gamut colours.
    z_ok = (lab[:, 0] + 16) / 116 - lab[:, 2] / 200 >= 0
    out_of_gamut = (ref[z_ok] == 0) | (ref[z_ok] == 1)
    assert out_of_gamut.any(-1).mean() > 0.5
    np.testing.assert_allclose(ours[z_ok], ref[z_ok], atol=1e-4)


def test_lab_to_rgb_jit_and_shapes():
    lab = np.array([[50.0, 10.0, -20.0], [70.0, -30.0, 40.0]], np.float32)
    batched = np.broadcast_to(lab, (2, 3, 2, 3))
    out = jax.jit(lab_to_rgb)(batched)
    assert out.shape == (2, 3, 2, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out[1, 2]), np.asarray(lab_to_rgb(lab)), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# ab_bins


def test_ab_bins_equal_zhang_pts_in_hull(reference_dir):
    expected = np.load(os.path.join(reference_dir, "pts_in_hull.npy"))
    bins = ab_bins()
    assert bins.shape == (NUM_BINS, 2) == (313, 2) and bins.dtype == np.float32
    np.testing.assert_array_equal(bins, expected.astype(np.float32))
    np.testing.assert_array_equal(bins.astype(np.float64), expected)  # exact, same order
    assert not bins.flags.writeable
    with pytest.raises(ValueError):
        bins[0, 0] = 1.0


def test_ab_bins_grid_order():
    bins = ab_bins()
    # a-major then b, on the step-10 grid of [-110, 110]^2.
    assert (np.abs(bins) <= 110).all() and (bins % 10 == 0).all()
    keys = bins[:, 0] * 1000 + bins[:, 1]
    assert (np.diff(keys) > 0).all()


# ----------------------------------------------------------------------------------------------
# soft_encode, soft_encode_dense, nearest_bin


def _grid_points():
    """Centres, edge midpoints and cell corners: every multiple of 5 in [-120, 120]^2."""
    g = np.arange(-120.0, 121.0, 5.0)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture(scope="module")
def ab_sets(photo_labs):
    rng = np.random.default_rng(0)
    photo_ab = []
    for labs in photo_labs.values():
        ab = labs["ours"][:, 1:]
        photo_ab.append(ab[rng.choice(len(ab), 2000, replace=False)])
    sets = {
        "uniform": rng.uniform(-128, 127, (10000, 2)),
        "centres": ab_bins().astype(np.float64),
        "grid5": _grid_points(),
        "photos": np.concatenate(photo_ab),
    }
    return {k: v.astype(np.float32) for k, v in sets.items()}


@pytest.fixture(scope="module")
def references(ab_sets, bins64):
    """Per input set: float64 squared distances to all bins, the stable nearest-first order and
    the distances in that order."""
    out = {}
    for name, ab in ab_sets.items():
        d2 = np.square(ab.astype(np.float64)[:, None, :] - bins64[None]).sum(-1)
        order = np.argsort(d2, axis=1, kind="stable")
        out[name] = (d2, order, np.sqrt(np.take_along_axis(d2, order, axis=1)))
    return out


@pytest.mark.parametrize("k", [1, 2, 10, 40, 313])
@pytest.mark.parametrize("which", ["uniform", "centres", "grid5", "photos"])
def test_soft_encode_matches_brute_force(ab_sets, references, which, k):
    # A full ordering (k = 313) is checked on fewer rows, for time.
    rows = slice(0, 3000 if k == NUM_BINS else None)
    ab = ab_sets[which][rows]
    d2, order, ref_sorted = (ref[rows] for ref in references[which])
    indices, weights = soft_encode(jnp.asarray(ab), k=k, sigma=5.0)
    assert indices.dtype == jnp.int32 and weights.dtype == jnp.float32
    assert indices.shape == weights.shape == (len(ab), k)
    indices = np.asarray(indices)

    chosen_d2 = np.take_along_axis(d2, indices, axis=1)
    chosen = np.sqrt(chosen_d2)
    assert (np.diff(np.sort(indices, axis=1), axis=1) > 0).all()  # k distinct bins
    assert (np.diff(chosen, axis=1) >= -1e-3).all()  # nearest first
    # The chosen distances are the k smallest (this is what a tie allows).
    np.testing.assert_allclose(np.sort(chosen, axis=1), ref_sorted[:, :k], atol=1e-3)
    # Where the k-th neighbour is unambiguous, the set is the reference's.
    clear = (
        np.ones(len(ab), bool) if k == NUM_BINS else ref_sorted[:, k] - ref_sorted[:, k - 1] > 1e-3
    )
    np.testing.assert_array_equal(np.sort(indices[clear], 1), np.sort(order[clear, :k], 1))
    if which in ("centres", "grid5"):
        # Exact inputs have exact float32 distances: ties must go to the lower index.
        np.testing.assert_array_equal(indices, order[:, :k])

    nearest_d2 = chosen_d2.min(1, keepdims=True)
    # Every real colour lies within 15 units of a bin. Far outside the gamut the float32 squared
    # distances (~1e4) carry an absolute rounding error of ~1e-3, i.e. one float32 ulp of d^2 in
    # the exponent; the tolerance grows with it.
    near = nearest_d2[:, 0] <= 15.0**2
    for sigma in (5.0, 2.5):
        sigma_indices, weights = soft_encode(jnp.asarray(ab), k=k, sigma=sigma)
        np.testing.assert_array_equal(np.asarray(sigma_indices), indices)
        weights = np.asarray(weights)
        ref_w = np.exp(-(chosen_d2 - nearest_d2) / (2.0 * sigma**2))
        ref_w /= ref_w.sum(1, keepdims=True)
        err = np.abs(weights - ref_w).max(1)
        assert err[near].max(initial=0) <= 1e-5, sigma
        far_tol = 1e-5 + 2.0**-23 * nearest_d2[~near, 0] / (2.0 * sigma**2)
        assert (err[~near] <= far_tol).all(), sigma
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)


def test_soft_encode_weights_known_values():
    # ab exactly on bin (0, 0): its 4 grid neighbours are at distance 10, the diagonals at 10*sqrt2.
    indices, weights = soft_encode(jnp.zeros((2,)), k=9, sigma=5.0)
    bins = ab_bins()[np.asarray(indices)]
    np.testing.assert_array_equal(bins[0], [0, 0])
    raw = np.array([1.0] + [np.exp(-2.0)] * 4 + [np.exp(-4.0)] * 4)
    np.testing.assert_allclose(np.asarray(weights), raw / raw.sum(), rtol=1e-6)


def test_soft_encode_shapes():
    rng = np.random.default_rng(1)
    ab = rng.uniform(-100, 100, (2, 3, 4, 2)).astype(np.float32)
    for k in (1, 10):
        indices, weights = soft_encode(ab, k=k)
        assert indices.shape == weights.shape == (2, 3, 4, k)
        flat_i, flat_w = soft_encode(ab.reshape(-1, 2), k=k)
        np.testing.assert_array_equal(np.asarray(indices).reshape(-1, k), np.asarray(flat_i))
        np.testing.assert_allclose(np.asarray(weights).reshape(-1, k), np.asarray(flat_w))


@pytest.mark.parametrize("k", [10, 200])
def test_soft_encode_cpu_chunks_match_one_call(ab_sets, k):
    # Enough rows for the chunked CPU top-k, and a count that does not divide into the chunks;
    # every block of the reference call is below the chunking threshold.
    from ssl_jax.colorization import encode

    rows = encode.CPU_TOP_K_CHUNKS * encode.CPU_TOP_K_MIN_ROWS + 3
    ab = ab_sets["uniform"][:rows]
    indices, weights = soft_encode(jnp.asarray(ab), k=k)
    block = encode.CPU_TOP_K_MIN_ROWS
    parts = [soft_encode(jnp.asarray(ab[i : i + block]), k=k) for i in range(0, rows, block)]
    np.testing.assert_array_equal(np.asarray(indices), np.concatenate([p[0] for p in parts]))
    # Weights to float32 rounding of the squared distances (fused differently at another size).
    np.testing.assert_allclose(
        np.asarray(weights), np.concatenate([p[1] for p in parts]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("k", [0, -1, 314])
def test_soft_encode_rejects_bad_k(k):
    with pytest.raises(ValueError, match=rf"k={k}\b"):
        soft_encode(jnp.zeros((4, 2)), k=k)


@pytest.mark.parametrize("k", [1, 10, 313])
def test_soft_encode_dense_is_scattered_sparse(ab_sets, k):
    ab = ab_sets["photos"][:500].reshape(5, 100, 2)
    dense = np.asarray(soft_encode_dense(ab, k=k, sigma=5.0))
    assert dense.shape == (5, 100, NUM_BINS) and dense.dtype == np.float32
    indices, weights = soft_encode(ab, k=k, sigma=5.0)
    expected = np.zeros((5, 100, NUM_BINS), np.float32)
    np.put_along_axis(expected, np.asarray(indices), np.asarray(weights), axis=-1)
    np.testing.assert_allclose(dense, expected, atol=1e-7)
    np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-6)
    assert ((dense > 0).sum(-1) <= k).all()


def test_nearest_bin(ab_sets, references):
    for which, ab in ab_sets.items():
        d2, order, dist = references[which]
        got = nearest_bin(jnp.asarray(ab))
        assert got.dtype == jnp.int32 and got.shape == (len(ab),)
        got = np.asarray(got)
        clear = dist[:, 1] - dist[:, 0] > 1e-3
        np.testing.assert_array_equal(got[clear], np.argmin(d2, axis=1)[clear])
        np.testing.assert_allclose(np.sqrt(d2[np.arange(len(ab)), got]), dist[:, 0], atol=1e-3)
        if which in ("centres", "grid5"):
            np.testing.assert_array_equal(got, order[:, 0])
        for k in (1, 10):
            indices = soft_encode(jnp.asarray(ab), k=k, sigma=5.0)[0]
            np.testing.assert_array_equal(got, np.asarray(indices)[:, 0])
    got = nearest_bin(jnp.asarray(ab_sets["uniform"][:24].reshape(2, 3, 4, 2)))
    assert got.shape == (2, 3, 4)


# ----------------------------------------------------------------------------------------------
# rebalance_weights


def _rebalance_reference(priors, gamma, alpha):
    p = np.asarray(priors, np.float64)
    p = p / p.sum()
    w = ((1.0 - gamma) * p + gamma / 313.0) ** (-alpha)
    return w / np.sum(p * w)


@pytest.fixture(scope="module")
def zhang_priors(reference_dir):
    return np.load(os.path.join(reference_dir, "prior_probs.npy"))


@pytest.mark.parametrize("gamma,alpha", [(0.5, 1.0), (0.0, 1.0), (0.25, 0.5), (0.9, 2.0)])
def test_rebalance_weights_zhang_priors(zhang_priors, gamma, alpha):
    w = rebalance_weights(zhang_priors, gamma, alpha)
    assert w.shape == (313,) and w.dtype == np.float32
    np.testing.assert_allclose(w, _rebalance_reference(zhang_priors, gamma, alpha), rtol=1e-6)
    np.testing.assert_allclose(np.sum(zhang_priors / zhang_priors.sum() * w), 1.0, rtol=1e-6)
    # Rarer bins weigh more.
    by_prior = w[np.argsort(zhang_priors, kind="stable")]
    assert (np.diff(by_prior.astype(np.float64)) <= 1e-6 * by_prior[:-1]).all()
    assert w[np.argmin(zhang_priors)] > w[np.argmax(zhang_priors)]


def test_rebalance_weights_random_priors():
    rng = np.random.default_rng(0)
    for trial in range(5):
        counts = rng.gamma(0.3, 1.0, 313) * 1000.0  # unnormalised, heavy-tailed
        if trial == 0:
            counts[:50] = 0.0  # empty bins are allowed
        w = rebalance_weights(counts)
        np.testing.assert_allclose(w, _rebalance_reference(counts, 0.5, 1.0), rtol=1e-6)
        assert w[np.argmin(counts)] >= w.max() * (1 - 1e-6)  # the rarest bin weighs most
        assert w[np.argmax(counts)] == w.min()


def test_rebalance_weights_gamma_one_is_uniform(zhang_priors):
    np.testing.assert_allclose(rebalance_weights(zhang_priors, gamma=1.0), 1.0, rtol=1e-6)


def _zhang_prior_factor(prior_probs, gamma, alpha):
    """Zhang et al.'s PriorFactor (resources/caffe_traininglayers.py), step by step in float64:
    uniform over the bins that have a prior, mixed in with weight gamma, raised to -alpha, and
    divided by the prior-weighted mean so that a pixel's expected weight is 1."""
    prior_probs = np.asarray(prior_probs, np.float64)
    uniform = (prior_probs != 0).astype(np.float64)
    uniform = uniform / uniform.sum()
    mix = (1.0 - gamma) * prior_probs + gamma * uniform
    factor = mix**-alpha
    return factor / np.sum(prior_probs * factor)


@pytest.mark.parametrize("gamma,alpha", [(0.5, 1.0), (0.25, 0.5)])
def test_rebalance_weights_are_zhangs_prior_factor(zhang_priors, gamma, alpha):
    # Every one of the 313 bins has a prior in Zhang's file, so his uniform is 1/313 everywhere.
    assert zhang_priors.shape == (313,) and (zhang_priors > 0).all()
    expected = _zhang_prior_factor(zhang_priors, gamma, alpha)
    w = rebalance_weights(zhang_priors, gamma, alpha)
    np.testing.assert_allclose(w, expected, rtol=2e-7)


def test_rebalance_weights_hand_case():
    """Bin 0 has prior 1/2, the other 312 bins 1/624 each; gamma 1/2, alpha 1. By hand:
    mix_0 = 1/4 + 1/626 = 315/1252, mix_other = 1/1248 + 1/626 = 937/390624;
    sum(prior / mix) = 626/315 + 195312/937 = 62109842/295155; so
    w_0 = (1252/315) / that = 1874/99217 and w_other = (390624/937) / that = 196560/99217
    (check: (1874 + 196560) / 2 / 99217 = 1)."""
    priors = np.r_[0.5, np.full(312, 0.5 / 312)]
    w = rebalance_weights(priors, 0.5, 1.0)
    np.testing.assert_allclose(w[0], 1874 / 99217, rtol=2e-7)
    np.testing.assert_allclose(w[1:], 196560 / 99217, rtol=2e-7)


def test_rebalance_weights_with_empty_bins_mix_uniform_over_all_313(zhang_priors):
    """Priors estimated without smoothing can leave bins empty. Zhang's file has none (his
    uniform runs over the bins with a prior, which there means all 313; empty bins would get
    an infinite factor); here the uniform part is gamma / 313 on every bin, empty ones too
    (PROTOCOLS.md: g / Q with Q the 313 bins), so empty bins get the largest finite weight."""
    priors = np.array(zhang_priors, np.float64)
    priors[np.arange(0, 313, 7)] = 0.0  # 45 empty bins
    priors /= priors.sum()
    gamma, alpha = 0.5, 1.0
    mix = (1.0 - gamma) * priors + gamma * np.full(313, 1.0 / 313)
    expected = mix**-alpha / np.sum(priors * mix**-alpha)
    w = rebalance_weights(priors, gamma, alpha)
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w, expected, rtol=2e-7)
    np.testing.assert_allclose(w[priors == 0], w.max(), rtol=1e-6)
    np.testing.assert_allclose(np.sum(priors * w), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "priors",
    [
        np.full(312, 1 / 312),
        np.full((313, 1), 1 / 313),
        np.r_[-0.1, np.full(312, 1.1 / 312)],
        np.r_[np.nan, np.full(312, 1 / 312)],
        np.r_[np.inf, np.full(312, 1 / 312)],
    ],
    ids=["short", "2d", "negative", "nan", "inf"],
)
def test_rebalance_weights_rejects_bad_priors(priors):
    with pytest.raises(ValueError, match="priors"):
        rebalance_weights(priors)


# ----------------------------------------------------------------------------------------------
# smooth_priors


def _smooth_on_grid(counts, sigma):
    """Normalised convolution on the 23 x 23 ab grid, bins outside the 313 held at 0.

    The Gaussian-weighted average of the frequencies of the in-gamut bins around each bin:
    conv(p) / conv(in_gamut), then renormalised. Written on the grid, not via bin distances.
    """
    bins = ab_bins()
    rows = ((bins[:, 0] + 110) / 10).astype(int)
    cols = ((bins[:, 1] + 110) / 10).astype(int)
    p = np.zeros((23, 23))
    inside = np.zeros((23, 23))
    p[rows, cols] = np.asarray(counts, np.float64) / np.sum(counts)
    inside[rows, cols] = 1.0
    offsets = np.arange(-22, 23) * 10.0
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma**2))
    # scipy.signal, not ndimage: ndimage.convolve drops kernel weights below ~1e-16.
    numerator = signal.convolve2d(p, g, mode="same")[rows, cols]
    out = numerator / signal.convolve2d(inside, g, mode="same")[rows, cols]
    return out / out.sum()


def _bin_index(a, b):
    return int(np.flatnonzero((ab_bins() == [a, b]).all(1))[0])


@pytest.mark.parametrize("sigma", [5.0, 2.5, 10.0])
def test_smooth_priors_matches_grid_convolution(zhang_priors, sigma):
    rng = np.random.default_rng(0)
    for counts in (rng.integers(0, 1000, 313), zhang_priors * 1e6):
        got = smooth_priors(counts, sigma)
        assert got.shape == (313,) and got.dtype == np.float64
        np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-12)
        np.testing.assert_allclose(got, _smooth_on_grid(counts, sigma), rtol=1e-9, atol=1e-15)


def test_smooth_priors_sigma_zero_is_frequencies():
    counts = np.random.default_rng(0).integers(0, 50, 313)
    np.testing.assert_array_equal(smooth_priors(counts, 0.0), counts / counts.sum())


@pytest.mark.parametrize("sigma", [5.0, 2.5])
@pytest.mark.parametrize(
    "centre", [(0, 0), (-90, 50), (90, -110)], ids=["interior", "edge", "corner"]
)
def test_smooth_priors_single_bin(sigma, centre):
    j = _bin_index(*centre)
    counts = np.zeros(313)
    counts[j] = 7.0
    got = smooth_priors(counts, sigma)
    np.testing.assert_allclose(got, _smooth_on_grid(counts, sigma), rtol=1e-9, atol=1e-300)
    if centre == (0, 0):
        # Deep inside the gamut every neighbourhood is complete: each 4-neighbour receives
        # exp(-10^2 / (2 sigma^2)) of the centre's mass, the diagonals exp(-2 * 10^2 / ...).
        for da, db in [(10, 0), (-10, 0), (0, 10), (0, -10)]:
            ratio = got[_bin_index(da, db)] / got[j]
            np.testing.assert_allclose(ratio, np.exp(-100.0 / (2.0 * sigma**2)), rtol=1e-6)
        ratio = got[_bin_index(10, 10)] / got[j]
        np.testing.assert_allclose(ratio, np.exp(-200.0 / (2.0 * sigma**2)), rtol=1e-6)
    assert np.argmax(got) == j


@pytest.mark.parametrize(
    "counts",
    [np.ones(312), np.ones((313, 1)), np.r_[-1.0, np.ones(312)], np.zeros(313)],
    ids=["short", "2d", "negative", "all-zero"],
)
def test_smooth_priors_rejects_bad_counts(counts):
    with pytest.raises(ValueError, match="313"):
        smooth_priors(counts)


# ----------------------------------------------------------------------------------------------
# colorization_loss


def _dense_target(indices, weights):
    target = np.zeros(indices.shape[:-1] + (NUM_BINS,), np.float64)
    np.put_along_axis(target, np.asarray(indices), np.asarray(weights, np.float64), axis=-1)
    return target


def _loss_reference(logits, target, pixel_weights, mask):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    per_pixel = -(target * log_probs).sum(-1)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights
    valid = np.ones(per_pixel.shape) if mask is None else np.asarray(mask, np.float64)
    return (per_pixel * valid).sum() / max(valid.sum(), 1.0), valid.sum()


def _loss_dense_jnp(logits, target, pixel_weights, mask):
    per_pixel = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights
    valid = jnp.ones(per_pixel.shape) if mask is None else jnp.asarray(mask, jnp.float32)
    return jnp.sum(per_pixel * valid) / jnp.maximum(jnp.sum(valid), 1.0)


@pytest.fixture(scope="module")
def loss_inputs():
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)
    return {
        "logits": (rng.normal(size=shape + (NUM_BINS,)) * 3.0).astype(np.float32),
        "ab": rng.uniform(-100, 100, shape + (2,)).astype(np.float32),
        "pixel_weights": rng.uniform(0.1, 5.0, shape).astype(np.float32),
        "mask": rng.random(shape) < 0.6,
    }


@pytest.mark.parametrize(
    "k,use_weights,mask_kind",
    [
        (10, False, "none"),
        (10, True, "none"),
        (10, False, "bool"),
        (10, True, "bool"),
        (10, True, "float"),
        (1, True, "bool"),
        (313, True, "bool"),
        (313, False, "none"),
    ],
)
def test_colorization_loss_matches_dense(loss_inputs, k, use_weights, mask_kind):
    logits = loss_inputs["logits"]
    indices, weights = soft_encode(loss_inputs["ab"], k=k, sigma=5.0)
    target = _dense_target(indices, weights)
    pw = loss_inputs["pixel_weights"] if use_weights else None
    mask = {
        "none": None,
        "bool": loss_inputs["mask"],
        "float": loss_inputs["mask"].astype(np.float32),
    }[mask_kind]
    jmask = None if mask is None else jnp.asarray(mask)
    jpw = None if pw is None else jnp.asarray(pw)

    loss, count = colorization_loss(jnp.asarray(logits), indices, weights, jpw, jmask)
    ref_loss, ref_count = _loss_reference(logits, target, pw, mask)
    assert loss.shape == () and count.dtype == jnp.float32
    assert float(count) == ref_count
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)

    def sparse(x):
        return colorization_loss(x, indices, weights, jpw, jmask)[0]

    grad = jax.grad(sparse)(jnp.asarray(logits))
    ref_grad = jax.grad(_loss_dense_jnp)(jnp.asarray(logits), jnp.asarray(target), jpw, jmask)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), atol=1e-6, rtol=1e-5)
    jitted = jax.jit(colorization_loss)(jnp.asarray(logits), indices, weights, jpw, jmask)
    np.testing.assert_allclose(float(jitted[0]), ref_loss, rtol=1e-5)


def test_colorization_loss_fully_masked(loss_inputs):
    logits = jnp.asarray(loss_inputs["logits"])
    indices, weights = soft_encode(loss_inputs["ab"], k=10)
    mask = jnp.zeros(logits.shape[:-1], bool)
    loss, count = colorization_loss(logits, indices, weights, None, mask)
    assert float(loss) == 0.0 and float(count) == 0.0
    grad = jax.grad(lambda x: colorization_loss(x, indices, weights, None, mask)[0])(logits)
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad).any()


def test_colorization_loss_minimum_at_target(loss_inputs):
    # Cross-entropy against a soft target is smallest when the prediction equals the target:
    # then it equals the target's entropy.
    indices, weights = soft_encode(loss_inputs["ab"], k=10)
    target = _dense_target(indices, weights)
    logits = jnp.asarray(np.log(np.maximum(target, 1e-30)), jnp.float32)
    loss, _ = colorization_loss(logits, indices, weights)
    w = np.asarray(weights, np.float64)
    entropy = -(w * np.log(w)).sum(-1).mean()
    np.testing.assert_allclose(float(loss), entropy, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Input validation of priors and counts.


def test_rebalance_weights_rejects_all_zero_priors():
    with pytest.raises(ValueError, match="priors"):
        rebalance_weights(np.zeros(313))


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_smooth_priors_rejects_non_finite_counts(bad):
    with pytest.raises(ValueError, match="313"):
        smooth_priors(np.r_[bad, np.ones(312)])
