"""ssl_jax.paths on a local directory and on a GCS emulator bucket: files, listings, orbax
checkpoints and TensorBoard events."""

import os
import subprocess
import sys
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ssl_jax import paths


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """A fresh, not yet existing directory: under tmp_path, or a new prefix in the bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"{bucket}/{request.node.originalname}-{uuid.uuid4().hex[:8]}"


def _tree(root):
    """Files a.txt, d/b.txt, d/e/c.npy under root."""
    paths.write_text(paths.join(root, "a.txt"), "a")
    paths.write_text(paths.join(root, "d", "b.txt"), "b")
    paths.save_npy(paths.join(root, "d", "e", "c.npy"), np.arange(3))


def test_names(tmp_path, monkeypatch):
    assert paths.is_url("gs://b/x") and not paths.is_url("/tmp/x") and not paths.is_url("x")
    assert paths.join("gs://b", "run", "ckpt") == "gs://b/run/ckpt"
    assert paths.join("gs://b/run/", "/ckpt/", "x.json") == "gs://b/run/ckpt/x.json"
    assert paths.join("local", "gs://b/x", "y") == "gs://b/x/y"
    assert paths.join("a", "b") == os.path.join("a", "b")
    assert paths.dirname("gs://b/run/x.json") == "gs://b/run"
    assert paths.dirname("gs://b/run") == "gs://b" and paths.dirname("gs://b") == "gs://b"
    assert paths.basename("gs://b/run/x.json") == "x.json" and paths.basename("gs://b") == ""
    assert paths.dirname("/a/b") == "/a" and paths.basename("/a/b") == "b"
    monkeypatch.chdir(tmp_path)
    assert paths.abspath("gs://b/x") == "gs://b/x"  # os.path.abspath gives <cwd>/gs:/b/x
    assert paths.abspath("run") == os.path.join(str(tmp_path), "run")


def test_round_trips(root):
    paths.write_bytes(paths.join(root, "x.bin"), b"\x00\x01")
    assert paths.read_bytes(paths.join(root, "x.bin")) == b"\x00\x01"
    paths.write_text(paths.join(root, "x.txt"), "héllo\n")
    assert paths.read_text(paths.join(root, "x.txt")) == "héllo\n"
    paths.write_json(paths.join(root, "sub", "x.json"), {"a": [1, 2.5], "b": None})
    assert paths.read_json(paths.join(root, "sub", "x.json")) == {"a": [1, 2.5], "b": None}
    paths.write_json(paths.join(root, "np.json"), {"n": np.float32(0.5), "a": np.arange(2)})
    assert paths.read_json(paths.join(root, "np.json")) == {"n": 0.5, "a": [0, 1]}
    for array in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([7], np.int64)):
        paths.save_npy(paths.join(root, "x.npy"), array)
        loaded = paths.load_npy(paths.join(root, "x.npy"))
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
    with paths.open(paths.join(root, "f.txt"), "w") as f:
        f.write("one\n")
        f.write("two\n")
    with paths.open(paths.join(root, "f.txt")) as f:
        assert [line for line in f] == ["one\n", "two\n"]
    with paths.open(paths.join(root, "f.bin"), "wb") as f:
        f.write(b"ab")
    with paths.open(paths.join(root, "f.bin"), "rb") as f:
        assert f.read() == b"ab"
    # Overwriting replaces the whole file.
    paths.write_text(paths.join(root, "x.txt"), "b")
    assert paths.read_text(paths.join(root, "x.txt")) == "b"
    with pytest.raises(ValueError, match="mode must be one of"):
        paths.open(paths.join(root, "x.txt"), "r+")


def test_append(root):
    path = paths.join(root, "metrics.jsonl")
    for row in ("1\n", "2\n"):  # the first append creates the file
        with paths.open(path, "a") as f:
            f.write(row)
    assert paths.read_text(path) == "1\n2\n"
    with paths.open(paths.join(root, "b.bin"), "ab") as f:
        f.write(b"x")
    with paths.open(paths.join(root, "b.bin"), "ab") as f:
        f.write(b"y")
    assert paths.read_bytes(paths.join(root, "b.bin")) == b"xy"


def test_an_object_write_that_raises_uploads_nothing(gcs_bucket):
    path = f"{gcs_bucket}/raises-{uuid.uuid4().hex[:8]}/x.txt"
    paths.write_text(path, "old")
    for mode, data in (("w", "new"), ("wb", b"new"), ("a", "more")):
        with pytest.raises(RuntimeError), paths.open(path, mode) as f:
            f.write(data)
            raise RuntimeError
    assert paths.read_text(path) == "old"


def test_local_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    path = str(tmp_path / "x.json")
    paths.write_json(path, {"a": 1})
    paths.write_json(path, {"a": 2})
    assert os.listdir(tmp_path) == ["x.json"] and paths.read_json(path) == {"a": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as open() would make it


def test_listing(root):
    _tree(root)
    assert paths.listdir(root) == ["a.txt", "d"]
    assert paths.listdir(paths.join(root, "d")) == ["b.txt", "e"]
    assert paths.listdir(paths.join(root, "d") + "/") == ["b.txt", "e"]
    assert paths.isdir(root) and paths.isdir(paths.join(root, "d", "e"))
    assert not paths.isfile(paths.join(root, "d")) and paths.exists(paths.join(root, "d"))
    assert paths.isfile(paths.join(root, "a.txt")) and not paths.isdir(paths.join(root, "a.txt"))
    # A prefix of a name is not a directory or a file.
    for partial in ("d/b", "d/e/c", "a"):
        path = paths.join(root, partial)
        assert not paths.exists(path) and not paths.isdir(path) and not paths.isfile(path)
    with pytest.raises(NotADirectoryError):
        paths.listdir(paths.join(root, "a.txt"))


def test_walk(root):
    _tree(root)
    walked = [(d[len(root) :], dirs, files) for d, dirs, files in paths.walk(root)]
    assert walked == [
        ("", ["d"], ["a.txt"]),
        ("/d", ["e"], ["b.txt"]),
        ("/d/e", [], ["c.npy"]),
    ]
    pruned = []
    for dirpath, dirnames, _ in paths.walk(root):
        pruned.append(dirpath[len(root) :])
        dirnames[:] = [d for d in dirnames if d != "e"]
    assert pruned == ["", "/d"]
    assert list(paths.walk(paths.join(root, "missing"))) == []


def test_glob(root):
    _tree(root)
    j = lambda *parts: paths.join(root, *parts)
    assert paths.glob(j("*.txt")) == [j("a.txt")]
    assert paths.glob(j("*")) == [j("a.txt"), j("d")]
    assert paths.glob(j("d", "*", "*.npy")) == [j("d", "e", "c.npy")]
    assert paths.glob(j("**", "*.txt")) == [j("a.txt"), j("d", "b.txt")]
    assert paths.glob(j("nothing*")) == []


def test_makedirs(root):
    target = paths.join(root, "x", "y")
    paths.makedirs(target)
    paths.makedirs(target)  # again: no error
    # Locally a directory; on an object store nothing until an object is written under it.
    assert paths.isdir(target) == (not paths.is_url(root))
    paths.write_text(paths.join(target, "f.txt"), "f")
    assert paths.isdir(target) and paths.listdir(target) == ["f.txt"]


def test_remove_and_rmtree(root):
    _tree(root)
    paths.remove(paths.join(root, "a.txt"))
    assert not paths.exists(paths.join(root, "a.txt"))
    with pytest.raises(IsADirectoryError):
        paths.remove(paths.join(root, "d"))
    with pytest.raises(NotADirectoryError):
        paths.rmtree(paths.join(root, "d", "b.txt"))
    paths.rmtree(paths.join(root, "d"))
    assert not paths.exists(paths.join(root, "d"))
    for missing in (paths.remove, paths.rmtree):
        path = paths.join(root, "missing")
        with pytest.raises(FileNotFoundError, match="missing"):
            missing(path)
    paths.rmtree(paths.join(root, "missing"), missing_ok=True)


def test_rmtree_refuses_a_bucket(gcs_bucket):
    with pytest.raises(ValueError, match="whole bucket"):
        paths.rmtree(gcs_bucket)


def test_replace(root):
    src, dst = paths.join(root, "new.json"), paths.join(root, "old.json")
    paths.write_json(dst, {"v": 1})
    paths.write_json(src, {"v": 2})
    paths.replace(src, dst)
    assert paths.read_json(dst) == {"v": 2} and not paths.exists(src)
    assert paths.listdir(root) == ["old.json"]
    with pytest.raises(FileNotFoundError, match="new.json"):
        paths.replace(src, dst)


def test_replace_between_a_local_disk_and_a_bucket(tmp_path, gcs_bucket):
    local, remote = str(tmp_path / "x.txt"), f"{gcs_bucket}/cross-{uuid.uuid4().hex[:8]}/x.txt"
    paths.write_text(local, "x")
    paths.replace(local, remote)
    assert paths.read_text(remote) == "x" and not os.path.exists(local)
    paths.replace(remote, local)
    assert paths.read_text(local) == "x" and not paths.exists(remote)


def test_missing_files_name_the_path(root):
    path = paths.join(root, "nope", "x.json")
    for read in (
        paths.read_bytes,
        paths.read_text,
        paths.read_json,
        paths.load_npy,
        paths.open,
        paths.listdir,
    ):
        with pytest.raises(FileNotFoundError) as error:
            read(path)
        assert path in str(error.value)
    assert not paths.exists(path) and not paths.isfile(path) and not paths.isdir(path)


def test_emulator_settings(gcs_bucket):
    host = paths.configure()
    assert host == os.environ["STORAGE_EMULATOR_HOST"]
    assert os.environ["TENSORSTORE_GCS_HTTP_URL"] == host
    assert os.environ["EPATH_USE_TF"] == "false"
    assert paths.configure() == host  # idempotent
    directory = paths.checkpoint_directory(f"{gcs_bucket}/epath")
    assert str(directory) == f"{gcs_bucket}/epath"
    (directory / "x.txt").write_text("x")  # etils.epath reaches the emulator
    assert paths.read_text(f"{gcs_bucket}/epath/x.txt") == "x"


def test_the_emulator_answers_tensorstore_as_gcs_does(gcs_bucket):
    """The two fixes tests/gcs.py makes to the emulator: generations on reads, listing ranges."""
    import tensorstore as ts

    paths.configure()
    prefix = f"ts-{uuid.uuid4().hex[:8]}/"
    paths.write_text(f"{gcs_bucket}/elsewhere.txt", "not under the prefix")
    store = ts.KvStore.open({"driver": "gcs", "bucket": "ssl-test", "path": prefix}).result()
    store.write("k", b"1").result()
    read = store.read("k").result()
    # A conditional write on the generation just read: "Malformed StorageGeneration" when the
    # emulator sends no x-goog-generation header.
    store.write("k", b"2", if_equal=read.stamp.generation).result()
    assert store.read("k").result().value == b"2"
    assert store.list().result() == [b"k"]


def _state():
    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    return {
        "params": {
            "w": jax.device_put(jnp.arange(64, dtype=jnp.float32).reshape(8, 8), sharded),
            "b": jnp.linspace(0.0, 1.0, 5, dtype=jnp.float32),
        },
        "step": jnp.int32(7),
    }


def _manager(directory):
    return ocp.CheckpointManager(
        paths.checkpoint_directory(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=True, create=True
        ),
    )


def _files_under(directory):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(directory) for f in files) + sorted(
        d for d, _, _ in os.walk(directory)
    )


def test_orbax_checkpoints(root, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _files_under(cwd)
    directory = paths.join(root, "checkpoints")
    state = _state()
    manager = _manager(directory)
    for step in (1, 2, 3):
        scaled = jax.tree.map(lambda x, s=step: x * s, state)
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(scaled),
                data=ocp.args.JsonSave({"positions": [[0, step]]}),
            ),
            force=True,
        )
    manager.wait_until_finished()
    manager.close()

    manager = _manager(directory)
    assert manager.latest_step() == 3 and manager.all_steps() == [2, 3]
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    restored = manager.restore(
        3,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
        ),
    )
    manager.close()
    for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state), strict=True):
        assert got.dtype == want.dtype and got.sharding == want.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want) * 3)
    assert restored.data == {"positions": [[0, 3]]}
    assert paths.listdir(directory) == ["2", "3"]  # step 1 deleted from the store
    written = [f for _, _, files in paths.walk(paths.join(directory, "3")) for f in files]
    assert "manifest.ocdbt" in written  # the arrays went through tensorstore to the same store
    assert _files_under(cwd) == before  # nothing written relative to the working directory


def _read_scalars(logdir):
    """{tag: [(step, value)]} as TensorBoard's own loader reads the event files in logdir."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util

    accumulator = plugin_event_accumulator.EventAccumulator(logdir)
    accumulator.Reload()
    tags = accumulator.PluginTagToContent("scalars")
    return {
        tag: [
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in accumulator.Tensors(tag)
        ]
        for tag in tags
    }


