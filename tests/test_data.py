"""Input pipeline: sources, robust decoding, determinism, exact resumption, process shards."""

import io
import logging
import os
import socket

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_jax import data
from ssl_jax.data import decode as decode_lib
from ssl_jax.data import files as files_lib

RESIZE, CROP = 40, 32  # small images keep the tests fast


def make_configs(**data_fields):
    d = ml_collections.ConfigDict(
        dict(
            source="folder",
            name="imagenet2012",
            split="train",
            data_dir=None,
            path="",
            shuffle_buffer=16,
            num_parallel_calls=-1,
            prefetch=2,
            demo_size=64,
            cache_decoded=False,
        )
    )
    d.update(data_fields)
    i = ml_collections.ConfigDict(dict(resize_short=RESIZE, crop=CROP, flip=True))
    return d, i


def take(data_config, input_config, num_batches, batch_size=5, **kwargs):
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("process_index", 0)
    kwargs.setdefault("process_count", 1)
    it = data.pretrain_iterator(data_config, input_config, local_batch_size=batch_size, **kwargs)
    return [next(it) for _ in range(num_batches)]


def flatten(batches):
    """[(epoch, index, label, image bytes)] over the batches, in stream order."""
    out = []
    for b in batches:
        for k in range(len(b["index"])):
            position = (int(b["epoch"][k]), int(b["index"][k]))
            out.append((*position, int(b["label"][k]), b["image"][k].tobytes()))
    return out


