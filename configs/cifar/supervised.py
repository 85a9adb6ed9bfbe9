r"""The supervised baseline at small scale: the same trunk trained on the same CIFAR-10 images
with their labels (RESULTS.md).

  python -m ssl_jax.main --config=configs/cifar/supervised.py --workdir=W

32-pixel images upscaled to 72 on the short side, random 64-pixel crops and flips (the size the
transfer benchmarks of RESULTS.md read features at), 10 classes; ResNet-18 at 1/8 width (or
the AlexNet-style trunk at 1/8 width, ``model=alexnet``, on 112-pixel crops of images upscaled to
128, the size of the AlexNet Colorization recipe). Batch 32 (BN over 16), lr 0.0125, 1 warm-up
epoch, 10 epochs with x0.1 at 8: 3120 steps on the 10,000 training images.

Arguments (after a colon, comma-separated):
  data=PATH        image folder with one subfolder per class (default
                   ../shared/data/cifar10/train beside the repository).
  classes=N        number of classes (10).
  model=r18|alexnet, width=W   the trunk (width 0: 1/8 for both trunks).
"""

import os

from ssl_jax import config_defaults, config_lib
from ssl_jax.sweep import CIFAR10, REPO_ROOT

CIFAR10_TRAIN = os.path.join(CIFAR10, "train")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, data=CIFAR10_TRAIN, classes=10, model="r18", width=0.0)
    if arg.model not in ("r18", "alexnet"):
        raise config_lib.ConfigError(f"model={arg.model!r}; allowed: r18, alexnet.")
    resnet = arg.model == "r18"
    width = arg.width or 0.125
    c = config_lib.load_config(
        os.path.join(REPO_ROOT, "configs", "supervised_r50.py")
        + f":runlocal,folder={arg.data},classes={arg.classes},depth=18,width={width},"
        + f"model={'resnet' if resnet else 'alexnet'}"
    )
    if resnet:
        c.input.resize_short, c.input.crop = 72, 64
    else:
        c.input.resize_short, c.input.crop = 128, 112
    config_defaults.small_scale(c)
    return c
