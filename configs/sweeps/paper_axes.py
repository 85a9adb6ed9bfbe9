r"""The paper's scaling study: Jigsaw and Colorization x AlexNet and ResNet-50 x YFCC data size x
problem complexity, each pretraining followed by the VOC07 SVM, VOC07 low-shot and Places205
linear benchmarks (Goyal et al. 2019, Figures 1-3; PROTOCOLS.md, "What the paper claims").

  python -m ssl_jax.sweep --config=configs/sweeps/paper_axes.py:yfcc=LIST,vocdevkit=VOC,\
places205_train=T,places205_val=V --config.sweep_dir=/big/disk/paper_axes --emit=slurm > submit.sh

Grid (``grid="axes"``, the paper's one-axis-at-a-time design): every data size in
{1M, 10M, 50M, 100M} at |P| = 2000 (Jigsaw) / K = 10 (Colorization), and every |P| in
{100, 701, 2000, 5000, 10000} / K in {2, 5, 10, 20, 40, 80, 160, 313} at 1M images; both models:
2 x (4 + 4) + 2 x (4 + 7) = 38 runs (``:product``: the full cross product, 104 runs). |P| only
varies for Jigsaw and K only for Colorization, as in the paper. The data sizes are nested subsets
of one YFCC-100M file list (config.data.data_size: the first N images in hash order). Schedule:
the base configs' recipe with the paper's YFCC schedule, 10 epochs, x0.1 at 3/6/9, and no
warm-up (``steps = 0``: epochs fixed, so more data means more updates). The paper gives the YFCC
schedule without a warm-up, and the ImageNet recipe's 5-epoch warm-up would end after the first
decay at epoch 3 (the learning rate would climb to epoch 5 and then drop straight to 0.01: the
config check refuses that). At the paper's batch of 256 (lr 0.1) no warm-up is needed; for a much
larger batch add one that ends well before epoch 3, e.g. ``optim.warmup_epochs=1.0`` in
config.overrides. Cost: far beyond one machine; emit the commands
(``--emit=commands``) or a Slurm script (``--emit=slurm``) and run them on a cluster.

Sweep config format (every sweep config; ``get_config(arg)`` returns this ConfigDict):
  name            label of the sweep.
  sweep_dir       root of the sweep; a run's workdirs are
                  sweep_dir/<task>_<model>_n<size>_<P|K><value>/{pretrain,eval_<benchmark>}
                  (then _<label><value> for a second axis off its default, e.g. ..._K10_bin15).
  tasks, models   the task and model axes (names used in run names and figures).
  pretrain        a base pretraining config spec per "<task>_<model>" (path[:arg]; relative paths
                  resolve against the working directory, then the repository root).
  data_sizes      the data-size axis: image counts (> 1), fractions in (0, 1] or 0 (all).
  data_size_key   the pretraining config key each size is written to (data.data_size).
  complexity      per task, the problem-complexity values (|P| for jigsaw, K for colorization).
  complexity_key  per task, the pretraining config key of that value.
  complexity_label  per task, the letter in run names and tables ("P" / "K").
  extra_axes      optional, per task, second axes by label: key, values, default (Colorization's
                  ab bin size: {"bin": {key: colorization.bin_size, values: (5, 10, 15, 20),
                  default: 10}}); "axes" sweeps each at the default data size and complexity.
  grid            "product" (every combination) or "axes" (each axis alone, at the defaults).
  default_data_size, default_complexity (per task): the fixed values of grid="axes".
  steps           0: keep the base config's epochs; N > 0: every run makes N updates (the
                  schedule's epochs, warm-up and decay points scaled to end there).
  overrides       "key=value" fields set in every pretraining run (after the base config).
  benchmarks      per name, ``config`` (an evaluation config spec) and ``overrides``
                  ("key=value" fields); each runs after the pretraining with
                  --config.pretrained=<pretrain workdir>, in workdir eval_<name>.
  python          interpreter of the launched commands ("" = the one running the sweep).
  slurm           pretrain_args / eval_args: extra sbatch options of the two kinds of jobs.
  results         metric (the benchmark of the figures; "" = voc07_svm if present), lowshot_k
                  (0 = the largest k), gap_models (two models: the gap figure plots second - first).

Arguments (after a colon, comma-separated):
  yfcc=PATH             the YFCC-100M file list (one image path per line, local or gs://).
  vocdevkit=PATH        VOC2007 as a VOCdevkit folder ("" = TFDS voc/2007).
  places205_train=PATH, places205_val=PATH  Places205 train / val (folders or "path label" lists).
  sweep_dir=PATH        the sweep's root.
  product               the full cross product instead of one axis at a time.
  bins                  also FAIR's ab bin sizes 5, 15, 20 for Colorization (K = 10, 1M images;
                        runs ..._K10_bin5 etc.; the bins are found in each run's data): +6 runs.
                        With product, K above a size's histogram cells is refused (K = 160, 313
                        at size 20: 144 cells; 313 at 15: 289).
"""

