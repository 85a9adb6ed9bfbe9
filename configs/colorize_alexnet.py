r"""Colorization pretext, AlexNet (Zhang et al.'s variant), ImageNet-1k.

  python -m ssl_jax.main --config=configs/colorize_alexnet.py --workdir=/tmp/colorize_alexnet

The trunk (PROTOCOLS.md): conv1 96x11x11 stride 4 on the L channel, BatchNorm after every conv,
no LRN, grouped conv2/4/5. Crops of 227 pixels (conv5 at 13x13); a 1x1 conv from conv5 to the 313
ab bins, upsampled to the 56x56 target grid. Targets, rebalancing and schedule as
configs/colorize_r50.py.

Arguments: runlocal, k=N, bins=N (ab bin size: 10 Zhang's 313, or 5, 15, 20 found in the data),
rebalance=False, folder=PATH, filelist=PATH, width=W (as configs/colorize_r50.py).

  python -m ssl_jax.main --config=configs/colorize_alexnet.py:runlocal --workdir=/tmp/col_alex
"""

from ssl_jax import config_defaults, config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(
        arg, runlocal=False, k=10, bins=10, rebalance=True, folder="", filelist="", width=1.0
    )
    c = config_defaults.pretrain()
    c.task = "colorization"
    c.model.name = "alexnet"
    c.model.alexnet_variant = "colorization"
    c.model.width = arg.width
    config_defaults.colorization_input(c, crop=227)

    c.colorization = config_defaults.colorization(k=arg.k, bin_size=arg.bins)
    c.colorization.rebalance = arg.rebalance
    config_defaults.colorization_picture(c)

    config_defaults.data_from_args(c, folder=arg.folder, filelist=arg.filelist)
    if arg.runlocal:
        config_defaults.runlocal_data(c)
        config_defaults.runlocal_colorization(c)
        c.model.width = 0.25 if arg.width == 1.0 else arg.width
    return c
