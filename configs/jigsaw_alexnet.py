r"""Jigsaw pretext, AlexNet (CFN form), ImageNet-1k: the paper's recipe.

  python -m ssl_jax.main --config=configs/jigsaw_alexnet.py --workdir=/tmp/jigsaw_alexnet

Same data, schedule and |P| = 2000 as configs/jigsaw_r50.py (batch 256, SGD 0.1 scaled with
batch, 5-epoch warm-up from 0.025, x0.1 at 30/60/90/100, 105 epochs). AlexNet (conv1 96x11x11
stride 2 on 64x64 tiles, grouped conv2/4/5, BN + ReLU) per tile -> fc 1024; the 9 tiles
concatenated -> fc 4096 -> fc |P|.

Cost (estimate): 2.8 GFLOP forward per image (9 tiles), 6.7 GFLOP per training image by XLA's
count, 0.9 EFLOP for the 105 epochs: the input pipeline (2 to 4 ms of a CPU core per ImageNet
image, about 100 core-hours in all) sets the pace on any accelerator; see BENCHMARKS.md.

Arguments (after a colon, comma-separated): runlocal, perms=N, folder=PATH, filelist=PATH, width=W
(see configs/jigsaw_r50.py).

  python -m ssl_jax.main --config=configs/jigsaw_alexnet.py:runlocal --workdir=/tmp/jig_alex_demo
"""

from ssl_jax import config_defaults, config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, runlocal=False, perms=2000, folder="", filelist="", width=1.0)
    c = config_defaults.pretrain()
    c.task = "jigsaw"
    c.model.name = "alexnet"
    c.model.alexnet_variant = "jigsaw"
    c.model.width = arg.width
    c.jigsaw = config_defaults.jigsaw(arg.perms, tile_features=1024, hidden_features=4096)

    config_defaults.data_from_args(c, folder=arg.folder, filelist=arg.filelist)
    if arg.runlocal:
        config_defaults.runlocal_data(c)
        config_defaults.runlocal_puzzle(c, half_size=False)
        c.model.width = 0.25 if arg.width == 1.0 else arg.width
        c.jigsaw.num_perms = 100 if arg.perms == 2000 else arg.perms
        c.jigsaw.tile_features = 256
        c.jigsaw.hidden_features = 512
    return c
