"""Detection input pipeline: scales, buckets, boxes under resize and flip, static batches,
determinism, resumption, process slices, the test pass and the map back to VOC pixels."""

import itertools
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from ssl_jax.detection import inputs
from ssl_jax.detection.voc import Annotation, DetectionSet

VOC2007 = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "detection", "VOCdevkit", "VOC2007"
)
REAL_IDS = ("kangaroo_00001", "raccoon_00001", "kangaroo_00002", "raccoon_00002")

# Small scales keep the synthetic tests fast: short side 48, long side at most 80.
SMALL = dict(short_side=48, max_side=80, size_divisor=16, bucket_step=32)


def synthetic_set(sizes, boxes_per_image=2, seed=0, num_classes=3):
    """A DetectionSet of PNG images (lossless) of the given (height, width), pixels in [1, 255]
    so that the zero padding is visible, with random boxes inside each image."""
    rng = np.random.default_rng(seed)
    annotations, encoded = [], []
    for n, (h, w) in enumerate(sizes):
        image = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)
        ok, png = cv2.imencode(".png", image)
        assert ok
        encoded.append(png.tobytes())
        x = np.sort(rng.integers(1, w + 1, (boxes_per_image, 2)), axis=1)
        y = np.sort(rng.integers(1, h + 1, (boxes_per_image, 2)), axis=1)
        boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)
        annotations.append(
            Annotation(
                image_id=f"synthetic_{n:03d}",
                width=w,
                height=h,
                boxes=boxes,
                classes=rng.integers(0, num_classes, boxes_per_image).astype(np.int32),
                difficult=rng.random(boxes_per_image) < 0.3,
            )
        )
    return DetectionSet(
        name="synthetic",
        classes=tuple(f"class{c}" for c in range(num_classes)),
        annotations=tuple(annotations),
        image_bytes=lambda i: encoded[i],
    )


# Three landscape buckets' worth, one portrait, one very long image.
MIXED = [(30, 40)] * 7 + [(40, 30)] * 5 + [(30, 60)] * 6 + [(12, 100)] * 3


def real_set():
    if not os.path.isdir(os.path.join(VOC2007, "Annotations")):
        pytest.skip(f"{VOC2007} is not present")
    classes = ("raccoon", "kangaroo")
    annotations = []
    for image_id in REAL_IDS:
        root = ET.parse(os.path.join(VOC2007, "Annotations", f"{image_id}.xml")).getroot()
        objects = root.findall("object")
        annotations.append(
            Annotation(
                image_id=image_id,
                width=int(root.find("size/width").text),
                height=int(root.find("size/height").text),
                boxes=np.asarray(
                    [
                        [
                            float(o.find(f"bndbox/{k}").text)
                            for k in ("xmin", "ymin", "xmax", "ymax")
                        ]
                        for o in objects
                    ],
                    np.float32,
                ),
                classes=np.asarray([classes.index(o.find("name").text) for o in objects], np.int32),
                difficult=np.asarray([o.find("difficult").text == "1" for o in objects], bool),
            )
        )

    def image_bytes(i):
        with open(os.path.join(VOC2007, "JPEGImages", f"{REAL_IDS[i]}.jpg"), "rb") as f:
            return f.read()

    return DetectionSet("voc-by-hand", classes, tuple(annotations), image_bytes)


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_scale_and_buckets_on_hand_cases():
    # VOC's usual 500x375 landscape: short side 375 -> 600, long 800 (< 1000).
    assert inputs.resize_scale(375, 500, 600, 1000) == pytest.approx(1.6)
    assert inputs.resized_shape(375, 500, 600, 1000) == (600, 800)
    # 600 -> 608 (multiple of 32); 800 -> 896 (multiple of 128).
    assert inputs.bucket_shape(375, 500, 600, 1000) == (608, 896)
    assert inputs.bucket_shape(500, 375, 600, 1000) == (896, 608)
    # Very long: the long side caps the scale at 1000 / 2000; padded to 1024 (1000 -> 32s).
    assert inputs.resize_scale(100, 2000, 600, 1000) == pytest.approx(0.5)
    assert inputs.resized_shape(100, 2000, 600, 1000) == (50, 1000)
    assert inputs.bucket_shape(100, 2000, 600, 1000) == (64, 1024)
    assert inputs.bucket_shape(2000, 100, 600, 1000) == (1024, 64)
    # 16:10 reaches 960 -> rounds to 1024, the cap. Square images count as landscape.
    assert inputs.bucket_shape(375, 600, 600, 1000) == (608, 1024)
    assert inputs.bucket_shape(300, 300, 600, 1000) == (608, 640)
    with pytest.raises(ValueError, match="bucket_step=100.*size_divisor=32"):
        inputs.bucket_shape(375, 500, 600, 1000, 32, 100)


