r"""Jigsaw pretext, ResNet-50, ImageNet-1k: the paper's recipe (VISSL's schedule).

  python -m ssl_jax.main --config=configs/jigsaw_r50.py --workdir=/tmp/jigsaw_r50

ImageNet-1k comes from TFDS ``imagenet2012`` (prepare it once with
``tfds build imagenet2012 --manual_dir=DIR_WITH_TARS --data_dir=D`` and pass
``--config.data.data_dir=D``). Batch 256, SGD 0.1 (scaled with batch), 5-epoch warm-up from
0.025, x0.1 at epochs 30/60/90/100, 105 epochs, |P| = 2000 (max_avg, seed 0).

Cost (estimate): 6.1 GFLOP forward per image (9 tiles of 64x64), 16.5 GFLOP per training image
by XLA's count, 2.2 EFLOP for the 105 epochs (134M images). Decoding and resizing ImageNet JPEGs
takes 2 to 4 ms of a CPU core per image, about 100 core-hours in all, so on one 8-GPU host plan
for the input pipeline's pace (several hours with 32+ cores); measured images/s per device are in
BENCHMARKS.md.

Arguments (after a colon, comma-separated):
  runlocal      the built-in demo images, narrow trunk, a few hundred steps on a CPU (< 5 min).
  perms=N       |P|, the problem-complexity axis (100 ... 10000).
  folder=PATH   train on an image folder (class subfolders or flat), e.g. CIFAR-10 JPEGs.
  filelist=PATH train on a text file of image paths (local or gs://), e.g. a YFCC subset.
  depth=D, width=W  other trunk capacities (18, 34, 50, 101, 152; width multiplier).

  python -m ssl_jax.main --config=configs/jigsaw_r50.py:runlocal --workdir=/tmp/jig_demo
  python -m ssl_jax.main --config=configs/jigsaw_r50.py:folder=/data/cifar10/train --workdir=W
"""

from ssl_jax import config_defaults, config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, runlocal=False, perms=2000, folder="", filelist="", depth=50, width=1.0
    )
    c = config_defaults.pretrain()
    c.task = "jigsaw"
    c.model.name = "resnet"
    c.model.depth = arg.depth
    c.model.width = arg.width

    c.jigsaw = config_defaults.jigsaw(arg.perms, tile_features=1000, hidden_features=0)

    config_defaults.data_from_args(c, folder=arg.folder, filelist=arg.filelist)
    if arg.runlocal:
        runlocal(c, arg)
    return c


def runlocal(c, arg):
    """Small enough to learn visibly on 2 CPU cores in about 3 minutes.

    The puzzle keeps its 3x3 form at half the size (111-pixel crop, 37-pixel cells, 32-pixel
    tiles) so a ResNet-50 at 1/8 width takes about 0.2 s per step of 32 puzzles.
    """
    config_defaults.runlocal_data(c)
    config_defaults.runlocal_puzzle(c)
    c.model.width = 0.125 if arg.width == 1.0 else arg.width
    c.jigsaw.num_perms = 100 if arg.perms == 2000 else arg.perms
