r"""VOC07 low-shot SVMs on every frozen layer (PROTOCOLS.md, "Low-shot").

  python -m ssl_jax.main --config=configs/evals/voc07_lowshot.py --config.pretrained=W --workdir=E

Per class k positives and 19k negatives drawn from VOC2007 trainval (negatives from the images
where the class is absent, never difficult ones, as FAIR's create_voc_low_shot_samples.py), k in
{1, 2, 4, 8, 16, 32, 64, 96}, 5 samples each; every cost is trained and the statistics
(mean/min/max/std of test mAP over the samples) are reported at the cost with the best mean
test mAP. That selects on the test set, as the paper did; results are labelled test-selected.
Data as configs/evals/voc07_svm.py (TFDS voc/2007 or ``:vocdevkit=PATH``).

Arguments: runlocal, solver=jax, vocdevkit=PATH, train=DIR,test=DIR (see voc07_svm.py).
"""

from ssl_jax import config_lib
from ssl_jax.evals import svm_benchmark


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **svm_benchmark.ARGS)
    c = svm_benchmark.defaults("voc07_lowshot")
    svm_benchmark.apply_args(c, arg)
    return c