def test_tensorboard_events(root, tmp_path):
    logdir = paths.join(root, "tensorboard")
    with paths.summary_writer(logdir) as writer:
        writer.scalars({"loss": 2.5, "lr": 0.1}, step=1)
        writer.flush()
        assert paths.isfile(writer.path) and "tfevents" in paths.basename(writer.path)
        writer.scalar("loss", 1.25, step=2)
    local = logdir
    if paths.is_url(logdir):  # TensorBoard reads a copy; the copy is what the bucket holds
        local = str(tmp_path / "downloaded")
        for name in paths.listdir(logdir):
            paths.write_bytes(os.path.join(local, name), paths.read_bytes(paths.join(logdir, name)))
    scalars = _read_scalars(local)
    assert scalars["loss"] == [(1, 2.5), (2, 1.25)]
    assert scalars["lr"] == [(1, pytest.approx(0.1))]


def test_tensorboard_events_roll_over_to_new_files_on_an_object_store(gcs_bucket, tmp_path):
    logdir = f"{gcs_bucket}/tb-{uuid.uuid4().hex[:8]}"
    writer = paths.summary_writer(logdir, flush_secs=0.0, max_file_bytes=300)
    for step in range(10):
        writer.scalar("loss", float(step), step=step)
    writer.close()
    names = paths.listdir(logdir)
    assert len(names) >= 2  # each file stops at the first event past 300 bytes
    for name in names:
        paths.write_bytes(str(tmp_path / name), paths.read_bytes(paths.join(logdir, name)))
    assert _read_scalars(str(tmp_path))["loss"] == [(s, float(s)) for s in range(10)]


def test_a_fresh_process(tmp_path, gcs_bucket):
    """In a new interpreter: etils.epath used on a local path before anything else (it then
    decides, once, whether gs:// goes through TensorFlow) still lets orbax's epath reach the
    emulator; and local paths, gs://, orbax's directory and TensorBoard events import no TF."""
    code = f"""
import sys
from etils import epath
assert not epath.Path({str(tmp_path)!r}).joinpath("nothing").exists()
from ssl_jax import paths
for root in ({str(tmp_path)!r}, {gcs_bucket + "/fresh"!r}):
    paths.write_json(paths.join(root, "x.json"), {{}})
    assert paths.listdir(root) == ["x.json"]
    with paths.summary_writer(paths.join(root, "tb")) as writer:
        writer.scalar("a", 1.0, 1)
    paths.makedirs(paths.join(root, "ckpt"))
    (paths.checkpoint_directory(paths.join(root, "ckpt")) / "y.txt").write_text("y")
    assert paths.read_text(paths.join(root, "ckpt", "y.txt")) == "y"
assert "tensorflow" not in sys.modules, "tensorflow was imported"
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