def test_boxes_and_flip_on_real_images():
    dataset = real_set()
    kwargs = dict(global_batch=1, seed=0, workers=2)
    epochs = 2 * dataset.num_images
    flipped = take(inputs.train_batches(dataset, flip=True, **kwargs), epochs)
    plain = take(inputs.train_batches(dataset, flip=False, **kwargs), epochs)
    seen = {True: 0, False: 0}
    for f, p in zip(flipped, plain, strict=True):
        i = int(p["image_index"][0])
        assert int(f["image_index"][0]) == i
        a = dataset.annotations[i]
        s = min(600 / min(a.height, a.width), 1000 / max(a.height, a.width))
        h, w = round(a.height * s), round(a.width * s)
        assert tuple(p["image_hw"][0]) == (h, w) == tuple(f["image_hw"][0])
        g = len(a.boxes)
        x1, y1, x2, y2 = (a.boxes[:, k].astype(np.float64) for k in range(4))
        expected = np.stack([(x1 - 1) * s, (y1 - 1) * s, x2 * s, y2 * s], axis=1)
        np.testing.assert_allclose(p["boxes"][0, :g], expected, rtol=1e-6)
        assert not p["boxes"][0, g:].any() and not p["box_valid"][0, g:].any()
        np.testing.assert_array_equal(p["classes"][0, :g], a.classes + 1)
        # The unflipped image is the file resized by OpenCV's bilinear, RGB, zero beyond.
        bgr = cv2.imread(os.path.join(VOC2007, "JPEGImages", f"{a.image_id}.jpg"))
        direct = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        np.testing.assert_array_equal(p["image"][0, :h, :w], direct)
        assert not p["image"][0, h:].any() and not p["image"][0, :, w:].any()
        was_flipped = not np.array_equal(f["boxes"], p["boxes"])
        seen[was_flipped] += 1
        if was_flipped:
            mirrored = np.stack([w - x2 * s, (y1 - 1) * s, w - (x1 - 1) * s, y2 * s], axis=1)
            np.testing.assert_allclose(f["boxes"][0, :g], mirrored, rtol=1e-6)
            np.testing.assert_array_equal(f["image"][0, :h, :w], np.fliplr(p["image"][0, :h, :w]))
            assert not f["image"][0, h:].any() and not f["image"][0, :, w:].any()
        else:
            np.testing.assert_array_equal(f["image"], p["image"])
    assert seen[True] and seen[False], seen
    # kangaroo_00001 by hand: 450x319 -> scale 600/319, 846 pixels wide; first box
    # (233, 89, 386, 262).
    first = next(p for p in plain if p["image_index"][0] == 0)
    assert tuple(first["image_hw"][0]) == (600, 846)
    s = 600 / 319
    np.testing.assert_allclose(first["boxes"][0, 0], [232 * s, 88 * s, 386 * s, 262 * s])
    assert first["boxes"][0, 0, 2] == pytest.approx(726.0188, abs=1e-3)


