r"""The VOC07 SVM protocol on CIFAR-10 (RESULTS.md): every frozen layer of a small-scale trunk.

  python -m ssl_jax.main --config=configs/cifar/svm.py --config.pretrained=W --workdir=E
  (add --config.random_init=True --config.seed=S for the random-weights baseline)

PROTOCOLS.md's SVMs unchanged (L2-normalised features, squared-hinge L2 SVM with the regularised
bias, class weights {+1: 2, -1: 1}, the 26 costs by 3-fold CV on AP, refit, AP on test), with
CIFAR-10's 10 classes one-vs-rest: SVMs trained on 2,000 of the training images (200 per class,
spread evenly over the folder's fixed order; ``train_images=N`` for more), mAP on all 2,000 test
images. Images go in at 64 pixels (the 32-pixel JPEGs upscaled), every tap pooled to the
protocol table's grid (adaptive pooling, since the table's windows assume 224). Solver:
liblinear (sklearn, in parallel over every core), the reference; ``solver=jax`` is the batched
solver, which matches it within 0.1 mAP points (tests/test_svm_real.py) but is slower than
liblinear on these low-dimensional features on a CPU. About 5 minutes on 2 cores.

Arguments (after a colon, comma-separated):
  data=PATH      a folder with train/ and test/ class subfolders (default ../shared/data/cifar10).
  size=N         input size (default 64).
  train_images=N SVM training images (default 2000; 0: all 10,000, about 10x the time).
  solver=sklearn|jax
"""

import os

from ssl_jax import config_lib
from ssl_jax.evals import base, svm_benchmark
from ssl_jax.sweep import CIFAR10


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, data=CIFAR10, size=64, solver="sklearn", train_images=2000)
    c = svm_benchmark.defaults("voc07_svm")
    c.svm.solver = arg.solver
    c.data.train = base.labelled_split("folder", "train", os.path.join(arg.data, "train"))
    c.data.test = base.labelled_split("folder", "test", os.path.join(arg.data, "test"))
    c.data.train.max_examples = arg.train_images
    c.features.size = arg.size
    c.features.pooling = "adaptive"
    return c
