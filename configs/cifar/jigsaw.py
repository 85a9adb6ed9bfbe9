r"""Jigsaw at small scale: CIFAR-10-sized images on 2 CPU cores (RESULTS.md).

  python -m ssl_jax.main --config=configs/cifar/jigsaw.py --workdir=W

The paper's 3x3 puzzle at a third of its size on 32-pixel images upscaled 4x: short side 128,
111-pixel crop, 37-pixel cells, 32-pixel tiles (each tile sees about 8 x 8 of the original
pixels), colour jitter as the paper (66 % of tiles grey); |P| = 100 (max_avg); ResNet-18 at 1/8
width (or the AlexNet-style trunk at 1/8 width, ``model=alexnet``, on 40-pixel tiles of a
126-pixel crop, the smallest tile its conv1 and pools take). Batch 32 (BN over 16), lr 0.0125
(0.1 x 32 / 256), 1 warm-up epoch, 10 epochs with x0.1 at 8: 3120 steps on the 10,000 training
images, about 5 to 8 minutes on 2 cores.

Arguments (after a colon, comma-separated):
  data=PATH        image folder (default ../shared/data/cifar10/train beside the repository).
  perms=N          |P| (problem complexity).
  model=r18|alexnet, width=W   the trunk (capacity; width 0: the recipe's, 1/8 for both
                   trunks).
"""

import os

from ssl_jax import config_defaults, config_lib
from ssl_jax.sweep import CIFAR10, REPO_ROOT

CIFAR10_TRAIN = os.path.join(CIFAR10, "train")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, data=CIFAR10_TRAIN, perms=100, model="r18", width=0.0)
    if arg.model == "r18":
        c = config_lib.load_config(
            os.path.join(REPO_ROOT, "configs", "jigsaw_r50.py")
            + f":runlocal,folder={arg.data},depth=18,width={arg.width or 0.125},perms={arg.perms}"
        )
    elif arg.model == "alexnet":
        c = config_lib.load_config(
            os.path.join(REPO_ROOT, "configs", "jigsaw_alexnet.py")
            + f":runlocal,folder={arg.data},perms={arg.perms}"
        )
        c.model.width = arg.width or 0.125
        # The ResNet recipe's geometry with the smallest tile AlexNet takes (conv1 stride 2 and
        # three 3/2 max-pools need at least 39 pixels): 40-pixel tiles in 42-pixel cells of a
        # 126-pixel crop; each tile sees about 10 x 10 of the original pixels.
        c.input.resize_short, c.input.crop = 128, 126
        c.jigsaw.cell, c.jigsaw.tile = 42, 40
    else:
        raise config_lib.ConfigError(f"model={arg.model!r}; allowed: r18, alexnet.")
    config_defaults.small_scale(c)
    return c
