"""Detection kernels against independent numpy references (loops, hand-made cases)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.detection import anchors as anchor_ops
from ssl_jax.detection import boxes as box_ops
from ssl_jax.detection import nms as nms_ops
from ssl_jax.detection import roi_align as roi_ops
from ssl_jax.detection import sampling


def random_boxes(rng: np.random.Generator, n: int, extent: float = 50.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1, extent / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def np_iou_pair(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_iou(a, b) -> np.ndarray:
    return np.array([[np_iou_pair(x, y) for y in b] for x in a], np.float64).reshape(len(a), len(b))


# ----------------------------------------------------------------------------------------- boxes


def test_iou_matches_loop_and_zero_area_is_zero():
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 7)
    b = np.concatenate([random_boxes(rng, 5), a[:2], [[3, 3, 3, 3], [1, 1, 1, 9]]]).astype(
        np.float32
    )
    a = np.concatenate([a, [[3, 3, 3, 3]]]).astype(np.float32)
    got = np.asarray(box_ops.iou(jnp.asarray(a), jnp.asarray(b)))
    assert got.shape == (8, 9)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np_iou(a, b), atol=1e-6)
    assert got[7, 7] == 0.0  # zero-area box against itself


def test_encode_hand_made_and_decode_round_trip():
    ref = jnp.array([[0.0, 0.0, 10.0, 20.0]])
    tgt = jnp.array([[5.0, 5.0, 15.0, 25.0]])
    # centres (5, 10) -> (10, 15); same size.
    np.testing.assert_allclose(box_ops.encode(ref, tgt), [[0.5, 0.25, 0.0, 0.0]], atol=1e-7)
    tgt2 = jnp.array([[0.0, 0.0, 20.0, 10.0]])  # centre (10, 5), size 20 x 10
    np.testing.assert_allclose(
        box_ops.encode(ref, tgt2, (10.0, 10.0, 5.0, 5.0)),
        [[10 * 0.5, 10 * -0.25, 5 * math.log(2), 5 * math.log(0.5)]],
        rtol=1e-6,
    )
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 20), random_boxes(rng, 20)
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        d = box_ops.encode(jnp.asarray(a), jnp.asarray(b), w)
        np.testing.assert_allclose(box_ops.decode(jnp.asarray(a), d, w), b, atol=1e-4)
    # Broadcast over a leading axis.
    d = box_ops.encode(jnp.asarray(a)[None], jnp.asarray(np.stack([b, a])), w)
    assert d.shape == (2, 20, 4)
    np.testing.assert_allclose(d[1], 0.0, atol=1e-6)


def test_decode_clamps_scale():
    ref = jnp.array([0.0, 0.0, 16.0, 16.0])
    out = box_ops.decode(ref, jnp.array([0.0, 0.0, 50.0, 1.0]))
    np.testing.assert_allclose(out[2] - out[0], 1000.0, rtol=1e-5)
    np.testing.assert_allclose(out[3] - out[1], 16 * math.e, rtol=1e-5)
    # The clamp applies after dividing by the weight: 20 / 5 = 4 < log(1000 / 16) ~ 4.14.
    out = box_ops.decode(ref, jnp.array([0.0, 0.0, 20.0, 50.0]), (1.0, 1.0, 5.0, 5.0))
    np.testing.assert_allclose(out[2] - out[0], 16 * math.exp(4.0), rtol=1e-5)
    np.testing.assert_allclose(out[3] - out[1], 1000.0, rtol=1e-5)


def test_clip_with_traced_size():
    b = jnp.array([[-5.0, -2.0, 30.0, 8.0], [2.0, 3.0, 4.0, 50.0]])
    out = jax.jit(box_ops.clip)(b, jnp.float32(20.0), jnp.float32(10.0))
    np.testing.assert_array_equal(out, [[0, 0, 10, 8], [2, 3, 4, 20]])


# --------------------------------------------------------------------------------------- anchors


def test_cell_anchors_sizes_ratios_order():
    cell = anchor_ops.cell_anchors()
    assert cell.shape == (15, 4) and cell.dtype == np.float32
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    np.testing.assert_allclose((cell[:, :2] + cell[:, 2:]) / 2, 0.0, atol=1e-4)
    sizes = np.repeat([32, 64, 128, 256, 512], 3)  # sizes-major
    ratios = np.tile([0.5, 1.0, 2.0], 5)
    np.testing.assert_allclose(w * h, sizes**2.0, rtol=1e-5)
    np.testing.assert_allclose(h / w, ratios, rtol=1e-5)


def test_grid_anchors_count_and_centres():
    cell = anchor_ops.cell_anchors(sizes=(32, 64), ratios=(0.5, 1.0, 2.0))
    a = np.asarray(anchor_ops.grid_anchors(3, 5, 16, cell))
    assert a.shape == (3 * 5 * 6, 4)
    grid = a.reshape(3, 5, 6, 4)  # (y, x, a), as an RPN output (B, h, w, A)
    for y in range(3):
        for x in range(5):
            centre = np.array([(x + 0.5) * 16, (y + 0.5) * 16] * 2)
            np.testing.assert_allclose(grid[y, x], cell + centre, atol=1e-4)


def _label(anchors, gt, gt_valid, hw, seed=0, **kw):
    fn = jax.jit(lambda *args: anchor_ops.label_anchors(*args, **kw))
    labels, matched = fn(
        jnp.asarray(anchors, jnp.float32),
        jnp.asarray(gt, jnp.float32),
        jnp.asarray(gt_valid),
        jnp.asarray(hw, jnp.float32),
        jax.random.key(seed),
    )
    return np.asarray(labels), np.asarray(matched)


HAND_ANCHORS = [
    [10, 10, 50, 48],  # 0: IoU .95 with gt0 -> positive
    [60, 60, 90, 90],  # 1: no overlap (the padding gt equals it) -> negative
    [-5, 10, 30, 40],  # 2: crosses the left border -> ignored
    [90, 90, 110, 110],  # 3: crosses the right/bottom border -> ignored
    [58, 0, 78, 20],  # 4: IoU .5 with gt1, its best (tied with 5) -> positive
    [78, 0, 98, 20],  # 5: IoU .5 with gt1 -> positive
    [10, 10, 30, 30],  # 6: IoU .25 with gt0 -> negative
    [10, 10, 40, 40],  # 7: IoU .5625 with gt0; the best inside anchor for gt3 -> positive
    [60, 70, 100, 90],  # 8: x2 = width is outside (x2 < width is inside) -> ignored
    [0, 80, 20, 100],  # 9: y2 = height is outside -> ignored
]
HAND_GT = [
    [10, 10, 50, 50],  # gt0
    [58, 0, 98, 20],  # gt1
    [60, 60, 90, 90],  # padding
    [-4, 30, 12, 40],  # gt3: IoU .15 with anchor 2 (outside), .019 with 7, .012 with 0
    [0, 52, 5, 58],  # gt4: overlaps no anchor, so it makes no positive
]
HAND_GT_VALID = [True, True, False, True, True]


def test_label_anchors_hand_made():
    anchors = np.array(HAND_ANCHORS, np.float32)
    labels, matched = _label(anchors, HAND_GT, HAND_GT_VALID, [100, 100], batch_size=256)
    np.testing.assert_array_equal(labels, [1, 0, -1, -1, 1, 1, 0, 1, -1, -1])
    assert matched[0] == 0 and matched[4] == 1 and matched[5] == 1
    assert np.all(matched != 2)  # never the padding box

    # Break the tie: only the strictly best anchor of gt1 is positive, the other is ignored.
    anchors[5] = [78, 0, 98, 19]  # IoU 380 / 820 < .5
    labels, _ = _label(anchors, HAND_GT, HAND_GT_VALID, [100, 100])
    np.testing.assert_array_equal(labels, [1, 0, -1, -1, 1, -1, 0, 1, -1, -1])

    # A straddle margin of 10 lets anchors 2, 8 and 9 in; anchor 3 stays out (110 is not < 110).
    # Anchor 2 is now gt3's best (positive), so anchor 7 falls back to ignored (IoU .5625).
    labels, _ = _label(anchors, HAND_GT, HAND_GT_VALID, [100, 100], straddle=10.0)
    np.testing.assert_array_equal(labels, [1, 0, 1, -1, 1, -1, 0, -1, 0, 0])


def test_label_anchors_best_anchor_below_negative_iou_is_positive():
    anchors = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    gt = np.array([[0, 0, 40, 40]], np.float32)  # best IoU 100 / 1600 < .3
    labels, _ = _label(anchors, gt, [True], [100, 100])
    np.testing.assert_array_equal(labels, [1, 0])
    # It is not also a negative candidate: with room for one negative, that is always anchor 1.
    anchors = np.concatenate([anchors, [[60, 60, 70, 70]]]).astype(np.float32)
    for seed in range(6):
        labels, _ = _label(anchors, gt, [True], [100, 100], seed=seed, batch_size=2)
        assert labels[0] == 1 and (labels == 0).sum() == 1


def _grid_case():
    cell = anchor_ops.cell_anchors(sizes=(16, 32), ratios=(0.5, 1.0, 2.0))
    anchors = np.asarray(anchor_ops.grid_anchors(16, 16, 4, cell))  # 1536, image 64 x 64
    gt = np.array([[2, 2, 34, 34], [22, 18, 54, 50], [0, 0, 0, 0]], np.float32)
    return anchors, gt, [True, True, False]


def test_label_anchors_subsample_caps():
    anchors, gt, valid = _grid_case()
    full, _ = _label(anchors, gt, valid, [64, 64], batch_size=10**6, positive_fraction=0.5)
    n_pos, n_neg = int((full == 1).sum()), int((full == 0).sum())
    assert n_pos > 6 and n_neg > 12
    for seed in range(3):
        labels, _ = _label(anchors, gt, valid, [64, 64], seed=seed, batch_size=12)
        assert (labels == 1).sum() == 6 and (labels == 0).sum() == 6
        assert np.all(full[labels == 1] == 1) and np.all(full[labels == 0] == 0)
    # Few positives: negatives fill the batch.
    labels, _ = _label(anchors, gt, valid, [64, 64], batch_size=2 * n_pos + 10)
    assert (labels == 1).sum() == n_pos and (labels == 0).sum() == n_pos + 10


def test_label_anchors_no_gt_and_vmap():
    anchors, gt, _ = _grid_case()
    x1y1_in = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0)
    inside = x1y1_in & (anchors[:, 2] < 64) & (anchors[:, 3] < 64)
    labels, _ = _label(anchors, gt, [False] * 3, [64, 64], batch_size=10**6)
    np.testing.assert_array_equal(labels, np.where(inside, 0, -1))
    labels, _ = _label(anchors, gt, [False] * 3, [64, 64], batch_size=20)
    assert (labels == 0).sum() == 20 and (labels == 1).sum() == 0

    fn = jax.vmap(lambda g, v, hw, k: anchor_ops.label_anchors(jnp.asarray(anchors), g, v, hw, k))
    labels, matched = jax.jit(fn)(
        jnp.stack([jnp.asarray(gt)] * 2),
        jnp.array([[True, True, False], [False, False, False]]),
        jnp.array([[64.0, 64.0], [64.0, 64.0]]),
        jax.random.split(jax.random.key(0), 2),
    )
    assert labels.shape == (2, len(anchors)) and matched.shape == (2, len(anchors))
    assert (labels[0] == 1).sum() > 0 and (labels[1] == 1).sum() == 0


# -------------------------------------------------------------------------------------- sampling


def test_subsample_counts_and_uniformity():
    mask = np.zeros(30, bool)
    mask[::3] = True  # 10 members
    fn = jax.jit(sampling.subsample)
    out = np.asarray(fn(jnp.asarray(mask), 4, jax.random.key(0)))
    assert out.sum() == 4 and np.all(mask[out])
    assert np.array_equal(np.asarray(fn(jnp.asarray(mask), jnp.int32(20), jax.random.key(1))), mask)
    keys = jax.random.split(jax.random.key(2), 2000)
    many = np.asarray(jax.jit(jax.vmap(sampling.subsample, (None, None, 0)))(mask, 4, keys))
    freq = many.mean(axis=0)
    np.testing.assert_allclose(freq[mask], 0.4, atol=0.05)  # each member equally likely
    assert freq[~mask].max() == 0


GT = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 40]], np.float32)
GT_CLASSES = np.array([3, 5, 7], np.int32)
GT_VALID = np.array([True, True, False])  # the third is padding
PROPOSALS = np.array(
    [
        [0, 0, 10, 9],  # IoU .9 with gt0: foreground, class 3
        [20, 20, 40, 38],  # .9 with gt1: class 5
        [0, 0, 10, 20],  # .5 with gt0: foreground (>= .5)
        [0, 0, 20, 10],  # .5 with gt0
        [0, 0, 10, 40],  # .25 with gt0 (the padding gt would be 1.0): background
        [100, 100, 120, 120],  # 0: background
        [20, 20, 40, 40],  # an invalid proposal
    ],
    np.float32,
)
PROPOSAL_VALID = np.array([True] * 6 + [False])


def _sample(seed=0, **kw):
    fn = jax.jit(lambda *a: sampling.sample_rois(*a, **kw))
    out = fn(PROPOSALS, PROPOSAL_VALID, GT, GT_CLASSES, GT_VALID, jax.random.key(seed))
    return {k: np.asarray(v) for k, v in out.items()}


def test_sample_rois_hand_made():
    all_boxes = np.concatenate([PROPOSALS, GT])
    for seed in range(3):
        out = _sample(seed, num_rois=8, fg_fraction=0.25)
        np.testing.assert_array_equal(out["valid"], [True] * 4 + [False] * 4)
        assert np.all(out["classes"][:2] > 0) and np.all(out["classes"][2:] == 0)
        for roi, cls, tgt in zip(
            out["rois"][:2], out["classes"][:2], out["targets"][:2], strict=True
        ):
            ious = np_iou([roi], GT[:2])[0]
            assert ious.max() >= 0.5 and cls == GT_CLASSES[ious.argmax()]
            np.testing.assert_array_equal(tgt, GT[ious.argmax()])
            assert any(np.array_equal(roi, b) for b in all_boxes[[0, 1, 2, 3, 7, 8]])
        bg = {tuple(r) for r in out["rois"][2:4]}
        assert bg == {tuple(PROPOSALS[4]), tuple(PROPOSALS[5])}
        np.testing.assert_array_equal(out["rois"][4:], 0.0)
        np.testing.assert_array_equal(out["targets"][4:], 0.0)

    # Room for all 6 foreground candidates (4 proposals + the 2 valid gt boxes).
    out = _sample(num_rois=16, fg_fraction=0.5)
    assert out["valid"].sum() == 8 and (out["classes"] > 0).sum() == 6
    np.testing.assert_array_equal(sorted(out["classes"][:6]), [3, 3, 3, 3, 5, 5])
    # A background floor of .1 leaves out the non-overlapping proposal.
    out = _sample(num_rois=16, fg_fraction=0.5, bg_iou=(0.1, 0.5))
    assert out["valid"].sum() == 7
    np.testing.assert_array_equal(out["rois"][6], PROPOSALS[4])


def test_sample_rois_no_gt_is_all_background():
    fn = jax.jit(lambda *a: sampling.sample_rois(*a, num_rois=4))
    out = fn(PROPOSALS, PROPOSAL_VALID, GT, GT_CLASSES, np.zeros(3, bool), jax.random.key(0))
    assert np.asarray(out["valid"]).sum() == 4 and np.all(np.asarray(out["classes"]) == 0)


# ------------------------------------------------------------------------------------------- nms


def np_nms(boxes, scores, valid, thresh):
    """Plain greedy NMS: best score first (lower index on ties), drop IoU > thresh."""
    order = sorted((i for i in range(len(boxes)) if valid[i]), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(np_iou_pair(boxes[i], boxes[j]) <= thresh for j in kept):
            kept.append(i)
    return kept


def _run_nms(boxes, scores, valid, thresh, max_output):
    fn = jax.jit(nms_ops.nms, static_argnums=(3, 4))
    idx, ok = fn(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(valid), thresh, max_output)
    idx, ok = np.asarray(idx), np.asarray(ok)
    assert np.all(ok[: ok.sum()]) and np.all(idx[~ok] == 0)
    return list(idx[ok])


@pytest.mark.parametrize("thresh", [0.3, 0.7])
def test_nms_matches_greedy_loop(thresh):
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 150, extent=60)
    scores = np.round(rng.uniform(size=150), 1).astype(np.float32)  # many ties
    valid = rng.uniform(size=150) > 0.2
    want = np_nms(boxes, scores, valid, thresh)
    assert 10 < len(want) < 150
    assert _run_nms(boxes, scores, valid, thresh, 200) == want
    assert _run_nms(boxes, scores, valid, thresh, 7) == want[:7]


def test_nms_hand_made_strict_threshold_and_ties():
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 6]],
        np.float32,
    )
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.95], np.float32)
    valid = np.array([True, True, True, True, False])
    # 1 and 2 tie at .9: 1 (lower index) goes first; IoU(2, 1) = .5 exactly is not > .5, so 2
    # survives and then suppresses 0 (IoU 1); 4 is invalid although it scores best.
    assert _run_nms(boxes, scores, valid, 0.5, 5) == [1, 2, 3]
    assert _run_nms(boxes, scores, valid, 0.49, 5) == [1, 3]
    assert _run_nms(boxes, scores, np.zeros(5, bool), 0.5, 3) == []


def test_nms_large_proposal_count():
    rng = np.random.default_rng(4)
    n = 12000
    boxes = random_boxes(rng, n, extent=600)
    scores = rng.uniform(size=n).astype(np.float32)
    valid = np.ones(n, bool)
    got = _run_nms(boxes, scores, valid, 0.7, 2000)
    assert len(got) == 2000
    # The same greedy rule, vectorised in numpy (the loop above would be slow at this size).
    order = np.argsort(-scores, kind="stable")
    a = boxes[order]
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    alive = np.ones(n, bool)
    want = []
    while alive.any() and len(want) < 2000:
        i = int(np.argmax(alive))
        want.append(int(order[i]))
        lt = np.maximum(a[:, :2], a[i, :2])
        rb = np.minimum(a[:, 2:], a[i, 2:])
        inter = np.prod(np.maximum(rb - lt, 0), axis=1)
        alive &= inter / (area + area[i] - inter) <= 0.7
        alive[i] = False
    assert got == want


def np_per_class_nms(boxes, scores, valid, score_thr, nms_thr, max_per_class, max_total):
    dets = []
    for k in range(scores.shape[1]):
        cand = valid & (scores[:, k] > score_thr)
        for i in np_nms(boxes[:, k], scores[:, k], cand, nms_thr)[:max_per_class]:
            dets.append((scores[i, k], k, boxes[i, k]))
    dets.sort(key=lambda d: -d[0])
    return dets[:max_total]


@pytest.mark.parametrize("max_total", [10, 300])
def test_per_class_nms_matches_loop(max_total):
    rng = np.random.default_rng(5)
    r, k = 40, 4
    boxes = random_boxes(rng, r * k, extent=40).reshape(r, k, 4)
    scores = rng.uniform(size=(r, k)).astype(np.float32) ** 3
    valid = rng.uniform(size=r) > 0.1
    fn = jax.jit(
        lambda b, s, v: nms_ops.per_class_nms(b, s, v, max_per_class=12, max_total=max_total)
    )
    out = {key: np.asarray(v) for key, v in fn(boxes, scores, valid).items()}
    want = np_per_class_nms(boxes, scores, valid, 0.05, 0.3, 12, max_total)
    n = len(want)
    assert out["valid"].sum() == n and np.all(out["valid"][:n])
    assert n == min(max_total, 4 * 12)  # max_total bites, then max_per_class
    np.testing.assert_allclose(out["scores"][:n], [d[0] for d in want])
    np.testing.assert_array_equal(out["classes"][:n], [d[1] for d in want])
    np.testing.assert_allclose(out["boxes"][:n], np.stack([d[2] for d in want]))
    assert np.all(out["scores"][n:] == 0) and np.all(out["boxes"][n:] == 0)


# ------------------------------------------------------------------------------------- roi_align


def np_roi_align_taps(shape, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Caffe2's RoIAlign, sample by sample: a list of (roi, i, j, y, x, weight) taps.

    The forward is sum(weight * F[y, x]) into out[roi, i, j]; the adjoint scatters the same
    weights back (Caffe2's RoIAlignGradient).
    """
    height, width = shape
    taps = []
    for r, roi in enumerate(np.asarray(rois, np.float64)):
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = roi * spatial_scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / output_size, roi_w / output_size
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / output_size)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / output_size)
        count = max(grid_h * grid_w, 1)
        for i in range(output_size):
            for j in range(output_size):
                for iy in range(grid_h):
                    for ix in range(grid_w):
                        y = y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h
                        x = x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        if y < -1.0 or y > height or x < -1.0 or x > width:
                            continue
                        y, x = max(y, 0.0), max(x, 0.0)
                        y_low, x_low = int(y), int(x)
                        if y_low >= height - 1:
                            y_high = y_low = height - 1
                            y = float(y_low)
                        else:
                            y_high = y_low + 1
                        if x_low >= width - 1:
                            x_high = x_low = width - 1
                            x = float(x_low)
                        else:
                            x_high = x_low + 1
                        ly, lx = y - y_low, x - x_low
                        hy, hx = 1.0 - ly, 1.0 - lx
                        for yy, xx, w in [
                            (y_low, x_low, hy * hx),
                            (y_low, x_high, hy * lx),
                            (y_high, x_low, ly * hx),
                            (y_high, x_high, ly * lx),
                        ]:
                            taps.append((r, i, j, yy, xx, w / count))
    return taps


