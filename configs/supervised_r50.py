r"""Supervised baseline, ResNet-50 (or AlexNet), ImageNet-1k: the trunk that the paper's tables
call "ImageNet supervised", trained by this library on the same data path as the pretext tasks.

  python -m ssl_jax.main --config=configs/supervised_r50.py --workdir=/tmp/supervised_r50

The standard ResNet-50 recipe: batch 256, SGD momentum 0.9, lr 0.1 (scaled with batch), 5-epoch
warm-up, x0.1 at epochs 30/60/80, 90 epochs, weight decay 1e-4 off BatchNorm; 224-pixel random
crops of images resized to 256 on the short side, flips. The trunk's taps and weights work with
every transfer benchmark (configs/evals/*) exactly as a pretext trunk's.

Arguments (after a colon, comma-separated):
  runlocal        the built-in demo photos (6 classes), narrow trunk, about a minute on a CPU.
  folder=PATH     an image folder with one subfolder per class (classes= must match), e.g. CIFAR-10.
  classes=N       number of classes (default 1000; 10 for CIFAR-10, 6 for the demo).
  model=alexnet   the AlexNet trunk (CFN variant) instead of a ResNet.
  depth=D, width=W  other ResNet capacities (18, 34, 50, 101, 152; width multiplier).
"""

import ml_collections

from ssl_jax import config_defaults, config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, runlocal=False, folder="", classes=1000, model="resnet", depth=50, width=1.0
    )
    c = config_defaults.pretrain()
    c.task = "supervised"
    c.model.name = arg.model
    c.model.depth = arg.depth
    c.model.width = arg.width
    c.input.resize_short = 256
    c.input.crop = 224 if arg.model == "resnet" else 227
    c.optim.epochs = 90.0
    c.optim.decay_epochs = (30.0, 60.0, 80.0)
    c.supervised = ml_collections.ConfigDict({"num_classes": arg.classes})

    config_defaults.data_from_args(c, folder=arg.folder, filelist="")
    if arg.runlocal:
        config_defaults.runlocal_data(c)
        if c.data.source == "demo":
            c.supervised.num_classes = 6
        c.input.resize_short = 128
        c.input.crop = 112 if arg.model == "resnet" else 227
        c.model.width = 0.125 if arg.width == 1.0 else arg.width
        config_defaults.runlocal_schedule(
            c, epochs=4.0, decay_epochs=(3.0,), log_every=10, checkpoint_every=100
        )
    return c
