"""Nested, deterministic data-size subsets (config.data.data_size) of folders, lists and TFDS."""

import json
import os
import random
import shutil

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_jax import config_defaults, config_lib, data
from ssl_jax.data import subsets

CLASSES = ("cat", "dog", "fox")
PER_CLASS = 24  # 72 images in all


def data_config(**fields):
    d = ml_collections.ConfigDict(
        dict(
            source="folder",
            name="",
            split="train",
            data_dir=None,
            path="",
            shuffle_buffer=16,
            num_parallel_calls=2,
            prefetch=0,
            demo_size=64,
            cache_decoded=False,
            data_size=0.0,
        )
    )
    d.update(fields)
    return d


def write_jpeg(path, k):
    rng = np.random.default_rng(k)
    pixels = rng.integers(0, 256, (8 + k % 5, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "images"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for k in range(PER_CLASS):
            write_jpeg(root / name / f"{k:03d}.jpg", c * PER_CLASS + k)
    return str(root)


@pytest.fixture(scope="module")
def folder_copy(folder, tmp_path_factory):
    """The same images at another root."""
    root = tmp_path_factory.mktemp("elsewhere") / "copy"
    shutil.copytree(folder, root)
    return str(root)


@pytest.fixture(scope="module")
def lists(folder):
    """Two file lists of the same images, in different orders; label k = image k (unique)."""
    entries = [
        f"{c}/{k:03d}.jpg {i}"
        for i, (c, k) in enumerate((c, k) for c in CLASSES for k in range(PER_CLASS))
    ]
    shuffled = list(entries)
    random.Random(0).shuffle(shuffled)
    paths = []
    for name, lines in (("list.txt", entries), ("shuffled.txt", shuffled)):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write("# images, then their label\n" + "\n".join(lines) + "\n")
        paths.append(path)
    return paths


def ids(source):
    return [bytes(i).decode() for i in subsets.image_ids(source)]


def test_folder_subsets_are_nested_and_independent_of_root_and_listing(folder, folder_copy):
    sizes = (10, 30, 60)
    cut = {n: data.make_source(data_config(path=folder, data_size=n)) for n in sizes}
    assert [cut[n].num_examples for n in sizes] == list(sizes)
    # Nested: each subset is the start of the next, in the same (subset) order.
    assert ids(cut[30])[:10] == ids(cut[10]) and ids(cut[60])[:30] == ids(cut[30])
    assert len(set(ids(cut[60]))) == 60
    # Ids are relative POSIX paths; paths and labels stay aligned with them.
    for image_id, path, label in zip(ids(cut[30]), cut[30].paths, cut[30].labels, strict=True):
        assert path.decode() == os.path.join(folder, image_id)
        assert CLASSES[label] == image_id.split("/")[0]
    # Another listing, and a copy at another root, give the same subset in the same order.
    again = data.make_source(data_config(path=folder, data_size=30))
    elsewhere = data.make_source(data_config(path=folder_copy, data_size=30))
    assert ids(again) == ids(cut[30]) == ids(elsewhere)
    assert [p.decode()[len(folder_copy) :] for p in elsewhere.paths] == [
        p.decode()[len(folder) :] for p in cut[30].paths
    ]
    # The order is the documented hash: ascending blake2b key.
    keys = [subsets.key(i.encode()) for i in ids(cut[60])]
    assert keys == sorted(keys)
    full = data.make_source(data_config(path=folder))
    assert full.num_examples == 72 and full.data_size == 0
    assert ids(cut[60]) == sorted(ids(full), key=lambda i: subsets.key(i.encode()))[:60]


def test_filelist_subsets_are_nested_and_independent_of_list_order(lists):
    listed, shuffled = lists
    for n_small, n_big in ((10, 30), (30, 60)):
        small = data.make_source(data_config(source="filelist", path=listed, data_size=n_small))
        big = data.make_source(data_config(source="filelist", path=shuffled, data_size=n_big))
        assert ids(big)[:n_small] == ids(small)
    a = data.make_source(data_config(source="filelist", path=listed, data_size=30))
    b = data.make_source(data_config(source="filelist", path=shuffled, data_size=30))
    # Same ids (entries as written, labels excluded), paths and labels, in the same order.
    assert ids(a) == ids(b) and all("/" in i and " " not in i for i in ids(a))
    assert list(a.paths) == list(b.paths) and list(a.labels) == list(b.labels)
    # The folder and a list of the same relative paths pick the same images.
    folder = os.path.dirname(listed)
    assert ids(data.make_source(data_config(path=folder, data_size=30))) == ids(a)


def test_fraction_and_count(folder):
    quarter = data.make_source(data_config(path=folder, data_size=0.25))
    count = data.make_source(data_config(path=folder, data_size=18))
    assert quarter.num_examples == 18 and ids(quarter) == ids(count)
    whole = data.make_source(data_config(path=folder, data_size=1.0))
    untouched = data.make_source(data_config(path=folder, data_size=0))
    assert whole.num_examples == untouched.num_examples == 72
    assert sorted(ids(whole)) == ids(untouched)  # 1.0: all of it, in subset order
    assert subsets.subset_size(0.29, 100) == 29  # exact decimal, not floor(28.999...)
    assert subsets.subset_size(0.001, 72) == 1  # at least one image
    assert subsets.subset_size(1e6, 10**7) == 10**6  # a count given as float


def test_errors_name_the_key_and_allowed_values(folder):
    with pytest.raises(ValueError, match=r"data_size=73(\.0)? asks for 73 images .* only 72"):
        data.make_source(data_config(path=folder, data_size=73))
    for bad in (-1, 2.5, float("nan"), True, "10"):
        with pytest.raises(ValueError, match=r"config.data.data_size=.*fraction in \(0, 1\]"):
            subsets.subset_size(bad, 72)
    config = config_defaults.pretrain()
    config.data.data_size = 2.5
    with pytest.raises(config_lib.ConfigError, match=r"config.data.data_size=2.5 .*count > 1"):
        config_lib.validate(config)
    for good in (0.0, 0.1, 1.0, 1e6):
        config.data.data_size = good
        config_lib.validate(config)


def test_pipeline_yields_only_subset_images_once_per_epoch(lists):
    d = data_config(source="filelist", path=lists[0], data_size=12)
    source = data.make_source(d)
    wanted = sorted(int(x) for x in source.labels)  # labels are unique image numbers
    i = ml_collections.ConfigDict(dict(resize_short=16, crop=12, flip=True))
    it = data.pretrain_iterator(
        d, i, local_batch_size=4, seed=0, process_index=0, process_count=1, source=source
    )
    batches = [next(it) for _ in range(6)]  # two epochs of 12
    labels = np.concatenate([b["label"] for b in batches])
    epochs = np.concatenate([b["epoch"] for b in batches])
    assert sorted(labels[epochs == 0]) == wanted and sorted(labels[epochs == 1]) == wanted
    assert batches[0]["image"].shape == (4, 12, 12, 3)


def test_two_processes_cover_the_subset_exactly_once(folder):
    source = data.make_source(data_config(path=folder, data_size=0.5))

    def paths(process_index):
        ds = source.epoch_records(
            tf.constant(3, tf.int64),
            tf.constant(0, tf.int64),
            seed=1,
            process_index=process_index,
            process_count=2,
            shuffle_buffer=0,
        )
        return [r["path"] for r in ds.as_numpy_iterator()]

    first, second = paths(0), paths(1)
    assert len(first) == source.shard_size(0, 2) == 18 and len(second) == 18
    assert sorted(first + second) == sorted(source.paths)


def test_record_is_written_and_a_changed_subset_is_refused(folder, folder_copy, tmp_path):
    source = data.make_source(data_config(path=folder, data_size=20))
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    data.record_subset(workdir, source, write=False)
    assert not os.listdir(workdir)  # only process 0 writes
    record = data.record_subset(workdir, source)
    with open(os.path.join(workdir, "data_subset.json")) as f:
        saved = json.load(f)
    assert saved == record
    assert saved["source"] == "folder" and saved["location"] == folder
    assert saved["count"] == 20 and saved["data_size"] == 20
    assert saved["hash"] == subsets.HASH_METHOD and saved["ids_file"] == "data_subset_ids.txt"
    with open(os.path.join(workdir, "data_subset_ids.txt"), "rb") as f:
        text = f.read()
    assert text.decode().splitlines() == ids(source)
    import hashlib

    assert saved["ids_sha256"] == hashlib.sha256(text).hexdigest()
    # Restarting on the same images (even moved elsewhere) goes on; other images are refused.
    data.record_subset(workdir, data.make_source(data_config(path=folder, data_size=20)))
    data.record_subset(workdir, data.make_source(data_config(path=folder_copy, data_size=20)))
    for changed in (21, 0):
        other = data.make_source(data_config(path=folder, data_size=changed))
        with pytest.raises(ValueError, match="started on other images.*count: 20 then"):
            data.record_subset(workdir, other)


def test_demo_subset_keeps_demo_indices_as_ids():
    full = data.make_source(data_config(source="demo", demo_size=40))
    cut = data.make_source(data_config(source="demo", demo_size=40, data_size=8))
    kept = [int(i) for i in ids(cut)]
    assert cut.num_examples == 8 and len(set(kept)) == 8
    np.testing.assert_array_equal(cut.boxes, full.boxes[kept])
    np.testing.assert_array_equal(cut.labels, full.labels[kept])


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A small TFDS dataset prepared locally (no downloads): 24 images in 3 shards."""
    import tensorflow_datasets as tfds

    with tfds.core.registered.skip_registration():

        class SslJaxSubsetImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {"image": tfds.features.Image(), "label": tf.int64}
                    ),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                for k in range(24):
                    pixels = np.full((8, 9, 3), k, np.uint8)
                    yield k, {"image": pixels, "label": k}

    root = str(tmp_path_factory.mktemp("tfds"))
    SslJaxSubsetImages(data_dir=root).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3)
    )
    return root


def test_tfds_subset_filters_the_stream_exactly(tfds_dir, tmp_path):
    def cut(n):
        return data.make_source(
            data_config(source="tfds", name="ssl_jax_subset_images", data_dir=tfds_dir, data_size=n)
        )

    def read_ids(source, process_index=0, process_count=1):
        ds = source.epoch_records(
            tf.constant(0, tf.int64),
            tf.constant(0, tf.int64),
            seed=0,
            process_index=process_index,
            process_count=process_count,
            shuffle_buffer=4,
        )
        return [r["id"] for r in ds.as_numpy_iterator()]

    whole = cut(0)
    all_ids = read_ids(whole)
    # The ids computed from the split's files are those the reader gives.
    assert sorted(subsets.tfds_ids(whole.builder, "train")) == sorted(all_ids)
    order = sorted(all_ids, key=lambda i: (subsets.key(i), i))
    small, big = cut(5), cut(0.5)
    assert small.num_examples == 5 and big.num_examples == 12
    assert sorted(read_ids(small)) == sorted(order[:5])
    assert sorted(read_ids(big)) == sorted(order[:12])
    # Per-process counts add up, and the two shards cover the subset once.
    parts = [read_ids(big, p, 2) for p in range(2)]
    assert [len(p) for p in parts] == [big.shard_size(p, 2) for p in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(order[:12])
    record = data.record_subset(str(tmp_path), big)
    assert record["count"] == 12 and "threshold" in record and "ids_sha256" in record
    assert not os.path.exists(tmp_path / "data_subset_ids.txt")
    with pytest.raises(ValueError, match="started on other images"):
        data.record_subset(str(tmp_path), small)