def np_roi_align(features, taps, num_rois, output_size):
    out = np.zeros((num_rois, output_size, output_size, features.shape[-1]))
    for r, i, j, y, x, w in taps:
        out[r, i, j] += w * features[y, x]
    return out


def np_roi_align_adjoint(shape, taps, grad_out):
    grad = np.zeros(shape)
    for r, i, j, y, x, w in taps:
        grad[y, x] += w * grad_out[r, i, j]
    return grad


ROI_SHAPE = (7, 9, 3)  # H, W, C; image 14 x 18 at spatial_scale .5


@pytest.fixture(scope="module")
def roi_case():
    rng = np.random.default_rng(6)
    features = rng.normal(size=ROI_SHAPE).astype(np.float32)
    rois = random_boxes(rng, 8, extent=20) - 3.0  # several cross the map's border
    extra = [
        [4.0, 5.0, 4.3, 5.2],  # tiny
        [10.0, 3.0, 9.0, 2.0],  # x2 < x1 (Caffe2 clamps to 1 x 1 when not aligned)
        [-30.0, -30.0, -5.0, -4.0],  # wholly outside
        [0.0, 0.0, 18.0, 14.0],  # the whole image
        [12.0, 10.0, 30.0, 25.0],  # past the bottom-right edge
    ]
    return features, np.concatenate([rois, np.array(extra, np.float32)])


