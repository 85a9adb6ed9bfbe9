r"""Colorization pretext, ResNet-50, ImageNet-1k.

  python -m ssl_jax.main --config=configs/colorize_r50.py --workdir=/tmp/colorize_r50

ImageNet-1k from TFDS ``imagenet2012`` (prepare it once with
``tfds build imagenet2012 --manual_dir=DIR_WITH_TARS --data_dir=D`` and pass
``--config.data.data_dir=D``).

The task (PROTOCOLS.md): Lab as OpenCV's 8-bit conversion (exactly; ``config.colorization.lab``),
the L channel in, res5 at stride 1 (1/16, not dilated, as FAIR's model), a 1x1 conv to the 313 ab
bins upsampled to a 56x56 grid (1/4 of the 224 crop); targets soft-encoded over the K = 10 nearest
bins with sigma = 5; Zhang's class rebalancing (gamma 0.5) with priors estimated from 10,000
training images at the start of the run and stored in the workdir (colorization_priors.npy; or give
your own with ``--config.colorization.priors_file``); grayscale images left out of the loss. With
``bins=5|15|20`` the bins are FAIR's, found in 10,000 training images (whole, resized to 256 x 256)
at the start of the run and stored in the workdir with their priors (colorization_bins.npy,
colorization_priors.npy); the head then has one logit per bin found.

Schedule: the paper's Colorization schedule is not public; we use the shared recipe of
configs/jigsaw_r50.py (SGD 0.1 for batch 256, 5-epoch warm-up, x0.1 at 30/60/90/100, 105 epochs,
weight decay 1e-4 off BN), every number a config field. Crops: resize 256, random 224, flip.

Every checkpoint also writes evals/samples/step_N/picture.png: grayscale input | prediction |
ground truth for 8 training crops (annealed mean, T = 0.38; ``config.evals.samples``, the
evaluator ``ssl_jax.colorization.picture``). ``python -m ssl_jax.colorization show --workdir=W``
draws the same from any checkpoint.

Arguments (after a colon, comma-separated):
  runlocal          built-in demo images, ResNet-50 at 1/8 width, 112-pixel crops, 6 epochs
                    of the 2,048 demo crops (384 steps): about 3.5 min on 2 CPU cores.
  k=N               soft-encoding neighbours, the problem-complexity axis (2 ... 313).
  bins=N            ab bin size, FAIR's second complexity knob: 10 (Zhang's 313 bins, default),
                    5, 15 or 20 (bins found in the data; K must not exceed their number).
  rebalance=False   plain soft cross-entropy.
  folder=PATH, filelist=PATH   other pretraining data (e.g. CIFAR-10 JPEGs, a YFCC subset).
  depth=D, width=W  other trunk capacities.

  python -m ssl_jax.main --config=configs/colorize_r50.py:runlocal --workdir=/tmp/col_demo
  python -m ssl_jax.main --config=configs/colorize_r50.py:k=40 --workdir=W
  python -m ssl_jax.main --config=configs/colorize_r50.py:bins=15 --workdir=W
"""

from ssl_jax import config_defaults, config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg,
        runlocal=False,
        k=10,
        bins=10,
        rebalance=True,
        folder="",
        filelist="",
        depth=50,
        width=1.0,
    )
    c = config_defaults.pretrain()
    c.task = "colorization"
    c.model.name = "resnet"
    c.model.depth = arg.depth
    c.model.width = arg.width
    c.model.res5_stride = 1
    config_defaults.colorization_input(c, crop=224)

    c.colorization = config_defaults.colorization(k=arg.k, bin_size=arg.bins)
    c.colorization.rebalance = arg.rebalance
    config_defaults.colorization_picture(c)

    config_defaults.data_from_args(c, folder=arg.folder, filelist=arg.filelist)
    if arg.runlocal:
        config_defaults.runlocal_data(c)
        config_defaults.runlocal_colorization(c)
        c.model.width = 0.125 if arg.width == 1.0 else arg.width
    return c
