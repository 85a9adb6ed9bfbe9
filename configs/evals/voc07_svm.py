r"""VOC07 linear SVMs on every frozen layer of a pretrained trunk (PROTOCOLS.md).

  python -m ssl_jax.main --config=configs/evals/voc07_svm.py --config.pretrained=W --workdir=E

Features of VOC2007 trainval (5011 images) and test (4952) from TFDS ``voc/2007`` (prepare it
once: ``tfds build voc/2007 --data_dir=D``, then ``--config.data.train.data_dir=D
--config.data.test.data_dir=D``), or from a local VOCdevkit (``:vocdevkit=/path/VOCdevkit``).
Per layer and class: L2-normalised features, squared-hinge L2 SVM with the regularised bias,
class weights {+1: 2, -1: 1}, the 26 costs chosen by 3-fold CV on AP, refit, all-points AP on
test with difficult removed. Writes E/results.json and E/results.md (mAP per layer); features
stay in E/features (resumable).

Expected: a ResNet-50 Jigsaw trunk pretrained on ImageNet-1k gives about 64.5 mAP at res4 in the
paper; the random-init trunk about 16 at res5 (`--config.random_init=True`).

Arguments (after a colon, comma-separated):
  runlocal          the built-in demo images as a 6-class labelled set, 4 costs: end to end in
                    about a minute on a CPU.
  solver=jax        the batched accelerator solver instead of liblinear.
  vocdevkit=PATH    VOC2007 from a local VOCdevkit folder instead of TFDS.
  train=DIR,test=DIR  any single-label image folders (class subfolders), e.g. CIFAR-10.

  python -m ssl_jax.main --config=configs/evals/voc07_svm.py:runlocal --config.pretrained=W \
      --workdir=/tmp/voc07_demo
"""

from ssl_jax import config_lib
from ssl_jax.evals import svm_benchmark


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **svm_benchmark.ARGS)
    c = svm_benchmark.defaults("voc07_svm")
    svm_benchmark.apply_args(c, arg)
    return c
