"""The SVM benchmark takes VOC rows in image-id order (FAIR's order), whatever the source stores:
TFDS voc/2007 (stored shuffled) and a VOCdevkit whose class files are not sorted."""

import os

import ml_collections
import numpy as np
import pytest

from ssl_jax.data import labelled
from ssl_jax.evals import base, svm, svm_benchmark

CLASSES = labelled.VOC_CLASSES


def voc_labels(rows: dict[str, dict[str, int]]) -> dict[str, np.ndarray]:
    """{image id: {class: 1 | -1}} -> {image id: (20,) int8 row} (unnamed classes absent)."""
    out = {}
    for image_id, marks in rows.items():
        row = np.zeros(len(CLASSES), np.int8)
        for name, value in marks.items():
            row[CLASSES.index(name)] = value
        out[image_id] = row
    return out


# Rows in the order the sources store them; no source order is id order.
TFDS_ORDER = {
    "train": ("000012", "000002", "000009"),
    "validation": ("000007", "000001", "000010"),
}
TRAINVAL = voc_labels({
    "000001": {"dog": 1}, "000002": {"cat": 1, "person": -1}, "000007": {"car": 1},
    "000009": {"dog": -1, "horse": 1}, "000010": {"sheep": 1}, "000012": {"person": 1},
})  # fmt: skip
DEVKIT_ORDER = ("000008", "000003", "000011", "000004")
TEST = voc_labels({
    "000003": {"dog": 1}, "000004": {"cat": -1, "car": 1}, "000008": {"person": 1},
    "000011": {"horse": 1, "dog": -1},
})  # fmt: skip


@pytest.fixture
def trainval(tmp_path, monkeypatch):
    """VOC07 trainval from TFDS, its splits streamed in TFDS_ORDER (only metadata on disk)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("voc/2007", data_dir=str(tmp_path))
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)

    class Stream:
        def __init__(self, split):
            self.split = split

        def as_numpy_iterator(self):
            for image_id in TFDS_ORDER[self.split]:
                row = TRAINVAL[image_id]
                yield {
                    "image": b"",
                    "image/filename": f"{image_id}.jpg".encode(),
                    "labels": np.flatnonzero(row != 0),
                    "labels_no_difficult": np.flatnonzero(row == 1),
                }

    monkeypatch.setattr(labelled, "stored_order", lambda builder, split, decoders: Stream(split))
    return labelled.voc07_tfds("trainval", data_dir=str(tmp_path))


@pytest.fixture
def test_set(tmp_path):
    """VOC07 test from a VOCdevkit whose class files list the images in DEVKIT_ORDER."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    devkit_value = {1: "1", 0: "-1", -1: "0"}
    for c, name in enumerate(CLASSES):
        lines = [f"{i} {devkit_value[int(TEST[i][c])]}" for i in DEVKIT_ORDER]
        (main / f"{name}_test.txt").write_text("\n".join(lines) + "\n")
    for image_id in DEVKIT_ORDER:
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"")
    return labelled.vocdevkit(str(tmp_path / "VOCdevkit"), "test")


class FakeStored:
    """Stored features of a labelled set: one layer whose row is (numeric image id, 1)."""

    def __init__(self, dataset):
        self.ids = [str(i) for i in dataset.ids]
        self.labels = np.asarray(dataset.labels)
        self.ok = np.ones(len(self.ids), bool)
        self.meta = {
            "dataset": dataset.name,
            "class_names": list(dataset.class_names),
            "layers": {"pool5": 2},
        }
        numbers = [float(i.rsplit("/", 1)[-1]) for i in self.ids]
        self.rows = np.stack([numbers, np.ones(len(numbers))], 1).astype(np.float32)

    def layer(self, name):
        return self.rows


def check_id_order(features, labels, expected):
    """Rows in image-id order, each with its own image's labels."""
    ids = [f"{int(v):06d}" for v in features[:, 0]]
    assert ids == sorted(expected), f"rows not in image-id order: {ids}"
    np.testing.assert_array_equal(labels, np.stack([expected[i] for i in ids]))


