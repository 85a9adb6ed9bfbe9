"""Labelled evaluation sets: VOC07 (TFDS, VOCdevkit), single-label folders and lists, demo."""

import os
import shutil
import socket
import types

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_jax.data import decode as decode_lib
from ssl_jax.data import labelled as datasets

CLASSES = datasets.VOC_CLASSES


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth (H, W, 3) uint8 image with some texture, distinct per seed."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 64])
    noise = rng.integers(0, 40, size=(3, height, width))
    return np.clip(base + noise, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def save(path, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def read_all(dataset, **kwargs) -> dict[str, np.ndarray]:
    elements = list(dataset.images(**kwargs).as_numpy_iterator())
    if not elements:
        return {"position": np.zeros(0, np.int64)}
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


# ----------------------------------------------------------------------------------------------
# VOC2007 from TFDS, under tfds.testing.mock_data (no files, no network).


@pytest.fixture(scope="module")
def voc_metadata(tmp_path_factory):
    """A data_dir holding only voc/2007's metadata, so the mocked builder counts as prepared."""
    import tensorflow_datasets as tfds

    root = str(tmp_path_factory.mktemp("tfds_voc"))
    builder = tfds.builder("voc/2007", data_dir=root)
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)
    return root


def raw_voc_rows(builder, split: str) -> tuple[list[str], np.ndarray]:
    """(file names, expected (n, 20) labels) of one TFDS split, computed from the raw examples."""
    import tensorflow_datasets as tfds

    decoders = tfds.decode.PartialDecoding(
        {"image": True, "image/filename": True, "labels": True, "labels_no_difficult": True},
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    names, rows = [], []
    for ex in tfds.as_numpy(ds):
        labels, clean = set(ex["labels"].tolist()), set(ex["labels_no_difficult"].tolist())
        rows.append([1 if c in clean else (-1 if c in labels else 0) for c in range(20)])
        names.append(ex["image/filename"].decode())
    return names, np.asarray(rows, np.int8)


def test_voc07_tfds_labels_and_trainval_composition(voc_metadata):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6, data_dir=voc_metadata):
        builder = tfds.builder("voc/2007", data_dir=voc_metadata)
        test = datasets.voc07_tfds("test", data_dir=voc_metadata)
        names, expected = raw_voc_rows(builder, "test")
        assert test.name == "voc2007/test" and test.class_names == CLASSES
        assert test.labels.dtype == np.int8 and test.labels.shape == (6, 20)
        np.testing.assert_array_equal(test.labels, expected)
        assert test.ids.tolist() == [f"test/{n}" for n in names]
        # The mock's random label sets exercise all three values.
        assert {-1, 0, 1} <= set(np.unique(test.labels).tolist())

        trainval = datasets.voc07_tfds("trainval", data_dir=voc_metadata)
        train_names, train_rows = raw_voc_rows(builder, "train")
        val_names, val_rows = raw_voc_rows(builder, "validation")
        assert trainval.num_examples == 12
        np.testing.assert_array_equal(trainval.labels, np.concatenate([train_rows, val_rows]))
        assert trainval.ids.tolist() == [f"train/{n}" for n in train_names] + [
            f"validation/{n}" for n in val_names
        ]

        # Images come in position order per process, decoded (the mock's images are PNGs).
        shards = [read_all(trainval, size=8, process_index=p, process_count=2) for p in (0, 1)]
        subset = read_all(trainval.take(np.array([1, 4, 7, 11])), size=8)
    for p, shard in enumerate(shards):
        np.testing.assert_array_equal(shard["position"], np.arange(p, 12, 2))
        assert shard["image"].shape == (6, 8, 8, 3) and shard["image"].dtype == np.uint8
        assert shard["ok"].all()
    np.testing.assert_array_equal(subset["position"], np.arange(4))
    both = {int(p): img for s in shards for p, img in zip(s["position"], s["image"], strict=True)}
    for i, position in enumerate([1, 4, 7, 11]):
        np.testing.assert_array_equal(subset["image"][i], both[position])


def test_voc07_tfds_errors_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(FileNotFoundError) as info:
        datasets.voc07_tfds("test", data_dir=str(tmp_path), config_key="config.data.test")
    message = str(info.value)
    assert f"tfds build voc/2007 --data_dir={tmp_path}" in message
    assert "config.data.test.data_dir" in message and "vocdevkit" in message
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []  # nothing downloaded
    with pytest.raises(ValueError, match="split='val2'.*trainval, test"):
        datasets.voc07_tfds("val2", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------
# VOC from a VOCdevkit folder.

DEVKIT_IDS = ("000001", "000002", "000005", "000009")
# Our convention (1 present, 0 absent, -1 difficult); column = class index.
DEVKIT_LABELS = np.zeros((4, 20), np.int8)
DEVKIT_LABELS[0, CLASSES.index("dog")] = 1
DEVKIT_LABELS[0, CLASSES.index("person")] = -1  # only difficult persons
DEVKIT_LABELS[1, CLASSES.index("aeroplane")] = 1
DEVKIT_LABELS[2, CLASSES.index("tvmonitor")] = 1
DEVKIT_LABELS[2, CLASSES.index("chair")] = -1
DEVKIT_LABELS[3, CLASSES.index("person")] = 1


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
    """A tiny VOCdevkit/VOC2007 with four JPEGs and the 20 per-class test files."""
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    voc = root / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    devkit_value = {1: "1", 0: "-1", -1: "0"}  # VOC writes 1 present, -1 absent, 0 difficult
    for c, name in enumerate(CLASSES):
        lines = [
            f"{i} {devkit_value[int(DEVKIT_LABELS[r, c])]:>2}" for r, i in enumerate(DEVKIT_IDS)
        ]
        (main / f"{name}_test.txt").write_text("\n".join(lines) + "\n")
    for k, image_id in enumerate(DEVKIT_IDS):
        save(str(voc / "JPEGImages" / f"{image_id}.jpg"), photo(30 + k, 40, k))
    return root


def test_vocdevkit_maps_voc_values_including_difficult(devkit):
    for path in (str(devkit), str(devkit / "VOC2007"), str(devkit) + "/"):
        dataset = datasets.vocdevkit(path, "test")
        assert dataset.name == "voc2007/test" and dataset.class_names == CLASSES
        assert dataset.ids.tolist() == list(DEVKIT_IDS)
        np.testing.assert_array_equal(dataset.labels, DEVKIT_LABELS)
    out = read_all(dataset, size=12)
    assert out["image"].shape == (4, 12, 12, 3) and out["ok"].all()


def test_vocdevkit_errors_name_the_missing_file(devkit, tmp_path):
    copy = tmp_path / "VOCdevkit"
    shutil.copytree(devkit, copy)
    main = copy / "VOC2007" / "ImageSets" / "Main"
    with pytest.raises(FileNotFoundError, match="aeroplane_trainval.txt.*config.x.split"):
        datasets.vocdevkit(str(copy), "trainval", config_key="config.x")
    with pytest.raises(FileNotFoundError, match="ImageSets/Main.*VOC2012"):
        datasets.vocdevkit(str(copy), "test", year="2012")
    os.remove(copy / "VOC2007" / "JPEGImages" / "000005.jpg")
    with pytest.raises(FileNotFoundError, match="1 of the 4 images.*000005.jpg"):
        datasets.vocdevkit(str(copy), "test")
    (main / "cat_test.txt").write_text("000001 2\n")
    with pytest.raises(ValueError, match=r"cat_test.txt line 1: '000001 2'"):
        datasets.vocdevkit(str(copy), "test")
    os.remove(main / "cat_test.txt")
    with pytest.raises(FileNotFoundError, match="cat_test.txt"):
        datasets.vocdevkit(str(copy), "test")


# ----------------------------------------------------------------------------------------------
# Single-label sets and images().

# (class, file, height, width): non-square images, PNG so that decoding is exact.
FOLDER_FILES = [
    ("zebra", "a.png", 24, 40, 0),
    ("zebra", "b.png", 37, 19, 1),
    ("ant", "c.png", 16, 16, 2),
    ("ant", "d.png", 50, 31, 3),
    ("moth", "e.png", 21, 45, 4),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for cls, name, h, w, seed in FOLDER_FILES:
        save(str(root / cls / name), photo(h, w, seed))
    return root


def test_single_label_folder_is_one_hot_in_sorted_class_order(folder):
    dataset = datasets.single_label("folder", str(folder))
    assert dataset.class_names == ("ant", "moth", "zebra")
    assert [os.path.relpath(i, folder) for i in dataset.ids] == [
        "ant/c.png",
        "ant/d.png",
        "moth/e.png",
        "zebra/a.png",
        "zebra/b.png",
    ]
    expected = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.int8)
    np.testing.assert_array_equal(dataset.labels, expected)
    assert dataset.labels.dtype == np.int8


def test_images_resize_ignores_aspect_ratio_and_shards(folder):
    dataset = datasets.single_label("folder", str(folder))
    size = 20
    out = read_all(dataset, size=size)
    np.testing.assert_array_equal(out["position"], np.arange(5))
    assert out["image"].shape == (5, size, size, 3) and out["image"].dtype == np.uint8
    assert out["ok"].all()
    for position, image in zip(out["position"], out["image"], strict=True):
        decoded = np.asarray(Image.open(dataset.ids[position]).convert("RGB"))
        reference = tf.image.resize(decoded, (size, size), method="bilinear", antialias=False)
        reference = np.clip(np.round(reference.numpy()), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(image, reference)
    for count in (2, 3, 7):  # 7 > N: some processes get nothing
        shards = [
            read_all(dataset, size=8, process_index=p, process_count=count) for p in range(count)
        ]
        for p, shard in enumerate(shards):
            np.testing.assert_array_equal(shard["position"], np.arange(p, 5, count))
        covered = np.sort(np.concatenate([s["position"] for s in shards]))
        np.testing.assert_array_equal(covered, np.arange(5))
    with pytest.raises(ValueError, match="process_index=2"):
        dataset.images(size=8, process_index=2, process_count=2)


def test_corrupt_image_gives_ok_false_and_is_counted(tmp_path):
    save(str(tmp_path / "a" / "good.png"), photo(10, 14, 0))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad.jpg").write_bytes(b"not a jpeg at all" * 10)
    dataset = datasets.single_label("folder", str(tmp_path))
    before = decode_lib.skip_counts().get("not_image", 0)
    out = read_all(dataset, size=6)
    assert out["ok"].tolist() == [True, False]
    assert out["image"].shape == (2, 6, 6, 3) and not out["image"][1].any()
    assert out["image"][0].any()
    assert decode_lib.skip_counts().get("not_image", 0) == before + 1


def test_single_label_filelist_and_names(tmp_path, folder):
    lines = [f"{folder}/zebra/a.png 2", "../folder_rel/x.png 0", f"{folder}/ant/c.png 0"]
    save(str(tmp_path / "folder_rel" / "x.png"), photo(9, 9, 9))
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "val.txt"
    listing.write_text("# path label\n" + "\n".join(lines) + "\n")
    dataset = datasets.single_label("filelist", str(listing))
    assert dataset.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(dataset.labels, [[0, 0, 1], [1, 0, 0], [1, 0, 0]])
    assert dataset.ids[1] == os.path.join(str(tmp_path / "lists"), "../folder_rel/x.png")
    assert read_all(dataset, size=4)["ok"].all()
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\nfish\n")
    named = datasets.single_label("filelist", str(listing), names_file=str(names))
    assert named.class_names == ("cat", "dog", "bird", "fish") and named.labels.shape == (3, 4)
    names.write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="label 2.*names only 2 classes"):
        datasets.single_label("filelist", str(listing), names_file=str(names))


def test_unlabelled_images_are_an_error(tmp_path):
    save(str(tmp_path / "flat" / "a.png"), photo(8, 8, 0))
    with pytest.raises(ValueError, match="1 of the 1 images.*no label.*needs labels"):
        datasets.single_label("folder", str(tmp_path / "flat"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path}/flat/a.png 1\n{tmp_path}/flat/a.png\n")
    with pytest.raises(ValueError, match="1 of the 2 images.*'path label'"):
        datasets.single_label("filelist", str(listing))
    with pytest.raises(FileNotFoundError, match="config.data.train.path="):
        datasets.single_label("folder", str(tmp_path / "nope"), config_key="config.data.train")


def test_cifar10_folder_real_images(cifar10_dir, tmp_path):
    dataset = datasets.single_label("folder", os.path.join(cifar10_dir, "train"))
    assert dataset.num_examples == 10_000 and len(dataset.class_names) == 10
    assert dataset.class_names[0] == "airplane" and dataset.class_names[-1] == "truck"
    np.testing.assert_array_equal(dataset.labels.sum(axis=0), np.full(10, 1000))
    np.testing.assert_array_equal(dataset.labels.sum(axis=1), np.ones(10_000))
    subset = dataset.subset(0, 20)
    np.testing.assert_array_equal(subset.labels.sum(axis=0), np.full(10, 2))  # 2 per class
    out = read_all(subset, size=32)  # CIFAR images are 32x32: the resize is the identity
    assert out["ok"].all()
    for position, image in zip(out["position"], out["image"], strict=True):
        np.testing.assert_array_equal(image, np.asarray(Image.open(subset.ids[position])))


# ----------------------------------------------------------------------------------------------
# take(), validation, demo, make_labelled.


def test_take_keeps_order_and_validates(folder):
    dataset = datasets.single_label("folder", str(folder))
    subset = dataset.take(np.array([1, 3, 4]))
    assert subset.ids.tolist() == dataset.ids[[1, 3, 4]].tolist()
    np.testing.assert_array_equal(subset.labels, dataset.labels[[1, 3, 4]])
    full, part = read_all(dataset, size=8), read_all(subset, size=8)
    np.testing.assert_array_equal(part["image"], full["image"][[1, 3, 4]])
    with pytest.raises(ValueError, match="strictly increasing"):
        dataset.take(np.array([3, 1]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        dataset.take(np.array([2, 5]))
    with pytest.raises(ValueError, match="no images"):
        dataset.take(np.array([], np.int64))


def test_labelled_set_validation():
    ids, names = np.array(["a", "b"]), ("x", "y")
    two = types.SimpleNamespace(num_examples=2)  # a source of two records
    with pytest.raises(ValueError, match="label 2 for image 'b', class 'y'"):
        datasets.LabelledSet("s", two, np.array([[1, 0], [0, 2]]), names, ids)
    with pytest.raises(ValueError, match=r"more than once.*'a'"):
        datasets.LabelledSet("s", two, np.zeros((2, 2)), names, np.array(["a", "a"]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        datasets.LabelledSet("s", two, np.zeros((2, 3)), names, ids)
    with pytest.raises(ValueError, match="3 labelled images but its source holds 2"):
        datasets.LabelledSet("s", two, np.zeros((3, 2)), names, np.array(["a", "b", "c"]))


def test_demo_is_deterministic_labelled_and_split():
    train, again = datasets.demo_labelled(12), datasets.demo_labelled(12)
    test = datasets.make_labelled({"source": "demo", "demo_size": 24, "first": 12})
    # The crops are prefix-stable: the first 12 of 24 are the set of 12.
    longer = datasets.demo_labelled(24)
    np.testing.assert_array_equal(longer.source.boxes[:12], train.source.boxes)
    np.testing.assert_array_equal(test.source.boxes, longer.source.boxes[12:])
    assert train.class_names == test.class_names and len(train.class_names) == 6
    np.testing.assert_array_equal(train.labels, again.labels)
    np.testing.assert_array_equal(train.labels.argmax(axis=1), np.arange(12) % 6)
    a, b, t = (read_all(d, size=16) for d in (train, again, test))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["ok"].all() and not np.array_equal(a["image"], t["image"])
    assert all(np.std(img) > 5 for img in a["image"])


def test_make_labelled_from_configs(folder):
    config = ml_collections.ConfigDict(
        {"source": "folder", "split": "train", "path": str(folder), "data_dir": None}
    )
    dataset = datasets.make_labelled(config)
    assert dataset.num_examples == 5 and dataset.name == f"folder:{folder}"
    config.max_examples = 3
    subset = datasets.make_labelled(config)
    assert subset.ids.tolist() == dataset.ids[[0, 1, 3]].tolist()  # spread over the classes
    config.first = 1
    assert datasets.make_labelled(config).ids.tolist() == dataset.ids[[1, 2, 3]].tolist()
    with pytest.raises(ValueError, match="first=5 is outside the 5 images"):
        datasets.make_labelled({**config.to_dict(), "first": 5})
    demo = datasets.make_labelled({"source": "demo", "demo_size": 12, "first": 6})
    assert demo.name == "demo/12" and demo.num_examples == 6
    with pytest.raises(ValueError, match="config.data.test.source='imagenet'.*voc07_tfds"):
        datasets.make_labelled({"source": "imagenet"}, config_key="config.data.test")
    with pytest.raises(ValueError, match="config.data.train.path"):
        datasets.make_labelled(
            {"source": "vocdevkit", "split": "test"}, config_key="config.data.train"
        )
    with pytest.raises(ValueError, match="max_examples=-1"):
        datasets.make_labelled({**config.to_dict(), "max_examples": -1})