def test_batches_are_static_single_bucket_and_zero_padded():
    dataset = synthetic_set(MIXED, boxes_per_image=3)
    steps = inputs.train_steps_per_epoch(dataset, global_batch=2, **SMALL)
    # Buckets: 7 (30x40) -> 3 batches, 5 portrait -> 2, 6 (30x60) -> 3, 3 very long -> 1.
    assert steps == 9
    batches = take(inputs.train_batches(dataset, global_batch=2, workers=2, **SMALL), 2 * steps)
    assert [int(b["epoch"][0]) for b in batches] == [0] * steps + [1] * steps
    assert sorted(int(b["index"][0]) for b in batches[:steps]) == list(range(steps))
    shapes = set()
    for b in batches:
        assert b["image"].dtype == np.uint8 and b["boxes"].dtype == np.float32
        assert b["image_hw"].dtype == np.int32 and b["classes"].dtype == np.int32
        assert b["epoch"].dtype == np.int64 and b["index"].dtype == np.int64
        assert b["box_valid"].dtype == bool and b["difficult"].dtype == bool
        assert b["boxes"].shape == (2, 64, 4)
        shapes.add(b["image"].shape[1:3])
        for row, i in enumerate(b["image_index"]):
            a = dataset.annotations[i]
            assert b["image"].shape[1:3] == inputs.bucket_shape(a.height, a.width, **SMALL)
            h, w = b["image_hw"][row]
            assert (h, w) == inputs.resized_shape(a.height, a.width, 48, 80)
            assert b["image"][row, :h, :w].min() > 0  # resized from pixels in [1, 255]
            assert not b["image"][row, h:].any() and not b["image"][row, :, w:].any()
            assert b["box_valid"][row].sum() == 3
            np.testing.assert_array_equal(b["classes"][row, :3], a.classes + 1)
            np.testing.assert_array_equal(b["difficult"][row, :3], a.difficult)
            assert not b["classes"][row, 3:].any() and not b["boxes"][row, 3:].any()
            assert np.all(b["boxes"][row, :3, 2] <= w + 1e-4)
            assert np.all(b["boxes"][row, :3, 0] >= -1e-4)
    assert shapes == {(48, 64), (64, 48), (48, 80), (16, 80)}


def test_deterministic_and_seeded():
    dataset = synthetic_set(MIXED)
    kwargs = dict(global_batch=2, **SMALL)
    first = take(inputs.train_batches(dataset, workers=2, **kwargs), 12)
    again = take(inputs.train_batches(dataset, workers=0, **kwargs), 12)
    assert_same(first, again)
    other = take(inputs.train_batches(dataset, seed=1, workers=0, **kwargs), 12)
    assert any(
        not np.array_equal(a["image_index"], b["image_index"])
        for a, b in zip(first, other, strict=True)
    )
    # Epochs differ in their order.
    steps = inputs.train_steps_per_epoch(dataset, **kwargs)
    order = [
        tuple(b["image_index"]) for b in take(inputs.train_batches(dataset, **kwargs), 2 * steps)
    ]
    assert order[:steps] != order[steps:]


def test_resume_continues_the_uninterrupted_stream():
    dataset = synthetic_set(MIXED)
    kwargs = dict(global_batch=2, workers=2, **SMALL)
    steps = inputs.train_steps_per_epoch(
        dataset, **{k: v for k, v in kwargs.items() if k != "workers"}
    )
    stream = take(inputs.train_batches(dataset, **kwargs), 2 * steps + 2)
    # Mid-epoch, the last batch of epoch 0 (resumes at epoch 1), and inside epoch 1.
    for j in (0, 3, steps - 1, steps + 2):
        start = (int(stream[j]["epoch"][-1]), int(stream[j]["index"][-1]))
        resumed = take(inputs.train_batches(dataset, start=start, **kwargs), 2)
        assert_same(resumed, stream[j + 1 : j + 3])
    assert (int(stream[steps]["epoch"][0]), int(stream[steps]["index"][0])) == (1, 0)


def test_process_slices_concatenate_to_the_global_batch():
    dataset = synthetic_set(MIXED)
    kwargs = dict(global_batch=4, workers=2, **SMALL)
    whole = take(inputs.train_batches(dataset, **kwargs), 6)
    parts = [
        take(inputs.train_batches(dataset, process_index=p, process_count=2, **kwargs), 6)
        for p in range(2)
    ]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts, strict=True)]
    assert_same(joined, whole)
    assert parts[0][0]["image"].shape[0] == 2
    with pytest.raises(ValueError, match="global_batch=4.*process_count=3"):
        next(inputs.train_batches(dataset, global_batch=4, process_count=3, **SMALL))
    with pytest.raises(ValueError, match="global_batch=8"):
        next(inputs.train_batches(dataset, global_batch=8, **SMALL))