def test_sources_store_voc_rows_out_of_id_order(trainval, test_set):
    assert trainval.ids.tolist() == [f"{s}/{i}" for s in TFDS_ORDER for i in TFDS_ORDER[s]]
    assert test_set.ids.tolist() == list(DEVKIT_ORDER)
    for dataset, expected in ((trainval, TRAINVAL), (test_set, TEST)):
        for image_id, row in zip(dataset.ids, dataset.labels, strict=True):
            np.testing.assert_array_equal(row, expected[image_id.rsplit("/", 1)[-1]])


def test_svm_rows_are_in_image_id_order_with_their_labels(trainval, test_set):
    for dataset, expected in ((trainval, TRAINVAL), (test_set, TEST)):
        stored = FakeStored(dataset)
        stored.ok[1] = False  # an undecodable image is left out; the others keep their order
        rows, skipped = svm_benchmark.svm_rows(stored, "train")
        assert skipped == 1 and len(rows) == len(expected) - 1
        kept = {k: v for k, v in expected.items() if k != stored.ids[1].rsplit("/", 1)[-1]}
        check_id_order(stored.rows[rows], stored.labels[rows], kept)
        # The rows as stored would fail the same check.
        everything = np.flatnonzero(stored.ok)
        with pytest.raises(AssertionError, match="not in image-id order"):
            check_id_order(stored.rows[everything], stored.labels[everything], kept)


def test_other_sets_keep_their_order():
    ids = ["train/2008_000002", "validation/2007_000027", "train/2007_000005"]
    for name in ("folder:/data/x", "filelist:/data/list.txt", "demo/120", "tfds:voc/2007/test"):
        np.testing.assert_array_equal(labelled.svm_row_order(name, ids), np.arange(3))
    # Any VOC year, ids sorted as strings (FAIR's sorted()), the TFDS split left out.
    np.testing.assert_array_equal(labelled.svm_row_order("voc2012/trainval", ids), [2, 1, 0])


def _benchmark(evaluation, trainval, test_set, monkeypatch):
    """An SvmBenchmark on FakeStored features, with the SVM solvers replaced by a recorder."""
    config = svm_benchmark.defaults(evaluation)
    task = type("Task", (), {})()
    task.name = "jigsaw"
    task.config = ml_collections.ConfigDict({"model": {"name": "resnet"}})
    benchmark = svm_benchmark.SvmBenchmark(config, task)
    stores = {"train": FakeStored(trainval), "test": FakeStored(test_set)}
    monkeypatch.setattr(benchmark, "_features", lambda which, weights, workdir: stores[which])
    seen = {}

    def record(x_train, y_train, x_test, y_test, **kwargs):
        seen.update(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        if evaluation == "voc07_svm":
            return {"mAP": 0.5}
        return {"ks": {"1": {"mean": 0.5, "std": 0.0}}}

    monkeypatch.setattr(svm, "evaluate", record)
    monkeypatch.setattr(svm, "low_shot", record)
    return benchmark, seen


@pytest.mark.parametrize("evaluation", ["voc07_svm", "voc07_lowshot"])
def test_svms_see_voc_rows_in_image_id_order(evaluation, trainval, test_set, tmp_path, monkeypatch):
    benchmark, seen = _benchmark(evaluation, trainval, test_set, monkeypatch)
    weights = base.Weights(variables={}, step=None, description="fake")
    benchmark.run(weights, str(tmp_path / "run"))
    check_id_order(seen["x_train"], seen["y_train"], TRAINVAL)
    check_id_order(seen["x_test"], seen["y_test"], TEST)

    # A benchmark that left the rows in their stored order fails the check.
    monkeypatch.setattr(labelled, "svm_row_order", lambda name, ids: np.arange(len(ids)))
    benchmark.run(weights, str(tmp_path / "stored_order"))
    with pytest.raises(AssertionError, match="not in image-id order"):
        check_id_order(seen["x_train"], seen["y_train"], TRAINVAL)
