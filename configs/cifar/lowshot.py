r"""VOC07 low-shot SVMs on CIFAR-10: every frozen layer of a small-scale trunk, k positives per
class (PROTOCOLS.md, "Low-shot"; the features and images of configs/cifar/svm.py).

  python -m ssl_jax.main --config=configs/cifar/lowshot.py --config.pretrained=W --workdir=E
  (add --config.random_init=True --config.seed=S for the random-weights baseline)

Per class, independently: k positives and 19k negatives (images of the other classes) drawn from
the SVM training images (2,000, 200 per class, as configs/cifar/svm.py), k in {1, 2, 4, 8, 16,
32, 64, 96}, 5 samples each; every cost is trained, and the mean, min, max and std of test mAP
over the samples are reported at the cost with the best mean test mAP (test-selected, as the
paper). mAP on all 2,000 test images. With k = 96 a class's 19k negatives are more than the
1,800 images of the other classes: all of them are taken. The protocol's 8 ks x 5 samples x 26
costs take well over 10 minutes on 2 cores, most of it in conv1's 1,152-dimensional features at
the largest k; one sample of k = 1 ... 64 takes about 2.5 minutes, and
``--config.svm.costs='(0.01,0.1,1.0,10.0)'`` is much faster again.

Arguments (after a colon, comma-separated):
  data=PATH      a folder with train/ and test/ class subfolders (default ../shared/data/cifar10).
  size=N         input size (default 64).
  train_images=N images the low-shot samples are drawn from (default 2000; 0: all 10,000).
  solver=sklearn|jax
"""

import os

from ssl_jax import config_lib
from ssl_jax.sweep import REPO_ROOT


def get_config(arg=None):
    # The same images, features and SVMs as svm.py; only the benchmark differs.
    svm = os.path.join(REPO_ROOT, "configs", "cifar", "svm.py")
    c = config_lib.load_config(f"{svm}:{arg}" if arg else svm)
    c.evaluation = "voc07_lowshot"
    return c