def photo(height, width, seed):
    """A smooth random RGB image (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    noise = rng.integers(-10, 11, (height, width, 3))
    return np.clip(np.asarray(image).astype(int) + noise, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(path, content: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


RGBA = np.zeros((30, 40, 4), np.uint8)
RGBA[..., :3] = 40
RGBA[:, 20:, 3] = 255  # right half opaque dark grey, left half fully transparent
GRAY16 = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
PLANTED_SKIPS = {"truncated": 1, "empty": 1, "not_image": 2}


def build_tree(root: str) -> dict[str, bytes]:
    """A class-folder tree of good and bad files; returns {relative path: bytes}."""
    files = {}
    for c, cls in enumerate(["cat", "dog", "bird"]):
        for k in range(4):
            ext = {"bird": [".jpeg", ".bmp", ".webp", ".tif"]}.get(cls, [".jpg"] * 4)[k]
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF"}
            files[f"{cls}/{cls}{k}{ext}"] = encode(
                Image.fromarray(photo(48, 64, 10 * c + k)), fmt[ext]
            )
    big = encode(Image.fromarray(photo(96, 96, 99)), "JPEG", quality=95)
    palette = Image.fromarray(photo(30, 30, 5)).convert("P")
    files.update(
        {
            "cat/gray.jpg": encode(Image.fromarray(photo(50, 60, 1)).convert("L"), "JPEG"),
            "cat/cmyk.jpg": encode(Image.fromarray(photo(50, 60, 2)).convert("CMYK"), "JPEG"),
            "cat/tiny.png": encode(Image.fromarray(np.full((1, 1, 3), 200, np.uint8)), "PNG"),
            "cat/thin.jpg": encode(Image.fromarray(photo(5, 500, 3)), "JPEG"),
            "cat/truncated.jpg": big[: len(big) // 2],
            "cat/empty.jpg": b"",
            "dog/rgba.png": encode(Image.fromarray(RGBA, "RGBA"), "PNG"),
            "dog/gray16.png": encode(Image.fromarray(GRAY16), "PNG"),
            "dog/palette.gif": encode(Image.fromarray(photo(30, 30, 4)).convert("P"), "GIF"),
            "dog/palette_alpha.png": encode(palette, "PNG", transparency=palette.getpixel((0, 0))),
            "dog/sub/nested.JPG": encode(Image.fromarray(photo(40, 40, 6)), "JPEG"),
            "dog/random.jpg": np.random.default_rng(7).bytes(2000),
            "dog/text.png": b"this is not an image\n",
            "dog/notes.txt": b"ignored: not an image extension\n",
            "dog/.hidden.jpg": b"ignored: hidden",
        }
    )
    for rel, content in files.items():
        write(os.path.join(root, rel), content)
    return files


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tree"))
    files = build_tree(root)
    bad = {"cat/truncated.jpg", "cat/empty.jpg", "dog/random.jpg", "dog/text.png"}
    return root, files, bad


@pytest.fixture(scope="module")
def tree_source(tree):
    return data.folder_source(tree[0])


# ----------------------------------------------------------------------------- decoding


def test_decode_converts_every_mode_to_rgb(tree):
    root, files, bad = tree
    for rel, content in files.items():
        if rel in bad or not files_lib._has_image_extension(rel) or "/." in rel:
            continue
        image = decode_lib.decode_image_bytes(content)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, rel
    gray = decode_lib.decode_image_bytes(files["cat/gray.jpg"])
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    cmyk = decode_lib.decode_image_bytes(files["cat/cmyk.jpg"]).astype(int)
    assert np.abs(cmyk - photo(50, 60, 2)).mean() < 12  # CMYK JPEG round trip, lossy
    rgba = decode_lib.decode_image_bytes(files["dog/rgba.png"])
    assert (rgba[:, :20] == 255).all() and (rgba[:, 20:] == 40).all()  # composited on white
    gray16 = decode_lib.decode_image_bytes(files["dog/gray16.png"])
    assert np.array_equal(gray16[..., 0], (GRAY16 >> 8).astype(np.uint8))
    palette_alpha = decode_lib.decode_image_bytes(files["dog/palette_alpha.png"])
    stored = Image.open(io.BytesIO(files["dog/palette_alpha.png"]))
    transparent = np.asarray(stored) == stored.info["transparency"]
    assert (palette_alpha[transparent] == 255).all() and transparent.any()
    assert (palette_alpha[~transparent] != 255).any()
    assert decode_lib.decode_image_bytes(files["cat/tiny.png"]).shape == (1, 1, 3)
    assert decode_lib.decode_image_bytes(files["cat/thin.jpg"]).shape == (5, 500, 3)


def test_decode_reasons(tree, tmp_path):
    _, files, _ = tree
    expected = {
        "cat/truncated.jpg": "truncated",
        "cat/empty.jpg": "empty",
        "dog/random.jpg": "not_image",
        "dog/text.png": "not_image",
    }
    for rel, reason in expected.items():
        with pytest.raises(decode_lib.SkippedImage) as info:
            decode_lib.decode_image_bytes(files[rel])
        assert info.value.reason == reason, rel
    data.reset_skip_counts()
    missing = str(tmp_path / "missing.jpg").encode()
    image, ok = decode_lib.numpy_decode(missing, True, missing, 0, None, None)
    assert not ok and image.shape == (1, 1, 3)
    assert data.skip_counts() == {"missing": 1}


def test_skip_log_is_rate_limited(caplog):
    data.reset_skip_counts()
    with caplog.at_level(logging.WARNING):
        for k in range(15):
            decode_lib.record_skip("corrupt", f"file{k}.jpg", "bad data")
    assert data.skip_counts() == {"corrupt": 15}
    logged = [r for r in caplog.records if "Skipping image" in r.getMessage()]
    assert len(logged) == decode_lib.MAX_LOGGED_PER_REASON
    assert "file0.jpg" in logged[0].getMessage()
    data.reset_skip_counts()


def test_large_jpeg_is_decoded_at_reduced_scale_not_below_min_short():
    content = encode(Image.fromarray(photo(800, 1200, 8)), "JPEG")
    assert decode_lib.decode_image_bytes(content).shape == (800, 1200, 3)
    reduced = decode_lib.decode_image_bytes(content, min_short=256)
    assert reduced.shape == (400, 600, 3)  # DCT scale 1/2: 1/4 would give a 200-pixel side


# ----------------------------------------------------------------------------- sources


def test_folder_source_lists_classes_and_ignores_non_images(tree, tree_source):
    root, files, _ = tree
    images = [r for r in files if files_lib._has_image_extension(r) and "/." not in r]
    assert tree_source.num_examples == len(images) == 25
    assert tree_source.class_names == ("bird", "cat", "dog")
    paths = [p.decode() for p in tree_source.paths]
    assert paths == sorted(paths)
    labels = tree_source.labels.tolist()
    by_name = {os.path.relpath(p, root): y for p, y in zip(paths, labels, strict=True)}
    assert by_name["dog/sub/nested.JPG"] == 2 and by_name["bird/bird1.bmp"] == 0
    assert by_name["cat/gray.jpg"] == 1
    assert "dog/notes.txt" not in by_name and "dog/.hidden.jpg" not in by_name


def test_flat_and_mixed_folders(tmp_path):
    flat = tmp_path / "flat"
    for k in range(3):
        write(str(flat / f"img{k}.png"), encode(Image.fromarray(photo(20, 20, k)), "PNG"))
    source = data.make_source(make_configs(source="folder", path=str(flat))[0])
    assert source.class_names is None and (source.labels == -1).all()
    batch = take(*make_configs(source="folder", path=str(flat)), 1, batch_size=2)[0]
    assert (batch["label"] == -1).all() and batch["image"].shape == (2, CROP, CROP, 3)

    mixed = tmp_path / "mixed"
    write(str(mixed / "loose.jpg"), encode(Image.fromarray(photo(20, 20, 0)), "JPEG"))
    write(str(mixed / "a" / "x.jpg"), encode(Image.fromarray(photo(20, 20, 1)), "JPEG"))
    write(str(mixed / "b" / "y.jpg"), encode(Image.fromarray(photo(20, 20, 2)), "JPEG"))
    source = data.folder_source(str(mixed))
    assert source.class_names == ("a", "b")
    names = [os.path.basename(p.decode()) for p in source.paths]
    assert dict(zip(names, source.labels.tolist(), strict=True)) == {
        "x.jpg": 0,
        "y.jpg": 1,
        "loose.jpg": -1,
    }


def test_filelist_source(tree, tmp_path):
    root, _, _ = tree
    listing = tmp_path / "lists" / "train.txt"
    relative = str(tmp_path / "lists" / "rel" / "r.png")
    write(relative, encode(Image.fromarray(photo(20, 30, 0)), "PNG"))
    listing.write_text(
        "# a comment line\n"
        "\n"
        f"{root}/cat/cat0.jpg 3\n"
        f"  {root}/dog/dog1.jpg\t7  \n"
        "rel/r.png\n"
        f"{root}/dog/text.png 1\n"
        f"{root}/no_such_file.jpg 2\n"
    )
    source = data.make_source(make_configs(source="filelist", path=str(listing))[0])
    assert [p.decode() for p in source.paths] == [
        f"{root}/cat/cat0.jpg",
        f"{root}/dog/dog1.jpg",
        relative,
        f"{root}/dog/text.png",
        f"{root}/no_such_file.jpg",
    ]
    assert source.labels.tolist() == [3, 7, -1, 1, 2]
    data.reset_skip_counts()
    batch = take(*make_configs(source="filelist", path=str(listing)), 1, batch_size=3)[0]
    assert sorted(batch["label"].tolist()) == [-1, 3, 7]
    counts = data.skip_counts()
    assert counts.get("missing", 0) >= 1 and counts.get("not_image", 0) >= 1


def test_config_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="config.data.source='webdataset'.*tfds, folder"):
        data.make_source(make_configs(source="webdataset")[0])
    with pytest.raises(FileNotFoundError, match="config.data.path"):
        data.make_source(make_configs(source="folder", path=str(tmp_path / "nope"))[0])
    os.makedirs(tmp_path / "empty" / "class_a")
    with pytest.raises(ValueError, match="No image files.*config.data.path"):
        data.make_source(make_configs(source="folder", path=str(tmp_path / "empty"))[0])
    with pytest.raises(FileNotFoundError, match="config.data.path"):
        data.make_source(make_configs(source="filelist", path=tree[0])[0])
    (tmp_path / "comments.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="names no images"):
        data.make_source(make_configs(source="filelist", path=str(tmp_path / "comments.txt"))[0])
    with pytest.raises(ValueError, match="config.data.path"):
        data.make_source(make_configs(source="folder", path="")[0])
    d, i = make_configs(source="folder", path=tree[0])
    i.crop = RESIZE + 1
    with pytest.raises(ValueError, match="config.input.crop"):
        data.pretrain_iterator(d, i, local_batch_size=2, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="gets no records"):
        take(*make_configs(source="demo", demo_size=3), 1, process_index=3, process_count=4)


# ----------------------------------------------------------------------------- pipeline


def test_one_epoch_skips_exactly_the_bad_files(tree, tree_source):
    root, _, bad = tree
    data.reset_skip_counts()
    d, i = make_configs(source="folder", path=root)
    n = tree_source.num_examples
    batches = take(d, i, 6, batch_size=5, source=tree_source)  # 30 > the 21 good images
    for b in batches:
        assert b["image"].shape == (5, CROP, CROP, 3) and b["image"].dtype == np.uint8
        assert b["label"].dtype == np.int32 and b["epoch"].dtype == np.int64
        assert b["index"].dtype == np.int64
    elements = flatten(batches)
    epoch0 = [e for e in elements if e[0] == 0]
    assert len(epoch0) == n - len(bad) and elements[len(epoch0)][0] == 1
    # The indices missing from epoch 0 are the positions of the bad files in its shuffled order.
    order = np.random.default_rng([0, 0, 0]).permutation(n)
    missing = set(range(n)) - {e[1] for e in epoch0}
    assert {os.path.relpath(tree_source.paths[order[k]].decode(), root) for k in missing} == bad
    # Labels travel with their images.
    assert all(e[2] == tree_source.labels[order[e[1]]] for e in epoch0)
    counts = data.skip_counts()  # prefetching may have decoded part of epoch 1 as well
    assert set(counts) == set(PLANTED_SKIPS)
    assert all(counts[r] >= PLANTED_SKIPS[r] for r in PLANTED_SKIPS)
    assert all(np.std(b["image"]) > 10 for b in batches)

    # Decoding exactly one epoch, with no read-ahead, counts exactly the planted files.
    data.reset_skip_counts()
    records = tree_source.epoch_records(
        tf.constant(0, tf.int64),
        tf.constant(0, tf.int64),
        seed=0,
        process_index=0,
        process_count=1,
        shuffle_buffer=0,
    )
    decoded = records.map(lambda r: tree_source.decode(r, min_short=RESIZE)[1])
    assert sum(decoded.as_numpy_iterator()) == n - len(bad)
    assert data.skip_counts() == PLANTED_SKIPS


def test_same_seed_same_stream_and_epochs_reshuffle(tree, tree_source):
    d, i = make_configs(source="folder", path=tree[0])
    a = flatten(take(d, i, 4, source=tree_source))
    b = flatten(take(d, i, 4, source=tree_source))
    assert a == b
    c = flatten(take(d, i, 4, source=tree_source, seed=1))
    assert [e[1:3] for e in a] != [e[1:3] for e in c]

    def epoch_paths(epoch):
        ds = tree_source.epoch_records(
            tf.constant(epoch, tf.int64),
            tf.constant(0, tf.int64),
            seed=0,
            process_index=0,
            process_count=1,
            shuffle_buffer=0,
        )
        return [r["path"] for r in ds.as_numpy_iterator()]

    e0, e1 = epoch_paths(0), epoch_paths(1)
    assert e0 != e1 and sorted(e0) == sorted(e1) == sorted(tree_source.paths)
    assert epoch_paths(0) == e0


def test_resume_continues_exactly_after_start(tree, tree_source):
    d, i = make_configs(source="folder", path=tree[0])
    n = tree_source.num_examples
    full = flatten(take(d, i, 14, batch_size=5, source=tree_source))  # 70 images, > 3 epochs
    positions = [(e[0], e[1]) for e in full]
    starts = [positions[k] for k in (4, 9, 19, 20, 33)]  # ends of batches, and mid-batch
    starts += [(0, n - 1), (1, n - 1)]  # right at an epoch's end
    order0 = np.random.default_rng([0, 0, 0]).permutation(n)
    bad_index = next(k for k in range(n) if (0, k) not in positions and k > 0)
    starts.append((0, bad_index))  # the last record consumed was a skipped one
    assert os.path.basename(tree_source.paths[order0[bad_index]].decode()) in (
        "truncated.jpg",
        "empty.jpg",
        "random.jpg",
        "text.png",
    )
    for start in starts:
        resumed = flatten(take(d, i, 3, batch_size=5, source=tree_source, start=start))
        after = [e for e in full if (e[0], e[1]) > start]
        assert resumed == after[: len(resumed)], start


def test_process_shards_are_disjoint_and_cover_everything(tree, tree_source):
    d, i = make_configs(source="folder", path=tree[0])
    shards = []
    for p in range(2):
        ds = tree_source.epoch_records(
            tf.constant(0, tf.int64),
            tf.constant(0, tf.int64),
            seed=0,
            process_index=p,
            process_count=2,
            shuffle_buffer=0,
        )
        shards.append({r["path"] for r in ds.as_numpy_iterator()})
        assert len(shards[-1]) == tree_source.shard_size(p, 2)
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(tree_source.paths)
    for p in range(2):
        batch = take(d, i, 1, batch_size=4, source=tree_source, process_index=p, process_count=2)
        assert batch[0]["index"].max() < tree_source.shard_size(p, 2)


def test_all_bad_files_raise_instead_of_stalling(tmp_path):
    for k in range(3):
        write(str(tmp_path / f"bad{k}.jpg"), b"not a jpeg")
    d, i = make_configs(source="folder", path=str(tmp_path))
    with pytest.raises(Exception, match="failed to decode"):
        take(d, i, 1, batch_size=2)


def test_resize_crop_flip_handles_tiny_images_and_matches_full_resize():
    key = tf.constant([3, 4], tf.int64)
    for shape in [(1, 1, 3), (5, 500, 3), (500, 5, 3), (37, 41, 3), (300, 200, 3)]:
        image = tf.constant(photo(shape[0], shape[1], 0))
        out = data.resize_crop_flip(image, key, resize_short=RESIZE, crop=CROP, flip=False)
        assert out.shape == (CROP, CROP, 3) and out.dtype == tf.uint8
        # Same pixels as resizing the whole image, then cropping somewhere.
        short = min(shape[:2])
        size = [max(RESIZE, round(s * RESIZE / short)) for s in shape[:2]]
        full = (
            tf.saturate_cast(
                tf.round(tf.image.resize(image, size, method="bilinear", antialias=True)), tf.uint8
            )
            .numpy()
            .astype(int)
        )
        best = min(
            np.abs(full[y : y + CROP, x : x + CROP] - out.numpy().astype(int)).max()
            for y in range(size[0] - CROP + 1)
            for x in range(size[1] - CROP + 1)
        )
        assert best <= 1, shape


# ----------------------------------------------------------------------------- demo, TFDS, CIFAR


def test_demo_source_is_real_and_deterministic():
    d, i = make_configs(source="demo", demo_size=64)
    i.resize_short, i.crop = 64, 63
    a, b = take(d, i, 2, batch_size=8), take(d, i, 2, batch_size=8)
    assert flatten(a) == flatten(b)
    source = data.make_source(d)
    assert source.num_examples == 64 and len(source.class_names) >= 4
    assert np.array_equal(source.boxes, data.make_source(d).boxes)
    for batch in a:
        assert batch["image"].shape == (8, 63, 63, 3)
        assert all(np.std(img) > 10 for img in batch["image"])
        assert set(batch["label"].tolist()) <= set(range(len(source.class_names)))


def test_tfds_missing_dataset_says_how_to_prepare_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    d, _ = make_configs(source="tfds", name="imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        data.make_source(d)
    message = str(info.value)
    assert "tfds build imagenet2012 --manual_dir=" in message
    assert f"--data_dir={tmp_path}" in message and "config.data.data_dir" in message
    assert "ILSVRC2012_img_train.tar" in message
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []  # nothing downloaded
    d.name = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="config.data.name='no_such_dataset_xyz'"):
        data.make_source(d)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A small TFDS dataset prepared locally (no downloads): 30 images in 4 shards."""
    import tensorflow_datasets as tfds

    with tfds.core.registered.skip_registration():

        class SslJaxTestImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Image(),
                            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
                        }
                    ),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                for k in range(30):
                    yield k, {"image": photo(20 + k, 30, k), "label": k % 3}

    root = str(tmp_path_factory.mktemp("tfds"))
    SslJaxTestImages(data_dir=root).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4)
    )
    return root


