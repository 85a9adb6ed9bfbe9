r"""Colorization at small scale: CIFAR-10-sized images on 2 CPU cores (RESULTS.md).

  python -m ssl_jax.main --config=configs/cifar/colorize.py --workdir=W

32-pixel images upscaled to 72 on the short side, random 64-pixel crops and flips (the size the
transfer benchmarks of RESULTS.md read features at); the L channel in, 313 ab bins out at
16 x 16 (stride 4), K = 10, sigma 5, rebalancing with priors estimated from 2048 training images;
ResNet-18 at 1/8 width with res5 at stride 1 (or the AlexNet colorization variant at 1/8 width,
``model=alexnet``, on 112-pixel crops). Batch 32 (BN over 16), lr 0.0125, 1 warm-up epoch,
10 epochs with x0.1 at 8: 3120 steps on the 10,000 training images, about 4 minutes on 2 cores.

Arguments (after a colon, comma-separated):
  data=PATH        image folder (default ../shared/data/cifar10/train beside the repository).
  k=N              soft-encoding neighbours K (problem complexity).
  bins=N           ab bin size: 10 (Zhang's 313 bins) or 5, 15, 20 (FAIR's bins found in the
                   2048 prior images, resized to 256 x 256, at the start of the run).
  model=r18|alexnet, width=W   the trunk (capacity; width 0: the recipe's, 1/8 for both
                   trunks).
"""

import os

from ssl_jax import config_defaults, config_lib
from ssl_jax.sweep import CIFAR10, REPO_ROOT

CIFAR10_TRAIN = os.path.join(CIFAR10, "train")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, data=CIFAR10_TRAIN, k=10, bins=10, model="r18", width=0.0)
    if arg.model == "r18":
        c = config_lib.load_config(
            os.path.join(REPO_ROOT, "configs", "colorize_r50.py")
            + f":runlocal,folder={arg.data},depth=18,width={arg.width or 0.125},k={arg.k},"
            f"bins={arg.bins}"
        )
        c.input.resize_short, c.input.crop = 72, 64
    elif arg.model == "alexnet":
        c = config_lib.load_config(
            os.path.join(REPO_ROOT, "configs", "colorize_alexnet.py")
            + f":runlocal,folder={arg.data},k={arg.k},bins={arg.bins}"
        )
        c.model.width = arg.width or 0.125
    else:
        raise config_lib.ConfigError(f"model={arg.model!r}; allowed: r18, alexnet.")
    config_defaults.small_scale(c)
    return c
