r"""The paper's three axes at small scale, on CIFAR-10 with the configs/cifar recipes (RESULTS.md).

  python -m ssl_jax.sweep --config=configs/sweeps/cifar_axes.py:sweep_dir=/tmp/cifar_axes
  python -m ssl_jax.sweep --config=configs/sweeps/cifar_axes.py:sweep_dir=D --only=jigsaw_r18

Grid ``axes`` around the defaults (10,000 images, |P| = 100, K = 10): for Jigsaw and Colorization
on both trunks (ResNet-18 at 1/8 width and the AlexNet-style net at 1/8 width, the capacity
axis), data size 1,000 / 2,500 / 5,000 / 10,000 (nested subsets of the training folder, in hash
order of the file names) and |P| in {10, 100, 1000} or K in {2, 10, 40}: 24 runs. Every run makes
the same 3120 updates of 32 images (10 epochs of the full set), so data size changes how often
an image is seen, not the compute. Each pretraining is followed by the SVM protocol on CIFAR-10
(configs/cifar/svm.py; images read at 64 pixels for the ResNet, 112 for AlexNet). A run and its
benchmark take about 10 minutes on 2 CPU cores. ``--only`` runs part of the grid; rerunning
skips what is done. Results: sweep_dir/results (runs.md, runs.csv and the figures: mAP against
data size, |P| and K, and the AlexNet vs ResNet-18 gap against data size).

Arguments (after a colon, comma-separated):
  sweep_dir=PATH   the sweep's root (default /tmp/ssl_jax_sweeps/cifar_axes).
  data=PATH        a folder with train/ and test/ class subfolders (default
                   ../shared/data/cifar10 next to the repository).
  seed=N           the pretraining seed of every run (run the sweep again with another seed and
                   another sweep_dir for seed-to-seed spread).
  bins             also FAIR's ab bin sizes 5, 15, 20 for Colorization at K = 10 and 10,000
                   images (runs colorization_<model>_n10000_K10_bin5 etc.): +6 runs.
"""

import os

import ml_collections

from ssl_jax import config_lib
from ssl_jax.sweep import CIFAR10, benchmark, bin_size_axis, results_config


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, sweep_dir="/tmp/ssl_jax_sweeps/cifar_axes", data=CIFAR10, seed=0, bins=False
    )
    train = os.path.join(arg.data, "train")
    c = ml_collections.ConfigDict()
    c.name = "cifar_axes"
    c.sweep_dir = arg.sweep_dir
    c.tasks = ("jigsaw", "colorization")
    c.models = ("alexnet", "r18")
    c.pretrain = ml_collections.ConfigDict()
    for task, recipe in (("jigsaw", "jigsaw"), ("colorization", "colorize")):
        for model in c.models:
            c.pretrain[f"{task}_{model}"] = f"configs/cifar/{recipe}.py:data={train},model={model}"
    c.data_sizes = (1000, 2500, 5000, 10000)
    c.data_size_key = "data.data_size"
    c.complexity = ml_collections.ConfigDict(
        {"jigsaw": (10, 100, 1000), "colorization": (2, 10, 40)}
    )
    c.complexity_key = ml_collections.ConfigDict(
        {"jigsaw": "jigsaw.num_perms", "colorization": "colorization.k"}
    )
    c.complexity_label = ml_collections.ConfigDict({"jigsaw": "P", "colorization": "K"})
    c.extra_axes = ml_collections.ConfigDict()
    if arg.bins:
        c.extra_axes.colorization = bin_size_axis()
    c.grid = "axes"
    c.default_data_size = 10000
    c.default_complexity = ml_collections.ConfigDict({"jigsaw": 100, "colorization": 10})
    c.steps = 3120
    c.overrides = (f"seed={arg.seed}",)
    c.benchmarks = ml_collections.ConfigDict()
    # AlexNet's stride-4 Colorization conv1 and three pools need at least 67 pixels: its runs
    # read features at 112, the crop of its Colorization recipe.
    c.benchmarks.voc07_svm = benchmark(
        f"configs/cifar/svm.py:data={arg.data}",
        model_overrides={"alexnet": ("features.size=112",)},
    )
    c.python = ""
    c.slurm = ml_collections.ConfigDict()
    c.slurm.pretrain_args = "--nodes=1 --cpus-per-task=8 --time=02:00:00"
    c.slurm.eval_args = "--nodes=1 --cpus-per-task=8 --time=01:00:00"
    c.results = results_config(gap_models=("alexnet", "r18"))
    return c
