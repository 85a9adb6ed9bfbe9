r"""Linear classifiers on every frozen layer, ImageNet-1k (PROTOCOLS.md, "Linear classifiers").

  python -m ssl_jax.main --config=configs/evals/imagenet_linear.py --config.pretrained=W \
      --workdir=E --config.data.train.data_dir=D --config.data.test.data_dir=D

ImageNet-1k comes from TFDS ``imagenet2012`` (train: 1,281,167 images; validation: 50,000, the
test set here). Nothing is downloaded: prepare it once with
``tfds build imagenet2012 --manual_dir=DIR_WITH_TARS --data_dir=D``; a missing dataset stops the
run with that instruction. Recipe as configs/evals/places205_linear.py: SGD Nesterov 0.9, batch
256, lr 0.01 x0.1 every 40k steps, 140k steps (about 28 epochs), weight decay 1e-4 (ResNet-50) /
5e-4 (AlexNet), random-resized crop 224 + flip (Colorization: resize 256, crop, flip); test
resize 256, centre crop 224 (227). Writes E/results.json and E/results.md.

Arguments (after a colon, comma-separated):
  runlocal              the built-in demo photos instead of ImageNet, 96-pixel inputs, 150
                        steps of 32: about a minute on 2 CPU cores.
  train=PATH,test=PATH  image folders / file lists instead of TFDS (e.g. an extracted ImageNet).

  python -m ssl_jax.main --config=configs/evals/imagenet_linear.py:runlocal \
      --config.pretrained=W --workdir=/tmp/imagenet_linear_demo
"""

from ssl_jax import config_lib
from ssl_jax.evals import linear


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **linear.ARGS)
    c = linear.defaults()  # TFDS imagenet2012 train -> validation
    linear.apply_args(c, arg)
    return c
