r"""A small scaling sweep on CIFAR-10 that runs end to end on a CPU: Jigsaw, a narrow ResNet-18,
two data sizes x two |P|, each pretraining followed by SVMs on its frozen layers.

  python -m ssl_jax.sweep --config=configs/sweeps/cifar_small.py:sweep_dir=/tmp/sweep_cifar

Grid (``grid="product"``): data sizes {1000, 4000} (nested subsets of ../shared/data/cifar10/train,
the 32-pixel JPEGs upscaled to the half-size puzzle of ``jigsaw_r50.py:runlocal``: 111-pixel
crop, 32-pixel tiles) x |P| in {10, 100}: 4 runs, ResNet-18 at 1/8 width, batch 32, 300 updates
each (``steps``: the same number of updates at both sizes, the runlocal schedule scaled to end
there). Benchmark: the VOC07 SVM protocol (configs/evals/voc07_svm.py) on CIFAR-10 as a 10-class
set (2000 train / 1000 test images, 64-pixel inputs, adaptive pooling, 3 costs, liblinear) on
the res3, res4, res5 and pool5 taps. Results and figures go to sweep_dir/results (runs.md, runs.csv,
fig_data_size.png, fig_permutations.png; the Colorization and model-gap figures are left out:
one task, one model). Expected: 15 to 20 min on 2 shared CPU cores (17 min measured); the
numbers are a smoke test of the machinery (300 updates), not a reproduction of the paper's
trends.

Arguments (after a colon, comma-separated):
  sweep_dir=PATH   the sweep's root (default /tmp/ssl_jax_sweeps/cifar_small).
  data=PATH        a folder with train/ and test/ class subfolders (default
                   ../shared/data/cifar10 next to the repository).
  steps=N          updates per pretraining (default 300).
  linear           also chain a short linear benchmark (configs/evals/linear.py, 300 steps).
"""

import os

import ml_collections

from ssl_jax import config_lib
from ssl_jax.sweep import CIFAR10, benchmark, results_config


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, sweep_dir="/tmp/ssl_jax_sweeps/cifar_small", data=CIFAR10, steps=300, linear=False
    )
    train, test = os.path.join(arg.data, "train"), os.path.join(arg.data, "test")
    c = ml_collections.ConfigDict()
    c.name = "cifar_small"
    c.sweep_dir = arg.sweep_dir
    c.tasks = ("jigsaw",)
    c.models = ("r18tiny",)
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain["jigsaw_r18tiny"] = (
        f"configs/jigsaw_r50.py:runlocal,folder={train},depth=18,width=0.125"
    )
    c.data_sizes = (1000, 4000)
    c.data_size_key = "data.data_size"
    c.complexity = ml_collections.ConfigDict({"jigsaw": (10, 100)})
    c.complexity_key = ml_collections.ConfigDict({"jigsaw": "jigsaw.num_perms"})
    c.complexity_label = ml_collections.ConfigDict({"jigsaw": "P"})
    c.grid = "product"
    c.default_data_size = 1000
    c.default_complexity = ml_collections.ConfigDict({"jigsaw": 100})

    c.steps = arg.steps
    c.overrides = (
        "evals.probe.every_steps=0",  # the demo-photo probe: not this data
        "train.progress_bar=False",  # logs go to files
    )

    c.benchmarks = ml_collections.ConfigDict()
    c.benchmarks.voc07_svm = benchmark(
        f"configs/evals/voc07_svm.py:train={train},test={test}",
        (
            "data.train.max_examples=2000",
            "data.test.max_examples=1000",
            "features.size=64",
            "features.pooling=adaptive",
            'features.layers=("res3","res4","res5","pool5")',
            "svm.costs=(0.01,0.1,1.0)",
        ),
    )
    if arg.linear:
        c.benchmarks.linear = benchmark(
            f"configs/evals/linear.py:runlocal,train={train},test={test}",
            (
                "features.size=64",
                "optim.batch_size=64",
                "optim.steps=300",
                "optim.decay_every=200",
                "data.test.max_examples=1000",
            ),
        )

    c.python = ""
    c.slurm = ml_collections.ConfigDict()
    c.slurm.pretrain_args = "--gpus=1 --cpus-per-task=8 --time=01:00:00"
    c.slurm.eval_args = "--gpus=1 --cpus-per-task=8 --time=01:00:00"
    c.results = results_config("voc07_svm", gap_models=("r18tiny", "r50"))
    return c
