r"""Object detection on VOC07 test with a Faster R-CNN (or Fast R-CNN) ResNet-C4 on a
pretrained trunk: the paper's third transfer benchmark (PROTOCOLS.md, "Detection").

The paper's recipe (4 images per batch, 50,000 iterations, lr 0.002 x0.1 at 38,000, short side
600, VOC07 trainval -> VOC07 test), frozen conv body and full fine-tuning:

  python -m ssl_jax.main --config=configs/evals/voc07_detection.py:freeze_at=4 \
      --config.pretrained=W --workdir=E --config.data.data_dir=D
  python -m ssl_jax.main --config=configs/evals/voc07_detection.py:freeze_at=2 \
      --config.pretrained=W --workdir=E --config.data.data_dir=D

VOC07+12 (the union of both trainval sets): ``train=voc0712``. A VOCdevkit folder instead of
TFDS's voc/2007 and voc/2012: ``devkit=PATH`` (VOC2007/ and VOC2012/ inside). Fast R-CNN on
precomputed proposals (Detectron's pickles, e.g. the Selective Search ones it published for
VOC07; 30,000 iterations, x0.1 at 22,000): ``proposals=/data/voc_2007_{split}.pkl``. A larger
batch scales the rate linearly (``--config.optim.batch_size=16`` gives lr 0.008; the warm-up
and step counts stay as set). E/results.json has per-class AP (VOC2007 11-point, and
all-points), E/detections.json every detection, E/detections.png a few test images. A quick
look (a CPU, a notebook): ``--config.data.test_images=N`` detects and scores only N test images
spread over the split, numbers not to compare with the benchmark's.

Paper numbers it should reproduce: the VOC07 rows of Goyal et al.'s detection tables (frozen
conv body, and full fine-tuning) for supervised and Jigsaw ImageNet-1k ResNet-50s (FAIR's
released detection models: MODEL_ZOO.md, imported with ``python -m ssl_jax.weights import
--format=fssb``). The numbers themselves could not be read here: no copy of the paper's tables
was reachable from this machine (the stored copies end before section 7), so none is quoted
rather than one from memory. Look them up in the paper (arXiv 1905.01235, section 7.3 and the
appendix) before comparing.

Expected time (an ESTIMATE, not measured on a GPU): XLA's count for the paper's sizes
(``python benchmarks/detection.py --paper --cost_only``) is 9.2 TFLOP per train step of 4
images with the body frozen (10.7 fine-tuned) and 6.6 TFLOP per 4 test images (1,000 RoIs each
through res5). At an assumed 100 TFLOP/s sustained in bfloat16 per A100/H100-class GPU, plus
about 30 ms per step for the RPN's sequential NMS loop (2,000 picks), the 50,000 steps take
about 1.7 hours on one GPU and, data-parallel over 4 GPUs (the paper's batch of 4 is one image
per device; 8 GPUs need ``optim.batch_size=8``, which doubles the rate), about half an hour to
an hour; the 4,952 test images a few minutes. A TPU v4-8 (4 chips) is in the same range. The
2-core CPU here runs the runlocal setting at about 8 images/s (RESULTS.md, "Detection").

Arguments (after a colon, comma-separated):
  freeze_at=4|2        4: stem..res4 frozen (the paper's frozen conv body); 2: full fine-tuning.
  proposals=rpn|FILE   rpn: Faster R-CNN end to end; FILE: Fast R-CNN on a proposals pickle.
  train=voc07|voc0712  the training set.
  devkit=PATH          a VOCdevkit folder instead of TFDS.
  data_dir=D           TFDS data_dir (voc/2007, voc/2012 prepared there; never downloaded).
  runlocal             the shared two-class set (raccoons, kangaroos; ../shared/data/detection),
                       short side 320, 400 steps of 4 images: about 5 minutes on 2 CPU cores
                       with the CIFAR ResNet-18 trunks of RESULTS.md (from a pretrained workdir,
                       or --config.random_init=True for the same trunk with fresh weights).

Small scale (RESULTS.md, "Detection"):
  python -m ssl_jax.main --config=configs/evals/voc07_detection.py:runlocal,freeze_at=2 \
      --config.pretrained=W --workdir=E
"""

from ssl_jax import config_lib
from ssl_jax.evals import detection


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **detection.ARGS)
    c = detection.defaults()
    detection.apply_args(c, arg)
    return c