@pytest.mark.parametrize(
    "sampling_ratio,aligned,chunk",
    [(2, False, 256), (2, True, 5), (0, False, 4), (0, True, 256), (1, False, 13)],
)
def test_roi_align_matches_caffe2_loop(roi_case, sampling_ratio, aligned, chunk):
    features, rois = roi_case
    out_size = 3
    fn = jax.jit(
        lambda f, r: roi_ops.roi_align(
            f,
            r,
            output_size=out_size,
            spatial_scale=0.5,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            max_sampling=5,
            chunk=chunk,
        )
    )
    sides = np.concatenate([rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]]) * 0.5
    assert math.ceil(sides.max() / out_size) <= 5  # enough slots for the adaptive count
    got = np.asarray(fn(features, rois))
    taps = np_roi_align_taps(ROI_SHAPE[:2], rois, out_size, 0.5, sampling_ratio, aligned)
    want = np_roi_align(features, taps, len(rois), out_size)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The outside RoI reads nothing; some bins of RoIs crossing the border read nothing either.
    assert np.all(want[-3] == 0) and np.any(want[:-3] == 0)

    weights = np.random.default_rng(7).normal(size=want.shape).astype(np.float32)
    grad = jax.jit(jax.grad(lambda f: jnp.sum(fn(f, rois) * weights)))(features)
    want_grad = np_roi_align_adjoint(ROI_SHAPE, taps, weights)
    np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-4)


