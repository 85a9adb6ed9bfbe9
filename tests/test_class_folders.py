"""ssl_jax.data.class_folders: a TFDS dataset written as class folders of JPEGs, under
tfds.testing.mock_data (random images and labels, no download, no network)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ssl_jax.data import class_folders, folder_source
from ssl_jax.data import decode as decode_lib

tfds = pytest.importorskip("tensorflow_datasets")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]  # fmt: skip


@pytest.fixture(scope="module")
def cifar10_metadata(tmp_path_factory):
    """A data_dir holding only cifar10's metadata as a prepared copy has it (splits' sizes,
    class names), so that the mocked builder counts as prepared."""
    root = str(tmp_path_factory.mktemp("tfds_cifar10"))
    builder = tfds.builder("cifar10", data_dir=root)
    splits = [
        tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
        for name, n in (("train", 50_000), ("test", 10_000))
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    builder.info.features["label"].names = CIFAR10_CLASSES  # read from the download
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)
    return root


def mocked_examples(root: str, split: str, n: int) -> list[dict]:
    builder = tfds.builder("cifar10", data_dir=root)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return list(tfds.as_numpy(ds.take(n)))


def test_cifar10_as_class_folders(cifar10_metadata, tmp_path):
    out = str(tmp_path / "cifar10")
    with tfds.testing.mock_data(num_examples=200, data_dir=cifar10_metadata):
        written = class_folders.from_tfds(
            out, "cifar10", {"train": 3, "test": 0}, data_dir=cifar10_metadata
        )
        examples = mocked_examples(cifar10_metadata, "train", 200)
    assert written == {"train": 30, "test": 200}
    assert sorted(os.listdir(os.path.join(out, "train"))) == CIFAR10_CLASSES
    assert all(
        sorted(os.listdir(os.path.join(out, "train", c))) == ["0000.jpg", "0001.jpg", "0002.jpg"]
        for c in CIFAR10_CLASSES
    )
    # Each class's first image in the split's order: its JPEG, and nearer to it than to any
    # other image (the mock's images are noise, which JPEG keeps only roughly).
    firsts = {}
    for example in examples:
        firsts.setdefault(int(example["label"]), example["image"])
    images = np.stack([e["image"] for e in examples]).astype(int)
    for label, image in firsts.items():
        path = os.path.join(out, "train", CIFAR10_CLASSES[label], "0000.jpg")
        data = open(path, "rb").read()
        assert data == class_folders.jpeg_bytes(image)
        decoded = decode_lib.decode_image_bytes(data).astype(int)
        assert decoded.shape == (32, 32, 3)
        nearest = np.abs(images - decoded).mean(axis=(1, 2, 3)).argmin()
        assert int(examples[nearest]["label"]) == label and (images[nearest] == image).all()
    # The folder source reads them with the class names as labels; test has all 200 images.
    train = folder_source(os.path.join(out, "train"))
    assert train.num_examples == 30 and list(train.class_names) == CIFAR10_CLASSES
    assert np.bincount(train.labels).tolist() == [3] * 10
    assert folder_source(os.path.join(out, "test")).num_examples == 200


def test_written_splits_are_not_written_again(cifar10_metadata, tmp_path):
    out = str(tmp_path / "cifar10")
    with tfds.testing.mock_data(num_examples=100, data_dir=cifar10_metadata):
        class_folders.from_tfds(out, "cifar10", {"train": 2}, data_dir=cifar10_metadata)
        os.remove(os.path.join(out, "train", "cat", "0001.jpg"))
        again = class_folders.from_tfds(out, "cifar10", {"train": 2}, data_dir=cifar10_metadata)
        assert again == {"train": 20}
        assert not os.path.exists(os.path.join(out, "train", "cat", "0001.jpg"))
        # Another count is written again.
        more = class_folders.from_tfds(out, "cifar10", {"train": 3}, data_dir=cifar10_metadata)
    assert more == {"train": 30}
    assert os.path.exists(os.path.join(out, "train", "cat", "0002.jpg"))


def test_bad_requests_name_the_fix(cifar10_metadata, tmp_path):
    out = str(tmp_path / "out")
    with tfds.testing.mock_data(num_examples=10, data_dir=cifar10_metadata):
        with pytest.raises(ValueError, match=r"splits \['validation'\].*its splits: \['test', "):
            class_folders.from_tfds(out, "cifar10", {"validation": 1}, data_dir=cifar10_metadata)
        with pytest.raises(ValueError, match=r"integer >= 0"):
            class_folders.from_tfds(out, "cifar10", {"train": -1}, data_dir=cifar10_metadata)
    with pytest.raises(FileNotFoundError, match=r"not prepared in .*download=True"):
        class_folders.from_tfds(out, "cifar10", data_dir=str(tmp_path / "empty"), download=False)
