"""Workdir files on object stores: TensorFlow's in-memory ram:// file system stands in for gs://."""

import numpy as np

from ssl_jax import fileio
from ssl_jax.train import metrics as metrics_lib


def test_metrics_on_an_object_store():
    workdir = "ram://fileio_test/run"
    writer = metrics_lib.MetricsWriter(workdir, start_step=0, tensorboard=False)
    writer.write(2, {"loss": 1.5})
    writer.write(4, {"loss": 1.25})
    assert [r["step"] for r in metrics_lib.read_metrics(workdir)] == [2, 4]
    # A resume from step 2 drops the later row, as on a local disk.
    metrics_lib.MetricsWriter(workdir, start_step=2, tensorboard=False)
    assert metrics_lib.read_metrics(workdir) == [{"step": 2, "loss": 1.5}]


def test_priors_and_pictures_on_an_object_store():
    from ssl_jax.colorization import predict, task

    path = "ram://fileio_test/priors.npy"
    priors = np.random.default_rng(0).random(313)
    task.save_priors(path, priors, {"images": 1})
    np.testing.assert_allclose(task.load_priors(path), priors / priors.sum())
    assert fileio.isfile("ram://fileio_test/priors.json")
    image = np.zeros((8, 8, 3), np.uint8)
    out = predict.write_grid([[image, image]], "ram://fileio_test/samples/grid.png")
    assert fileio.isfile(out)


def test_local_paths_unchanged(tmp_path):
    path = str(tmp_path / "a" / "b.txt")
    fileio.makedirs(str(tmp_path / "a"))
    with fileio.open_file(path, "w") as f:
        f.write("x")
    with fileio.open_file(path, "a") as f:
        f.write("y")
    assert open(path).read() == "xy" and fileio.isfile(path) and not fileio.is_url(path)
