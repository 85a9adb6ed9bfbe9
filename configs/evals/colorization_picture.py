r"""What a Colorization run learned, as a picture: grayscale input | prediction | ground truth.

  python -m ssl_jax.main --config=configs/evals/colorization_picture.py --config.pretrained=W \
      --workdir=E

Colourises a fixed set of crops of the run's own pretraining data with its latest checkpoint
(``--config.pretrained_step=S`` another one) by the annealed mean (Zhang et al.'s temperature
0.38) and writes E/picture.png. The same evaluator runs attached to every Colorization
pretraining (``config.evals.samples``, at every checkpoint). A few seconds on a CPU.

Arguments (after a colon, comma-separated):
  images=N          crops in the picture (default 8).
  temperature=T     the annealed mean's temperature (default 0.38; 1 is the mean, 0 the mode).
"""

from ssl_jax import config_lib
from ssl_jax.colorization import picture


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, images=8, temperature=0.38)
    c = picture.defaults()
    c.images = arg.images
    c.temperature = arg.temperature
    return c