def test_test_batches_cover_every_image_once():
    dataset = synthetic_set(MIXED)
    kwargs = dict(global_batch=4, **SMALL)
    count = inputs.num_test_batches(dataset, **kwargs)
    assert count == 2 + 2 + 2 + 1  # buckets of 7, 5, 6 and 3 images
    whole = list(inputs.test_batches(dataset, workers=2, **kwargs))
    assert len(whole) == count
    parts = [
        list(inputs.test_batches(dataset, process_index=p, process_count=2, **kwargs))
        for p in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == count
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts, strict=True)]
    assert_same(joined, whole)
    indices = np.concatenate([b["image_index"] for b in whole])
    valid = np.concatenate([b["valid"] for b in whole])
    assert sorted(indices[valid]) == list(range(dataset.num_images))
    assert np.all(indices[~valid] == -1) and (~valid).sum() == 4 * count - dataset.num_images
    for b in whole:
        assert set(b) == {"image", "image_hw", "valid", "image_index", "scale"}
        assert b["image_index"].dtype == np.int32 and b["scale"].dtype == np.float32
        for row, i in enumerate(b["image_index"]):
            if i < 0:
                assert not b["image"][row].any() and b["scale"][row] == 1
                continue
            a = dataset.annotations[i]
            assert b["image"].shape[1:3] == inputs.bucket_shape(a.height, a.width, **SMALL)
            s = inputs.resize_scale(a.height, a.width, 48, 80)
            assert b["scale"][row] == np.float32(s)
            h, w = b["image_hw"][row]
            original = cv2.imdecode(np.frombuffer(dataset.image_bytes(i), np.uint8), 1)
            resized = cv2.resize(original, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(b["image"][row, :h, :w], resized[:, :, ::-1])


def test_max_boxes_truncation_is_counted():
    dataset = synthetic_set([(30, 40)] * 2, boxes_per_image=5)
    inputs.reset_truncated_count()
    batch = next(inputs.train_batches(dataset, global_batch=2, max_boxes=3, flip=False, **SMALL))
    assert inputs.truncated_count() == 2
    assert batch["boxes"].shape == (2, 3, 4) and batch["box_valid"].all()
    for row, i in enumerate(batch["image_index"]):
        a = dataset.annotations[i]
        s = inputs.resize_scale(a.height, a.width, 48, 80)
        np.testing.assert_allclose(batch["boxes"][row], inputs.to_resized(a.boxes[:3], s))
    inputs.reset_truncated_count()
    next(inputs.train_batches(dataset, global_batch=2, max_boxes=5, **SMALL))
    assert inputs.truncated_count() == 0


def test_to_original_inverts_the_ground_truth_map():
    rng = np.random.default_rng(0)
    height, width = 375, 500
    x = np.sort(rng.integers(1, width + 1, (50, 2)), axis=1)
    y = np.sort(rng.integers(1, height + 1, (50, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float64)
    for scale in (1.6, inputs.resize_scale(height, width, 600, 1000), 0.37):
        resized = inputs.to_resized(boxes, scale)
        x1, y1, x2, y2 = boxes[0]
        np.testing.assert_allclose(resized[0], np.multiply([x1 - 1, y1 - 1, x2, y2], scale))
        back = inputs.to_original(resized.astype(np.float32), scale, height, width)
        np.testing.assert_allclose(back, boxes, atol=1e-3)
    # Detections beyond the image are clipped to [1, width] x [1, height].
    outside = np.asarray([[-10.0, -5.0, 900.0, 700.0]])
    np.testing.assert_allclose(inputs.to_original(outside, 1.6, height, width), [[1, 1, 500, 375]])


def test_bad_image_names_the_image():
    dataset = synthetic_set([(30, 40)] * 2)
    broken = DetectionSet(
        dataset.name,
        dataset.classes,
        dataset.annotations,
        lambda i: b"not an image" if i == 1 else dataset.image_bytes(i),
    )
    with pytest.raises(inputs.ImageDecodeError, match="synthetic_001.*replace the file"):
        take(inputs.train_batches(broken, global_batch=1, workers=2, **SMALL), 2)
    a = dataset.annotations[0]
    wrong = DetectionSet(
        dataset.name,
        dataset.classes,
        (Annotation(a.image_id, 50, a.height, a.boxes, a.classes, a.difficult),),
        dataset.image_bytes,
    )
    with pytest.raises(inputs.ImageDecodeError, match="40x30 pixels but annotated as 50x30"):
        next(inputs.test_batches(wrong, global_batch=1, **SMALL))
