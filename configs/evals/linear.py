r"""Linear classifiers on every frozen layer of a trunk, for any labelled image set.

  python -m ssl_jax.main --config=configs/evals/linear.py:train=DIR,test=DIR \
      --config.pretrained=W --workdir=E
  python -m ssl_jax.main --config=configs/evals/linear.py:tfds=NAME,test_split=test \
      --config.pretrained=W --workdir=E --config.data.train.data_dir=D \
      --config.data.test.data_dir=D

The PROTOCOLS.md recipe (see configs/evals/places205_linear.py) on folders with one subfolder per
class, file lists of "path label" lines, or a prepared TFDS classification dataset (never
downloaded; a missing one stops with how to prepare it). Fewer images for a quick run:
--config.data.train.max_examples=N (N images spread over the classes). Writes E/results.json
(top-1 / top-5 per layer) and E/results.md.

Arguments (after a colon, comma-separated):
  train=PATH,test=PATH        folders (class subfolders) or file lists, detected per path.
  tfds=NAME                   a TFDS dataset; train_split=S (default train), test_split=S
                              (default validation).
  runlocal                    the demo photos as a 6-class set unless data is named, 96-pixel
                              inputs with adaptive pooling, 150 steps of 32 (about a minute).

CIFAR-10 as 32-pixel JPEGs in class folders, upscaled to 64 pixels, 1500 steps of 64:
  D=../shared/data/cifar10
  python -m ssl_jax.main --config=configs/evals/linear.py:runlocal,train=$D/train,test=$D/test \
      --config.pretrained=W --workdir=E --config.features.size=64 --config.optim.batch_size=64 \
      --config.optim.steps=1500 --config.optim.decay_every=1000
"""

from ssl_jax import config_lib
from ssl_jax.evals import linear


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, **linear.ARGS)
    c = linear.defaults()
    linear.apply_args(c, arg)
    return c
