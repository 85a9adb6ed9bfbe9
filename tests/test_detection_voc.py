"""VOC detection data and scoring: the devkit and TFDS readers, VOC AP, the score command,
proposal files and the detections picture."""

import io
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from ssl_jax.config_lib import ConfigError
from ssl_jax.detection import picture, proposals, score, voc, voc_eval
from ssl_jax.detection.voc import Annotation, DetectionSet

SHARED_VOC = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "detection", "VOCdevkit")
)


@pytest.fixture(scope="module")
def shared_devkit():
    if not os.path.isdir(os.path.join(SHARED_VOC, "VOC2007", "ImageSets", "Main")):
        pytest.skip(f"{SHARED_VOC} is not present")
    return SHARED_VOC


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_devkit(root, images: dict, split: str = "test", listed=None) -> str:
    """A VOCdevkit/VOC2007 under root: images = {id: (width, height, objects, with_jpeg)},
    objects = [(name, (xmin, ymin, xmax, ymax), difficult or None)]."""
    voc_dir = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc_dir, sub), exist_ok=True)
    for image_id, (width, height, objects, with_jpeg) in images.items():
        parts = [f"<annotation><size><width>{width}</width><height>{height}</height></size>"]
        for name, box, difficult in objects:
            flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
            coords = "".join(
                f"<{k}>{v}</{k}>"
                for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
            )
            parts.append(f"<object><name>{name}</name>{flag}<bndbox>{coords}</bndbox></object>")
        parts.append("</annotation>")
        with open(os.path.join(voc_dir, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write("".join(parts))
        if with_jpeg:
            with open(os.path.join(voc_dir, "JPEGImages", f"{image_id}.jpg"), "wb") as f:
                f.write(jpeg(width, height))
    with open(os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(listed if listed is not None else images) + "\n")
    return os.path.join(root, "VOCdevkit")


# ----------------------------------------------------------------------------------------------
# read_devkit


def test_read_devkit_shared_set(shared_devkit):
    test = voc.read_devkit(shared_devkit, "test", classes="auto")
    trainval = voc.read_devkit(os.path.join(shared_devkit, "VOC2007"), "trainval", classes="auto")
    assert (test.num_images, trainval.num_images) == (91, 273)
    assert test.classes == trainval.classes == ("kangaroo", "raccoon")
    assert test.skipped == dict.fromkeys(voc.SKIP_REASONS, 0)
    listed = open(os.path.join(shared_devkit, "VOC2007", "ImageSets", "Main", "test.txt")).read()
    assert [a.image_id for a in test.annotations] == listed.split()
    # kangaroo_00001.xml: 450x319, two kangaroos (233, 89, 386, 262) and (134, 105, 341, 253).
    first = {a.image_id: a for a in trainval.annotations + test.annotations}["kangaroo_00001"]
    assert (first.width, first.height) == (450, 319)
    np.testing.assert_array_equal(first.boxes, [[233, 89, 386, 262], [134, 105, 341, 253]])
    assert first.boxes.dtype == np.float32 and first.classes.tolist() == [0, 0]
    assert first.difficult.tolist() == [False, False]
    assert Image.open(io.BytesIO(test.image_bytes(0))).size == (
        test.annotations[0].width,
        test.annotations[0].height,
    )
    # Default classes are VOC's 20, which do not hold these names.
    with pytest.raises(ConfigError, match=r"'(kangaroo|raccoon)'.*config\.data\.classes"):
        voc.read_devkit(shared_devkit, "test")


def test_read_devkit_bad_inputs(tmp_path, caplog):
    images = {
        "a": (100, 80, [("dog", (10, 20, 30, 40), 0), ("cat", (5, 5, 9, 9), 1)], True),
        "empty": (50, 50, [], True),  # a valid test image
        "out": (100, 80, [("dog", (-5, 70, 120, 90), None), ("dog", (200, 1, 300, 5), 0)], True),
        "flipped": (100, 80, [("cat", (30, 5, 20, 10), 0)], True),
        "nojpeg": (100, 80, [("dog", (1, 1, 5, 5), 0)], False),
    }
    devkit = write_devkit(str(tmp_path), images)
    with caplog.at_level("WARNING"):
        dataset = voc.read_devkit(devkit, "test")
    assert "nojpeg.jpg" in caplog.text
    assert dataset.classes == voc.VOC_CLASSES
    by_id = {a.image_id: a for a in dataset.annotations}
    assert list(by_id) == ["a", "empty", "out", "flipped"]
    assert dataset.skipped == {
        "missing_image": 1,
        "box_clipped": 1,  # (-5, 70, 120, 90) -> (1, 70, 100, 80)
        "box_dropped": 2,  # wholly outside; xmax < xmin
        "no_objects": 2,  # "empty", and "flipped" once its box is dropped
    }
    dog, cat = voc.VOC_CLASSES.index("dog"), voc.VOC_CLASSES.index("cat")
    np.testing.assert_array_equal(by_id["a"].boxes, [[10, 20, 30, 40], [5, 5, 9, 9]])
    assert by_id["a"].classes.tolist() == [dog, cat]
    assert by_id["a"].difficult.tolist() == [False, True]
    np.testing.assert_array_equal(by_id["out"].boxes, [[1, 70, 100, 80]])
    assert by_id["out"].difficult.tolist() == [False]  # no <difficult>: 0
    assert by_id["empty"].boxes.shape == (0, 4) and by_id["empty"].classes.shape == (0,)
    assert dataset.image_bytes(1)[:2] == b"\xff\xd8"

    trained = voc.with_objects(dataset)
    assert [a.image_id for a in trained.annotations] == ["a", "out"]
    assert trained.skipped["no_objects_dropped"] == 2
    assert trained.image_bytes(1) == dataset.image_bytes(2)

    auto = voc.read_devkit(devkit, "test", classes="auto")
    assert auto.classes == ("cat", "dog")  # VOC's order
    with pytest.raises(ConfigError, match=r"a\.xml: object class 'cat'.*my\.key\.classes.*'auto'"):
        voc.read_devkit(devkit, "test", classes=["dog"], config_key="my.key")


def test_read_devkit_broken_files(tmp_path):
    images = {"a": (10, 10, [("dog", (1, 1, 5, 5), 0)], True)}
    devkit = write_devkit(str(tmp_path / "missing"), images, listed=["a", "ghost"])
    with pytest.raises(FileNotFoundError, match=r"ghost\.xml"):
        voc.read_devkit(devkit, "test")
    devkit = write_devkit(str(tmp_path / "broken"), images)
    xml = os.path.join(devkit, "VOC2007", "Annotations", "a.xml")
    with open(xml, "w") as f:
        f.write("<annotation><object><name>dog</name>")
    with pytest.raises(ValueError, match=r"a\.xml is not a VOC annotation"):
        voc.read_devkit(devkit, "test")
    with open(xml, "w") as f:
        f.write("<annotation><object><name>dog</name><bndbox><xmin>x</xmin></bndbox></object>")
    with pytest.raises(ValueError, match=r"a\.xml"):
        voc.read_devkit(devkit, "test")
    with pytest.raises(FileNotFoundError, match=r"my\.split='val'"):
        voc.read_devkit(devkit, "val", config_key="my")
    with pytest.raises(FileNotFoundError, match="not a VOCdevkit"):
        voc.read_devkit(str(tmp_path), "test")


def test_union(tmp_path):
    a = voc.read_devkit(write_devkit(str(tmp_path / "a"), {"x": (9, 9, [], True)}), "test")
    b = voc.read_devkit(write_devkit(str(tmp_path / "b"), {"y": (7, 7, [], True)}), "test")
    both = voc.union(a, b)
    assert [x.image_id for x in both.annotations] == ["x", "y"]
    assert both.skipped["no_objects"] == 2
    assert both.image_bytes(1) == b.image_bytes(0)
    with pytest.raises(ValueError, match="in both"):
        voc.union(a, a)
    auto = voc.read_devkit(
        write_devkit(str(tmp_path / "c"), {"z": (7, 7, [], True)}), "test", classes="auto"
    )
    with pytest.raises(ValueError, match="classes differ"):
        voc.union(a, auto)


def test_evenly_spaced_keeps_every_class_and_its_images(shared_devkit):
    test = voc.read_devkit(shared_devkit, "test", classes="auto")  # raccoons, then kangaroos
    few = voc.evenly_spaced(test, 4)
    assert [a.image_id for a in few.annotations] == [
        test.annotations[i].image_id for i in (0, 22, 45, 68)
    ]
    assert {int(c) for a in few.annotations for c in a.classes} == {0, 1}
    assert few.image_bytes(3) == test.image_bytes(68)
    assert few.name == test.name + "[4 of 91]" and few.classes == test.classes
    assert voc.evenly_spaced(test, 0) is test and voc.evenly_spaced(test, 500) is test
    with pytest.raises(ValueError, match="count=-1"):
        voc.evenly_spaced(test, -1)


# ----------------------------------------------------------------------------------------------
# read_tfds


def test_tfds_box_round_trip(shared_devkit):
    # TFDS's voc builder stores float32 (ymin / height, xmin / width, ymax / height, xmax / width).
    bbox = np.asarray([[240 / 500, 48 / 353, 371 / 500, 195 / 353]], np.float32)
    np.testing.assert_array_equal(voc.tfds_box_to_voc(bbox, 353, 500), [[48, 240, 195, 371]])
    for a in voc.read_devkit(shared_devkit, "trainval", classes="auto").annotations:
        x1, y1, x2, y2 = a.boxes.astype(np.float64).T
        h, w = float(a.height), float(a.width)
        stored = np.stack([y1 / h, x1 / w, y2 / h, x2 / w], axis=1).astype(np.float32)
        np.testing.assert_array_equal(voc.tfds_box_to_voc(stored, a.width, a.height), a.boxes)


@pytest.fixture(scope="module")
def voc_metadata(tmp_path_factory):
    """A data_dir holding only voc/2007's metadata, so the mocked builder counts as prepared."""
    import tensorflow_datasets as tfds

    root = str(tmp_path_factory.mktemp("tfds_voc"))
    builder = tfds.builder("voc/2007", data_dir=root)
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)
    return root


def test_read_tfds_matches_the_devkit(tmp_path, voc_metadata):
    """Examples made as TFDS's builder makes them from a devkit read back as the devkit's."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    images = {
        "000005": (
            353,
            500,
            [("chair", (263, 211, 324, 339), 0), ("chair", (5, 244, 67, 374), 1)],
            True,
        ),
        "000007": (500, 333, [("car", (141, 50, 500, 330), 0)], True),
        "000009": (
            500,
            375,
            [("horse", (69, 172, 270, 330), 0), ("person", (150, 141, 229, 284), 0)],
            True,
        ),
    }
    devkit = voc.read_devkit(write_devkit(str(tmp_path), images), "test")
    labels = {n: i for i, n in enumerate(voc.VOC_CLASSES)}  # TFDS's voc label order is VOC's
    examples = []
    for image_id, (width, height, objects, _) in images.items():
        boxes = np.asarray([b for _, b, _ in objects], np.float64)
        scale = np.asarray([height, width, height, width], np.float64)
        examples.append({
            "image": jpeg(width, height),
            "image/filename": f"{image_id}.jpg",
            "objects": {
                "bbox": (boxes[:, [1, 0, 3, 2]] / scale).astype(np.float32),
                "label": np.asarray([labels[n] for n, _, _ in objects], np.int64),
                "is_difficult": np.asarray([d == 1 for _, _, d in objects]),
            },
        })  # fmt: skip
    signature = {
        "image": tf.TensorSpec([], tf.string),
        "image/filename": tf.TensorSpec([], tf.string),
        "objects": {
            "bbox": tf.TensorSpec([None, 4], tf.float32),
            "label": tf.TensorSpec([None], tf.int64),
            "is_difficult": tf.TensorSpec([None], tf.bool),
        },
    }
    splits_read = []

    def as_dataset(self, split, *args, **kwargs):
        splits_read.append(split)
        rows = examples if split == "test" else examples[:1] if split == "train" else examples[1:]
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=voc_metadata):
        test = voc.read_tfds("voc/2007", "test", data_dir=voc_metadata)
        trainval = voc.read_tfds("voc/2007", data_dir=voc_metadata, classes="auto")
        with pytest.raises(ConfigError, match=r"'chair'.*cfg\.classes"):
            voc.read_tfds(
                "voc/2007", "test", data_dir=voc_metadata, classes=["car"], config_key="cfg"
            )
    assert splits_read[:3] == ["test", "train", "validation"]
    assert test.name == "tfds:voc/2007:test" and test.classes == voc.VOC_CLASSES
    for mine, theirs in zip(test.annotations, devkit.annotations, strict=True):
        assert (mine.image_id, mine.width, mine.height) == (
            theirs.image_id,
            theirs.width,
            theirs.height,
        )
        np.testing.assert_array_equal(mine.boxes, theirs.boxes)
        np.testing.assert_array_equal(mine.classes, theirs.classes)
        np.testing.assert_array_equal(mine.difficult, theirs.difficult)
    assert test.image_bytes(2) == examples[2]["image"]
    assert trainval.classes == ("car", "chair", "horse", "person")
    assert [a.image_id for a in trainval.annotations] == ["000005", "000007", "000009"]


def test_read_tfds_not_prepared(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)tfds build voc/2007 --data_dir=.*vocdevkit"):
        voc.read_tfds("voc/2007", "test", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------
# VOC AP


def gt(image_id, boxes, classes, difficult=None, size=(100, 100)) -> Annotation:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    flags = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return Annotation(image_id, size[0], size[1], boxes, np.asarray(classes, np.int32), flags)


def det(image_id, box, score, name="cat"):
    return {"image_id": image_id, "class": name, "score": score, "box": list(box)}


CLASSES = ("cat", "dog")
A, B = (10, 10, 50, 50), (60, 60, 90, 90)
FAR = (1, 80, 5, 90)


def ap(detections, annotations, name="cat"):
    result = voc_eval.evaluate(detections, annotations, CLASSES)["classes"][name]
    return result["ap"], result["ap_all_points"]


def test_voc_ap_rules():
    # recall (0.5, 0.5, 1), precision (1, 0.5, 2/3): 11-point (6 * 1 + 5 * 2/3) / 11; all-points
    # 0.5 * 1 + 0.5 * 2/3.
    recall, precision = np.asarray([0.5, 0.5, 1.0]), np.asarray([1.0, 0.5, 2 / 3])
    assert voc_eval.voc_ap(recall, precision, use_07_metric=True) == pytest.approx(28 / 33)
    assert voc_eval.voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 6)
    # Recall 0.5 at precision 1 only: 6 of the 11 points; half the area.
    assert voc_eval.voc_ap([0.5], [1.0], True) == pytest.approx(6 / 11)
    assert voc_eval.voc_ap([0.5], [1.0], False) == pytest.approx(0.5)
    assert voc_eval.voc_ap([], [], True) == voc_eval.voc_ap([], [], False) == 0.0


def test_evaluate_hand_computed_cases():
    images = [gt("1", [A, B], [0, 0]), gt("2", [A], [1]), gt("3", [], [])]
    # A perfect detector.
    perfect = [det("1", A, 0.9), det("1", B, 0.8), det("2", A, 0.7, "dog")]
    result = voc_eval.evaluate(perfect, images, CLASSES)
    assert (result["mAP"], result["mAP_all_points"]) == pytest.approx((100.0, 100.0))
    assert result["classes"]["cat"] == pytest.approx({"ap": 100, "ap_all_points": 100, "num_gt": 2})
    # A false positive ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1, so the
    # best precision at any recall is 2/3 (both rules).
    assert ap([det("1", FAR, 0.99)] + perfect, images) == pytest.approx((200 / 3, 200 / 3))
    # A duplicate is a false positive: ranks TP, FP, TP (the case of test_voc_ap_rules).
    duplicate = [det("1", A, 0.9), det("1", A, 0.85), det("1", B, 0.8)]
    assert ap(duplicate, images) == pytest.approx((100 * 28 / 33, 100 * 5 / 6))
    # Only one of the two boxes found: 11-point 6/11, all-points 1/2.
    assert ap([det("1", A, 0.9)], images) == pytest.approx((100 * 6 / 11, 50.0))
    # A detection on an image without objects (or without a cat) is a false positive: ranks
    # FP, FP, TP, TP give precision 1/3 at recall 1/2 and 1/2 at recall 1: 50 (both rules).
    on_empty = [det("3", A, 0.95), det("2", A, 0.94), det("1", A, 0.9), det("1", B, 0.8)]
    assert ap(on_empty, images) == pytest.approx((50.0, 50.0))
    # No detections at all.
    assert ap([], images) == (0.0, 0.0)


def test_evaluate_difficult_boxes():
    images = [gt("1", [A, B], [0, 0], difficult=[False, True])]
    # Matched to the difficult box: neither TP nor FP, before and after the true positive.
    for scores in ((0.9, 0.8), (0.8, 0.9)):
        found = [det("1", B, scores[0]), det("1", A, scores[1])]
        assert ap(found, images) == pytest.approx((100.0, 100.0))
    result = voc_eval.evaluate([det("1", B, 0.9)], images, CLASSES)
    assert result["classes"]["cat"]["num_gt"] == 1 and result["classes"]["cat"]["ap"] == 0.0
    # A class with only difficult boxes (or none) has no AP and stays out of the means.
    assert result["classes"]["dog"] == {"ap": None, "ap_all_points": None, "num_gt": 0}
    assert result["mAP"] == 0.0
    only_difficult = [gt("1", [A], [1], difficult=[True])]
    result = voc_eval.evaluate([det("1", A, 0.9, "dog")], only_difficult, CLASSES)
    assert result["mAP"] is None and result["classes"]["dog"]["ap"] is None


def test_evaluate_iou_rule():
    images = [gt("1", [(1, 1, 10, 10)], [0])]
    # Inclusive pixels: (1, 1, 10, 20) is 10 x 20 and covers the 10 x 10 box: IoU exactly 0.5,
    # not above the threshold.
    assert ap([det("1", (1, 1, 10, 20), 0.9)], images) == (0.0, 0.0)
    # (1, 1, 10, 19): IoU 100 / 190 > 0.5 with the +1 (81 / 162 = 0.5 without it).
    assert ap([det("1", (1, 1, 10, 19), 0.9)], images) == pytest.approx((100.0, 100.0))
    assert voc_eval.evaluate([det("1", (1, 1, 10, 19), 0.9)], images, CLASSES, 0.55)["mAP"] == 0.0


def test_evaluate_rejects_bad_detections():
    images = [gt("000005", [A], [0])]
    with pytest.raises(ValueError, match=r"image_id '5'.*000005"):
        voc_eval.evaluate([det(5, A, 0.9)], images, CLASSES)
    with pytest.raises(ValueError, match=r"class 'bird'"):
        voc_eval.evaluate([det("000005", A, 0.9, "bird")], images, CLASSES)
    with pytest.raises(ValueError, match="box"):
        voc_eval.evaluate([{"image_id": "000005", "class": "cat", "score": 1.0}], images, CLASSES)
    with pytest.raises(ValueError, match="4 finite"):
        voc_eval.evaluate([det("000005", (1, 2, 3), 0.9)], images, CLASSES)


# ----------------------------------------------------------------------------------------------
# The score command


def test_score_command(shared_devkit, tmp_path, capsys):
    devkit = os.path.join(shared_devkit, "VOC2007")
    test = voc.read_devkit(devkit, "test", classes="auto")
    truth = [
        {"image_id": a.image_id, "class": test.classes[c], "score": 0.9, "box": box.tolist()}
        for a in test.annotations
        for box, c in zip(a.boxes, a.classes, strict=True)
    ]
    run = lambda name, dets, *extra: score.main([
        f"--devkit={devkit}", "--split=test", f"--detections={tmp_path / name}.json",
        f"--out={tmp_path / name}_result.json", *extra,
    ])  # fmt: skip

    score.write_detections(str(tmp_path / "perfect.json"), truth)
    assert score.read_detections(str(tmp_path / "perfect.json")) == truth
    assert run("perfect", truth) == 0
    result = json.load(open(tmp_path / "perfect_result.json"))
    assert (result["mAP"], result["mAP_all_points"]) == pytest.approx((100.0, 100.0))
    assert set(result["classes"]) == {"kangaroo", "raccoon"}
    assert result["classes"]["raccoon"]["num_gt"] == sum(d["class"] == "raccoon" for d in truth)
    out = capsys.readouterr().out
    assert "| raccoon | 100.00 | 100.00 |" in out and "| **mean** | **100.00** |" in out

    # Raccoons: every box found, moved by one pixel, plus lower-scored duplicates: still 100.
    # Kangaroos: the first m of n boxes found, the others missed by far-off boxes scored lower:
    # precision 1 up to recall m / n, which lies in [0.5, 0.6): 6 of 11 points.
    raccoons = [d for d in truth if d["class"] == "raccoon"]
    kangaroos = [d for d in truth if d["class"] == "kangaroo"]
    n = len(kangaroos)
    m = -(-11 * n // 20)  # ceil(0.55 n)
    assert 0.5 <= m / n < 0.6
    shifted = [{**d, "box": [v + 1 for v in d["box"]]} for d in raccoons]
    duplicates = [{**d, "score": 0.2} for d in raccoons]
    missed = [{**d, "score": 0.1, "box": [1, 1, 3, 3]} for d in kangaroos[m:]]
    score.write_detections(
        str(tmp_path / "jitter.json"), shifted + duplicates + kangaroos[:m] + missed
    )
    assert run("jitter", None) == 0
    result = json.load(open(tmp_path / "jitter_result.json"))
    assert result["classes"]["raccoon"]["ap"] == pytest.approx(100.0)
    assert result["classes"]["kangaroo"]["ap"] == pytest.approx(100 * 6 / 11)
    assert result["classes"]["kangaroo"]["ap_all_points"] == pytest.approx(100 * m / n)
    assert result["mAP"] == pytest.approx((100 + 100 * 6 / 11) / 2)

    # Bad input: status 2 and one line.
    capsys.readouterr()
    assert run("absent", None) == 2
    assert run("perfect", None, "--classes=raccoon") == 2  # kangaroos are annotated too
    assert score.main(["--split=test"]) == 2
    (tmp_path / "other.json").write_text(json.dumps([{**truth[0], "image_id": "nope"}]))
    assert run("other", None) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(
        e.startswith("python -m ssl_jax.evals.detection score") for e in errors
    )
    assert "absent.json" in errors[0] and "'kangaroo'" in errors[1] and "--devkit" in errors[2]
    assert "'nope'" in errors[3]


# ----------------------------------------------------------------------------------------------
# Proposals


def small_set(ids) -> DetectionSet:
    annotations = tuple(gt(i, [], []) for i in ids)
    return DetectionSet("small", CLASSES, annotations, lambda i: b"")


def test_proposals_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["000005", "000007", "000009"]
    counts = [5, 2, 0]
    boxes, scores = [], []
    for n in counts:
        corner = rng.uniform(0, 50, (n, 2)).round()
        boxes.append(np.concatenate([corner, corner + rng.uniform(1, 40, (n, 2)).round()], 1))
        scores.append(rng.permutation(n).astype(np.float32))
    path = str(tmp_path / "proposals.pkl")
    proposals.save(path, ids, boxes, scores)
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    np.testing.assert_array_equal(raw["boxes"][0], boxes[0] - [0, 0, 1, 1])  # 0-based inclusive

    loaded, valid = proposals.load(path, small_set(["000009", "000005", "000007"]), max_proposals=3)
    assert loaded.shape == (3, 3, 4) and loaded.dtype == np.float32
    assert valid.tolist() == [[False] * 3, [True] * 3, [True, True, False]]
    top = np.argsort(-scores[0], kind="stable")[:3]
    np.testing.assert_array_equal(loaded[1], boxes[0][top])
    np.testing.assert_array_equal(loaded[2, :2], boxes[1][np.argsort(-scores[1])])
    assert not loaded[0].any() and not loaded[2, 2].any()

    # All of them back, in the file's order without scores; ids as ints match "000005".
    proposals.save(path, [5, 7, 9], boxes)
    loaded, valid = proposals.load(path, small_set(ids), max_proposals=6)
    for row, b in enumerate(boxes):
        np.testing.assert_array_equal(loaded[row, valid[row]], b)
    # Detectron's key "indexes"; extra images in the file are ignored; inclusive x2, y2 + 1.
    with open(path, "wb") as f:
        pickle.dump({"boxes": boxes, "scores": scores, "indexes": ids}, f, protocol=2)
    loaded, valid = proposals.load(path, small_set(["7"]), max_proposals=2)
    np.testing.assert_array_equal(loaded[0], boxes[1][np.argsort(-scores[1])] + [0, 0, 1, 1])


def test_proposals_errors(tmp_path):
    path = str(tmp_path / "p.pkl")
    proposals.save(path, ["000005", "000007"], [np.ones((1, 4))] * 2)
    with pytest.raises(ValueError, match=r"2 of the 3 images.*'000001', '000002'.*another"):
        proposals.load(path, small_set(["000001", "000002", "000005"]), max_proposals=4)
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"bad\.pkl is not a proposals pickle"):
        proposals.load(str(tmp_path / "bad.pkl"), small_set(["000005"]), max_proposals=4)
    for data, message in (
        ({"boxes": []}, "'ids'"),
        ([1, 2], "holds list"),
        ({"boxes": [np.ones((2, 3))], "ids": [5]}, r"shape \(2, 3\)"),
        ({"boxes": [np.ones((2, 4))], "ids": [5], "scores": [np.ones(3)]}, "2 boxes and 3 scores"),
        ({"boxes": [np.ones((2, 4))], "ids": [5, 7]}, "one entry per image"),
    ):
        (tmp_path / "x.pkl").write_bytes(pickle.dumps(data, protocol=2))
        with pytest.raises(ValueError, match=message):
            proposals.load(str(tmp_path / "x.pkl"), small_set(["000005"]), max_proposals=4)


# ----------------------------------------------------------------------------------------------
# Picture


def test_picture(tmp_path):
    images = [np.full((40, 60, 3), 30 * k, np.uint8) for k in range(3)] + [
        np.zeros((50, 20, 3), np.uint8)
    ]
    detections = [
        [((5, 5, 30, 30), "raccoon", 0.93), ((1, 1, 10, 10), "kangaroo", 0.2)],
        [],
        [((0, 0, 59, 39), "raccoon", 0.5)] * 9,
        [((2, 2, 15, 45), "kangaroo", 0.7)],
    ]
    path = str(tmp_path / "out" / "detections.png")
    picture.draw(images, detections, path, columns=3, top=2, title="test")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 60, 2 * 50 + 20)
        grid = np.asarray(im.convert("RGB"))
    assert (grid[20 + 5, 5:31] != 30 * 0).any()  # a box was drawn on the first image
    picture.draw(images[:1], detections[:1], path)
    assert Image.open(path).size == (60, 40)
    with pytest.raises(ValueError, match="uint8"):
        picture.draw([np.zeros((4, 4), np.float32)], [[]], path)


def test_prepare_tfds_never_downloads_unless_asked(tmp_path):
    """Without ``download`` an unprepared voc/2007 is an error saying how to prepare it, and
    nothing is written where it looked."""
    with pytest.raises(ConfigError, match="Nothing is downloaded here"):
        voc.prepare_tfds("voc/2007", str(tmp_path / "tfds"))
    assert not any((tmp_path / "tfds").rglob("*.tfrecord*"))