def test_tfds_source_reads_deterministically_and_resumes(tfds_dir):
    d, i = make_configs(source="tfds", name="ssl_jax_test_images", data_dir=tfds_dir)
    source = data.make_source(d)
    assert source.num_examples == 30 and source.class_names == ("a", "b", "c")
    full = flatten(take(d, i, 14, batch_size=5, source=source))  # 70 images: 2+ epochs
    assert [e[:2] for e in full[:30]] == [(0, k) for k in range(30)]
    assert full == flatten(take(d, i, 14, batch_size=5, source=source))
    assert len({e[3] for e in full[:30]}) == 30
    for start in [(0, 6), (0, 29), (1, 3)]:
        resumed = flatten(take(d, i, 2, batch_size=5, source=source, start=start))
        after = [e for e in full if (e[0], e[1]) > start]
        assert resumed == after[: len(resumed)], start

    def record_ids(epoch, process_index, process_count):
        ds = source.epoch_records(
            tf.constant(epoch, tf.int64),
            tf.constant(0, tf.int64),
            seed=0,
            process_index=process_index,
            process_count=process_count,
            shuffle_buffer=4,
        )
        return [r["id"] for r in ds.as_numpy_iterator()]

    epoch0, epoch1 = record_ids(0, 0, 1), record_ids(1, 0, 1)
    assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == 30
    assert record_ids(0, 0, 1) == epoch0
    shard0, shard1 = set(record_ids(0, 0, 2)), set(record_ids(0, 1, 2))
    assert not shard0 & shard1 and shard0 | shard1 == set(epoch0)


def test_cifar10_folder(cifar10_dir):
    d, i = make_configs(source="folder", path=os.path.join(cifar10_dir, "train"))
    i.resize_short, i.crop = 256, 255
    source = data.make_source(d)
    assert source.num_examples == 10_000
    assert source.class_names == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    batch = take(d, i, 1, batch_size=16, source=source)[0]
    assert batch["image"].shape == (16, 255, 255, 3)  # 32x32 upscaled to the crop
    assert all(np.std(img) > 10 for img in batch["image"])
    assert set(batch["label"].tolist()) <= set(range(10))
