r"""Linear classifiers on every frozen layer, Places205 (PROTOCOLS.md, "Linear classifiers").

  python -m ssl_jax.main --config=configs/evals/places205_linear.py:train=T,test=V \
      --config.pretrained=W --workdir=E

TFDS has no Places205: give the images as folders (one subfolder per class, 205 of them) or as
file lists ("path label" per line, e.g. the official trainvalsplit_places205/train_places205.csv
and val_places205.csv with paths made absolute or relative to the list's folder). T is the
training set (2.45M images), V the validation set (20,500 images), which is the test set here.
Recipe: frozen trunk (BN in inference mode), one BN + linear head per tap, SGD Nesterov 0.9,
batch 256, lr 0.01 x0.1 every 40k steps, 140k steps (about 14 epochs), weight decay 1e-4
(ResNet-50) / 5e-4 (AlexNet); random-resized crop 224 + flip (Colorization: resize 256, crop,
flip, L channel); test resize 256, centre crop 224 (227 for AlexNet). Writes E/results.json
(top-1 / top-5 per layer) and E/results.md; rerunning the command resumes.

Expected (the paper, ResNet-50 on ImageNet-1k Jigsaw): about 45 top-1 at res4. Cost: 140k steps
of 256 images through a frozen ResNet-50 (4.1 GFLOP each, forward only), about 147 PFLOP.

Arguments (after a colon, comma-separated):
  train=PATH,test=PATH  Places205 train / val as folders or file lists (detected per path).
  runlocal              the built-in demo photos as a 6-class set (train: 1024 crops, test: 192
                        other crops of the same photos), 96-pixel inputs with adaptive pooling,
                        150 steps of 32: about a minute on 2 CPU cores. With train/test it keeps
                        that data and only shortens the run.

  python -m ssl_jax.main --config=configs/evals/places205_linear.py:runlocal \
      --config.pretrained=W --workdir=/tmp/places205_linear_demo
  D=../shared/data/cifar10
  python -m ssl_jax.main \
      --config=configs/evals/places205_linear.py:runlocal,train=$D/train,test=$D/test \
      --config.pretrained=W --workdir=/tmp/cifar_linear --config.optim.steps=1500 \
      --config.optim.decay_every=1000 --config.optim.batch_size=64 --config.features.size=64
"""

from ssl_jax import config_lib
from ssl_jax.evals import base, linear


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **linear.ARGS)
    c = linear.defaults()
    # Without train/test arguments the paths stay empty and the run says which field to set.
    c.data.train = base.labelled_split("filelist", "train")
    c.data.test = base.labelled_split("filelist", "val")
    linear.apply_args(c, arg)
    return c