def test_roi_align_detectron_shapes_adaptive():
    """Res4 of a 600 x 1000 image, 14 x 14 bins; max_sampling = ceil(63 / 14) is exact."""
    rng = np.random.default_rng(8)
    shape = (38, 63, 2)
    features = rng.normal(size=shape).astype(np.float32)
    rois = np.array(
        [[0, 0, 1000, 600], [100.5, 40.2, 420.7, 390.1], [950, 580, 999, 599]], np.float32
    )
    got = roi_ops.roi_align(jnp.asarray(features), jnp.asarray(rois), max_sampling=5)
    taps = np_roi_align_taps(shape[:2], rois, 14, 1 / 16, 0, False)
    np.testing.assert_allclose(np.asarray(got), np_roi_align(features, taps, 3, 14), atol=1e-5)


def test_roi_align_needs_max_sampling():
    with pytest.raises(ValueError, match="max_sampling"):
        roi_ops.roi_align(jnp.zeros((4, 4, 1)), jnp.zeros((1, 4)), sampling_ratio=0)


def test_vmap_over_images(roi_case):
    features, rois = roi_case
    pool = lambda f, r: roi_ops.roi_align(f, r, output_size=2, spatial_scale=0.5, sampling_ratio=2)
    batch_f = np.stack([features, -features])
    batch_r = np.stack([rois, rois[::-1]])
    got = jax.jit(jax.vmap(pool))(batch_f, batch_r)
    for b in range(2):
        np.testing.assert_allclose(got[b], pool(batch_f[b], batch_r[b]), atol=1e-6)

    rng = np.random.default_rng(9)
    boxes = random_boxes(rng, 2 * 60).reshape(2, 60, 4)
    scores = rng.uniform(size=(2, 60)).astype(np.float32)
    valid = rng.uniform(size=(2, 60)) > 0.3
    idx, ok = jax.jit(jax.vmap(lambda b, s, v: nms_ops.nms(b, s, v, 0.5, 40)))(boxes, scores, valid)
    for b in range(2):
        assert (
            list(np.asarray(idx[b])[np.asarray(ok[b])])
            == np_nms(boxes[b], scores[b], valid[b], 0.5)[:40]
        )