import ml_collections

from ssl_jax import config_lib
from ssl_jax.sweep import benchmark, bin_size_axis, results_config

YFCC_SIZES = (1_000_000, 10_000_000, 50_000_000, 100_000_000)
PERMUTATIONS = (100, 701, 2000, 5000, 10000)
COLORIZATION_K = (2, 5, 10, 20, 40, 80, 160, 313)


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg,
        yfcc="/path/to/yfcc100m_filelist.txt",
        vocdevkit="",
        places205_train="/path/to/places205/train_places205.csv",
        places205_val="/path/to/places205/val_places205.csv",
        sweep_dir="/path/to/sweeps/paper_axes",
        product=False,
        bins=False,
    )
    c = ml_collections.ConfigDict()
    c.name = "paper_axes"
    c.sweep_dir = arg.sweep_dir
    c.tasks = ("jigsaw", "colorization")
    c.models = ("alexnet", "r50")
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.jigsaw_alexnet = "configs/jigsaw_alexnet.py"
    c.pretrain.jigsaw_r50 = "configs/jigsaw_r50.py"
    c.pretrain.colorization_alexnet = "configs/colorize_alexnet.py"
    c.pretrain.colorization_r50 = "configs/colorize_r50.py"

    c.data_sizes = YFCC_SIZES
    c.data_size_key = "data.data_size"
    c.complexity = ml_collections.ConfigDict(
        {"jigsaw": PERMUTATIONS, "colorization": COLORIZATION_K}
    )
    c.complexity_key = ml_collections.ConfigDict(
        {"jigsaw": "jigsaw.num_perms", "colorization": "colorization.k"}
    )
    c.complexity_label = ml_collections.ConfigDict({"jigsaw": "P", "colorization": "K"})
    c.extra_axes = ml_collections.ConfigDict()
    if arg.bins:
        c.extra_axes.colorization = bin_size_axis()
    c.grid = "product" if arg.product else "axes"
    c.default_data_size = YFCC_SIZES[0]
    c.default_complexity = ml_collections.ConfigDict({"jigsaw": 2000, "colorization": 10})

    c.steps = 0  # the YFCC schedule in epochs below
    c.overrides = (
        "data.source=filelist",
        f"data.path={arg.yfcc}",
        "optim.epochs=10.0",
        "optim.decay_epochs=(3.0, 6.0, 9.0)",
        "optim.warmup_epochs=0.0",
    )

    voc = f"vocdevkit={arg.vocdevkit}" if arg.vocdevkit else ""
    places = f"train={arg.places205_train},test={arg.places205_val}"
    c.benchmarks = ml_collections.ConfigDict()
    c.benchmarks.voc07_svm = benchmark(_spec("configs/evals/voc07_svm.py", voc))
    c.benchmarks.voc07_lowshot = benchmark(_spec("configs/evals/voc07_lowshot.py", voc))
    c.benchmarks.places205_linear = benchmark(_spec("configs/evals/places205_linear.py", places))

    c.python = ""
    c.slurm = ml_collections.ConfigDict()
    c.slurm.pretrain_args = "--nodes=1 --gpus-per-node=8 --cpus-per-task=64 --time=3-00:00:00"
    c.slurm.eval_args = "--nodes=1 --gpus-per-node=1 --cpus-per-task=16 --time=1-00:00:00"
    c.results = results_config()
    return c


def _spec(path, arg):
    return f"{path}:{arg}" if arg else path
