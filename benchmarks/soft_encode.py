"""Times Colorization's soft encoding + loss against the dense numpy reference of Zhang et al.

Usage:
  python benchmarks/soft_encode.py [--ks 10,40,313] [--images cifar10|photos]
      [--rounds 3] [--max_rounds 15] [--budget_s 40] [--out benchmarks/results/soft_encode.json]

Input: one batch of real ab values, 32 x 56 x 56 pixels: 32 random 224 x 224 crops of real
photos (default: CIFAR-10 training JPEGs, one image per crop, upscaled to 256 x 256; or the
sample photos bundled with scikit-learn and scikit-image), turned into the target grid exactly
as the trainer does it (``ssl_jax.colorization.task.lab_targets``: OpenCV's 8-bit Lab, the
library's default, 4 x 4 average pooling of ab), and random logits (32, 56, 56, 313).
The rebalancing weights are the library's (``encode.rebalance_weights``, gamma 0.5) for priors
estimated from this batch (nearest-bin counts smoothed with sigma 5, ``encode.smooth_priors``).

Sides, for each K:
  JAX: one jitted function, ``soft_encode(ab, K, sigma=5)``, the rebalancing weight of each
    pixel's nearest bin, and ``colorization_loss(logits, indices, weights, pixel_weights)``;
    and, the training case, ``jax.value_and_grad`` of that loss with respect to the logits.
    The weight of the nearest bin is ``table[indices[..., 0]]``, as the trainer's
    ``ssl_jax.colorization.task.make_prepare`` computes it.
  Reference: what the Caffe layers of Zhang et al. (colorization/resources/caffe_traininglayers.py)
    do, in numpy: ``NearestNeighbors(n_neighbors=K, algorithm='ball_tree')`` fitted once on the
    313 bins, ``kneighbors`` on the flattened ab, weights exp(-d^2 / (2 sigma^2)) normalised,
    scattered into a preallocated dense (N, 313) float64 target (NNEncode), handed on as float32
    (Caffe's blobs); the pixel weight from the argmax of the dense target (PriorFactor); then the
    softmax cross-entropy against the dense target, weighted and averaged over pixels, and for
    the training case its gradient, (softmax - target) * weight / N.
  Both sides also time the encoding alone (JAX: soft_encode + weight gather; reference: kneighbors
  + Gaussian + scatter + argmax + weight gather) to show where the time goes.

Before timing, the JAX loss must agree with the reference's to rtol 1e-4, and its gradient to
1e-4 of the largest gradient entry on the pixels without an exact tie in distance at the K-th
bin (there the library keeps the lower bin index and the ball tree either one).
Compilation and one warm-up call per side are excluded. The timed calls alternate (encode: JAX,
reference; loss: JAX, reference; loss+grad: JAX, reference; again ..., each blocked until done)
for at least --rounds rounds and then until --budget_s seconds per K or --max_rounds. Reported:
best and median ms per call, and the speed-up, reference / JAX (best over best, and median
over median). "others" is how many CPU cores other processes kept busy meanwhile
(/proc/stat).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import write_result  # noqa: E402
from benchmarks.train_step import machine_info, timed_step  # noqa: E402
from ssl_jax.colorization import encode  # noqa: E402
from ssl_jax.colorization.bins import NUM_BINS, ab_bins  # noqa: E402
from ssl_jax.colorization.task import lab_targets  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_TRAIN = os.path.join(ROOT, "..", "shared", "data", "cifar10", "train")
BATCH, CROP, STRIDE, SIGMA = 32, 224, 4, 5.0
RTOL = 1e-4


# ---------------------------------------------------------------------------------------------
# Input: real ab values on the target grid


def _resize_short(image: np.ndarray, short: int = 256) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    scale = short / min(h, w)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _photos(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """BATCH uint8 RGB images with short side 256."""
    if kind == "cifar10":
        from PIL import Image

        files = sorted(glob.glob(os.path.join(CIFAR10_TRAIN, "*", "*.jpg")))
        chosen = rng.choice(len(files), BATCH, replace=False)
        return [_resize_short(np.asarray(Image.open(files[i]).convert("RGB"))) for i in chosen]
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    photos += [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos = [_resize_short(p) for p in photos]
    return [photos[i % len(photos)] for i in range(BATCH)]


def real_ab(kind: str, seed: int = 0) -> np.ndarray:
    """float32 (BATCH, 56, 56, 2): ab of random 224-pixel crops on the target grid."""
    rng = np.random.default_rng(seed)
    crops = []
    for image in _photos(kind, rng):
        y = rng.integers(0, image.shape[0] - CROP + 1)
        x = rng.integers(0, image.shape[1] - CROP + 1)
        crops.append(image[y : y + CROP, x : x + CROP])
    _, ab_grid, _ = jax.jit(lab_targets, static_argnums=(1, 2))(np.stack(crops), STRIDE, "opencv")
    return np.asarray(ab_grid)


# ---------------------------------------------------------------------------------------------
# The dense numpy reference (Zhang et al.'s NNEncode, PriorFactor, softmax cross-entropy)


class DenseReference:
    """Zhang et al.'s Caffe training layers in numpy, with the library's weight table."""

    def __init__(self, k: int, sigma: float, class_weights: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.bins = ab_bins().astype(np.float64)
        self.sigma = sigma
        self.nbrs = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(self.bins)
        self.class_weights = class_weights
        self.dense = None  # (N, 313) float64, allocated on first use and reused (sameBlock)

    def encode(self, ab: np.ndarray):
        """Dense float32 (N, 313) target and float32 (N,) pixel weights."""
        points = ab.reshape(-1, 2)
        if self.dense is None or self.dense.shape[0] != points.shape[0]:
            self.dense = np.zeros((points.shape[0], NUM_BINS))
            self.rows = np.arange(points.shape[0])[:, None]
        else:
            self.dense[...] = 0
        dists, inds = self.nbrs.kneighbors(points)
        wts = np.exp(-(dists**2) / (2 * self.sigma**2))
        wts = wts / np.sum(wts, axis=1)[:, None]
        self.dense[self.rows, inds] = wts
        target = self.dense.astype(np.float32)  # Caffe's top blob
        pixel_weights = self.class_weights[np.argmax(target, axis=1)]
        return target, pixel_weights

    @staticmethod
    def _log_softmax(logits: np.ndarray):
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        return shifted - np.log(total), exp, total

    def loss(self, ab: np.ndarray, logits: np.ndarray) -> float:
        target, pixel_weights = self.encode(ab)
        log_probs, _, _ = self._log_softmax(logits.reshape(-1, NUM_BINS))
        ce = -np.sum(target * log_probs, axis=1)
        return float(np.mean(ce * pixel_weights))

    def loss_and_grad(self, ab: np.ndarray, logits: np.ndarray):
        target, pixel_weights = self.encode(ab)
        flat = logits.reshape(-1, NUM_BINS)
        log_probs, exp, total = self._log_softmax(flat)
        ce = -np.sum(target * log_probs, axis=1)
        loss = float(np.mean(ce * pixel_weights))
        grad = (exp / total - target) * (pixel_weights / flat.shape[0])[:, None]
        return loss, grad.reshape(logits.shape)


def boundary_ties(ab: np.ndarray, k: int) -> np.ndarray:
    """bool (N,): the K-th and (K+1)-th nearest bins are at the same distance (float64)."""
    if k == NUM_BINS:
        return np.zeros(ab[..., 0].size, bool)
    points = ab.reshape(-1, 2).astype(np.float64)
    d2 = np.square(points[:, None, :] - ab_bins().astype(np.float64)[None]).sum(-1)
    d2 = np.partition(d2, (k - 1, k), axis=1)
    return d2[:, k - 1] == d2[:, k]


# ---------------------------------------------------------------------------------------------
# The library's sparse encoding and loss, jitted


def jax_functions(k: int, sigma: float, class_weights: np.ndarray):
    """Jitted (targets, loss, value_and_grad of the loss w.r.t. the logits)."""
    table = jnp.asarray(class_weights)

    def targets(ab):
        indices, weights = encode.soft_encode(ab, k=k, sigma=sigma)
        return indices, weights, table[indices[..., 0]]  # as task.make_prepare

    def loss(logits, ab):
        indices, weights, pixel_weights = targets(ab)
        value, _ = encode.colorization_loss(logits, indices, weights, pixel_weights)
        return value

    return jax.jit(targets), jax.jit(loss), jax.jit(jax.value_and_grad(loss))


# ---------------------------------------------------------------------------------------------

SIDES = ("jax", "reference")
CASES = ("encode", "loss", "loss+grad")


def run_k(k, ab, logits, class_weights, args) -> dict:
    print(f"\n== K = {k} ==", flush=True)
    ref = DenseReference(k, SIGMA, class_weights)
    j_targets, j_loss, j_grad = jax_functions(k, SIGMA, class_weights)
    ab_dev, logits_dev = jnp.asarray(ab), jnp.asarray(logits)
    start = time.perf_counter()
    jax.block_until_ready((j_targets(ab_dev), j_loss(logits_dev, ab_dev)))
    j_value, j_gradient = jax.block_until_ready(j_grad(logits_dev, ab_dev))
    compile_s = time.perf_counter() - start

    # Agreement before timing. Exact ties in distance at the K-th neighbour (the bin grid is
    # symmetric, the ab values are multiples of 1/16) are broken differently: the library takes
    # the lower bin index, the ball tree either. Such pixels' targets differ only in which of the
    # tied bins gets the K-th weight; the gradient is compared on the other pixels.
    r_loss = ref.loss(ab, logits)
    r_value, r_gradient = ref.loss_and_grad(ab, logits)
    j_only = float(j_loss(logits_dev, ab_dev))
    tied = boundary_ties(ab, k)
    diff = np.abs(np.asarray(j_gradient) - r_gradient).reshape(-1, NUM_BINS)
    grad_scale = float(np.max(np.abs(r_gradient)))
    check = {
        "jax_loss": j_only,
        "reference_loss": r_loss,
        "loss_rel_diff": abs(j_only - r_loss) / abs(r_loss),
        "grad_case_loss_rel_diff": abs(float(j_value) - r_value) / abs(r_value),
        "grad_max_abs_diff": float(np.max(diff[~tied])),
        "grad_max_abs": grad_scale,
        "pixels_tied_at_kth": int(tied.sum()),
        "grad_max_abs_diff_tied_pixels": float(np.max(diff[tied])) if tied.any() else 0.0,
    }
    print(
        f"  loss: jax {j_only:.6f}, reference {r_loss:.6f} (rel diff {check['loss_rel_diff']:.1e});"
        f" grad max |diff| {check['grad_max_abs_diff']:.2e} of max |grad| {grad_scale:.2e}"
        f" (pixels without a tie at the K-th bin; {int(tied.sum())} have one);"
        f" jax compiled in {compile_s:.1f} s",
        flush=True,
    )
    if not (
        np.isclose(j_only, r_loss, rtol=RTOL)
        and np.isclose(float(j_value), r_value, rtol=RTOL)
        and check["grad_max_abs_diff"] <= RTOL * grad_scale
    ):
        raise AssertionError(f"JAX and the reference disagree at K={k}: {check}")
    del j_gradient, r_gradient, diff

    calls = {
        ("encode", "jax"): lambda: jax.block_until_ready(j_targets(ab_dev)),
        ("encode", "reference"): lambda: ref.encode(ab),
        ("loss", "jax"): lambda: jax.block_until_ready(j_loss(logits_dev, ab_dev)),
        ("loss", "reference"): lambda: ref.loss(ab, logits),
        ("loss+grad", "jax"): lambda: jax.block_until_ready(j_grad(logits_dev, ab_dev)),
        ("loss+grad", "reference"): lambda: ref.loss_and_grad(ab, logits),
    }
    for fn in calls.values():  # warm-up (the reference's first call allocates)
        fn()
    times = {key: [] for key in calls}
    start, rounds = time.perf_counter(), 0
    while rounds < args.rounds or (
        rounds < args.max_rounds and time.perf_counter() - start < args.budget_s
    ):
        for key, fn in calls.items():  # alternating: both sides see the same background load
            times[key].append(timed_step(fn))
        rounds += 1

    row = {"k": k, "rounds": rounds, "jax_compile_s": compile_s, "check": check, "cases": {}}
    for case in CASES:
        entry = {}
        for side in SIDES:
            ts = [t["s"] for t in times[(case, side)]]
            others = [t["other_cores"] for t in times[(case, side)] if "other_cores" in t]
            entry[side] = {
                "ms_best": min(ts) * 1e3,
                "ms_median": statistics.median(ts) * 1e3,
                "times_s": ts,
                "other_cores_mean": statistics.mean(others) if others else None,
            }
        jax_ms, ref_ms = entry["jax"], entry["reference"]
        jax_ms["speedup_best"] = ref_ms["ms_best"] / jax_ms["ms_best"]
        jax_ms["speedup_median"] = ref_ms["ms_median"] / jax_ms["ms_median"]
        row["cases"][case] = entry
        print(
            f"  {case:<9} jax {jax_ms['ms_best']:8.1f} ms (median {jax_ms['ms_median']:.1f}), "
            f"reference {ref_ms['ms_best']:8.1f} ms (median {ref_ms['ms_median']:.1f}): "
            f"{jax_ms['speedup_best']:.2f}x",
            flush=True,
        )
    return row


def print_table(rows) -> None:
    head = (
        f"{'K':>4} {'case':<9} {'JAX ms':>8} {'median':>8} {'ref ms':>8} {'median':>8} "
        f"{'ref/JAX':>8} {'median':>7} {'others':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        for case, e in row["cases"].items():
            others = [e[s]["other_cores_mean"] for s in SIDES]
            others = [o for o in others if o is not None]
            print(
                f"{row['k']:>4} {case:<9} "
                + " ".join(f"{e[s]['ms_best']:>8.1f} {e[s]['ms_median']:>8.1f}" for s in SIDES)
                + f" {e['jax']['speedup_best']:>7.2f}x {e['jax']['speedup_median']:>6.2f}x"
                + f" {max(others) if others else float('nan'):>6.2f}"
            )
    print(
        "ms: best timed call; median: median call. ref/JAX: reference ms over JAX ms, best over"
        " best and median over median (above 1: JAX faster).\nothers: CPU cores other processes"
        " kept busy during the timed calls (the larger of the two sides' means)."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="10,40,313")
    parser.add_argument("--images", default="cifar10", choices=("cifar10", "photos"))
    parser.add_argument("--rounds", type=int, default=3, help="at least this many rounds")
    parser.add_argument("--max_rounds", type=int, default=15)
    parser.add_argument("--budget_s", type=float, default=40.0, help="per K, after --rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "benchmarks", "results", "soft_encode.json")
    )
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    for k in ks:
        if not 1 <= k <= NUM_BINS:
            parser.error(f"--ks: K={k} is outside [1, {NUM_BINS}]")
    images = args.images
    if images == "cifar10" and not glob.glob(os.path.join(CIFAR10_TRAIN, "*", "*.jpg")):
        print(f"{CIFAR10_TRAIN} has no JPEGs: using the bundled sample photos")
        images = "photos"

    import sklearn

    info = machine_info()
    info["sklearn"] = sklearn.__version__
    ab = real_ab(images, args.seed)
    counts = np.bincount(np.asarray(encode.nearest_bin(ab)).ravel(), minlength=NUM_BINS)
    class_weights = encode.rebalance_weights(encode.smooth_priors(counts, SIGMA))
    logits = np.random.default_rng(args.seed + 1).normal(size=(*ab.shape[:3], NUM_BINS))
    logits = logits.astype(np.float32)
    print(
        f"ab: {ab.shape} from {images}, a in [{ab[..., 0].min():.1f}, {ab[..., 0].max():.1f}], "
        f"b in [{ab[..., 1].min():.1f}, {ab[..., 1].max():.1f}]; {int((counts > 0).sum())} of "
        f"{NUM_BINS} bins are some pixel's nearest; rebalancing weights "
        f"{class_weights.min():.2f} to {class_weights.max():.2f}",
        flush=True,
    )

    rows = [run_k(k, ab, logits, class_weights, args) for k in ks]
    print_table(rows)
    try:
        info["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join(["python benchmarks/soft_encode.py", *argv]),
        "machine": info,
        "images": images,
        "pixels": int(np.prod(ab.shape[:3])),
        "ab_shape": list(ab.shape),
        "sigma": SIGMA,
        "bins_seen": int((counts > 0).sum()),
        "rows": rows,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
