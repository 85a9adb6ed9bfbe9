r"""Places205 low-shot SVMs on every frozen layer (PROTOCOLS.md, "Low-shot").

  python -m ssl_jax.main --config=configs/evals/places205_lowshot.py --config.pretrained=W \
      --workdir=E --config.data.train.path=PLACES_TRAIN --config.data.test.path=PLACES_VAL

TFDS has no Places205: train and val come from image folders (one subfolder per class) or file
lists (``path label`` per line; ``:filelist`` switches both splits to lists). k images per class
(205k images), k in {1, 2, 4, 8, 16, 32, 64, 96}, 5 samples, one-vs-rest SVMs, mean AP on the
full val set, at the cost with the best mean test mAP (test-selected, as the paper).

Arguments: runlocal, solver=jax, filelist (both paths are file lists), train=P,test=P.
"""

from ssl_jax import config_lib
from ssl_jax.evals import base, svm_benchmark


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, runlocal=False, solver="sklearn", filelist=False, train="", test=""
    )
    c = svm_benchmark.defaults("places205_lowshot")
    c.svm.solver = arg.solver
    source = "filelist" if arg.filelist else "folder"
    c.data.train = base.labelled_split(source, "train", arg.train)
    c.data.test = base.labelled_split(source, "val", arg.test)
    if arg.runlocal:
        svm_benchmark.runlocal(c)
    return c
