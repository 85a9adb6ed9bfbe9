"""Fields every pretraining config shares, at the paper's values.

Config files in configs/ start from ``pretrain()`` and set what their task and model need; numbers
derived from these (steps per epoch, learning rate for the batch) are computed in
``ssl_jax.train.optim.make_plan``, never in a config.
"""

from __future__ import annotations

import ml_collections

from ssl_jax import config_lib
from ssl_jax.colorization import picture
from ssl_jax.evals import linear, probe, svm_benchmark
from ssl_jax.jigsaw.tiles import IMAGENET_MEAN, IMAGENET_STD


def pretrain() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "jigsaw"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # tfds | folder | filelist | demo
    c.data.name = "imagenet2012"  # TFDS name (source=tfds)
    c.data.split = "train"
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
    c.data.path = ""  # image folder or file list (source=folder|filelist)
    c.data.shuffle_buffer = 10_000  # element shuffle for TFDS records
    c.data.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
    c.data.prefetch = 2  # batches prefetched on the host
    c.data.demo_size = 2048  # images of the built-in demo set (source=demo)
    # Nested subset of the source (the paper's YFCC 1M/10M/50M): 0 = all, a fraction in (0, 1] or
    # a count > 1; the same ids give the same images (ssl_jax/data/subsets.py). Float so that
    # --config.data.data_size=0.1 and =1000000 both parse.
    c.data.data_size = 0.0
    c.data.cache_decoded = False

    c.input = ml_collections.ConfigDict()
    c.input.resize_short = 256
    c.input.crop = 255
    c.input.flip = True
    c.input.mean = IMAGENET_MEAN  # per channel, in RGB order, of images / 255
    c.input.std = IMAGENET_STD
    # The channel order the trunk's conv1 expects: "rgb", or "bgr" (Caffe2/OpenCV models kept in
    # their own order; ssl_jax.weights' imports convert conv1 to RGB instead).
    c.input.channel_order = "rgb"

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet"  # resnet | alexnet
    c.model.depth = 50  # 18, 34, 50, 101, 152
    c.model.width = 1.0  # channel multiplier
    c.model.res5_stride = 2
    c.model.res5_dilation = 1  # with res5_stride=1: 1 = FAIR's Colorization ResNet, 2 = dilated
    c.model.stride_in_1x1 = False  # bottleneck stride on the 3x3 (FAIR, torchvision) or the 1x1
    c.model.alexnet_variant = "jigsaw"
    # LRN after AlexNet's pool1/pool2: None = the variant's (jigsaw: VISSL's CFN with LRN;
    # FAIR's released Jigsaw models are evaluated without: False).
    c.model.alexnet_lrn = ml_collections.FieldReference(None, field_type=bool)
    c.model.bn_group_size = 32  # images per BatchNorm group (the paper's per-GPU batch)
    c.model.dtype = "auto"  # activations: bfloat16 on GPU/TPU, float32 on CPU; params float32

    c.optim = ml_collections.ConfigDict()
    c.optim.batch_size = 256
    c.optim.base_lr = 0.1  # for base_batch_size images; scaled linearly with batch_size
    c.optim.base_batch_size = 256
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.weight_decay = 1e-4  # not on BatchNorm parameters
    c.optim.warmup_epochs = 5.0
    c.optim.warmup_start_lr = 0.025  # for base_batch_size images, scaled like base_lr
    c.optim.epochs = 105.0
    c.optim.decay_epochs = (30.0, 60.0, 90.0, 100.0)
    c.optim.decay_factor = 0.1

    c.train = ml_collections.ConfigDict()
    c.train.log_every = 50  # steps between metrics.jsonl rows
    c.train.checkpoint_every = 1000  # steps between checkpoints (a multiple of log_every)
    c.train.keep_checkpoints = 3
    # Seconds an object-store operation (gs:// workdir, data, checkpoint writes) retries a store
    # that does not answer before the run stops, keeping its last complete checkpoint.
    c.train.store_retry_seconds = 300.0
    c.train.stop_after_steps = ml_collections.FieldReference(None, field_type=int)
    c.train.progress_bar = True
    c.train.multihost = False  # call jax.distributed.initialize() (also: env SSL_JAX_MULTIHOST=1)

    # Evaluations of the live weights during pretraining (ssl_jax.evaluators.attached): a
    # benchmark's config under a label, run every every_steps (a multiple of
    # train.checkpoint_every; 0 = off) and at the last step, e.g.
    # --config.evals.voc07_svm.every_steps=10000 --config.evals.voc07_svm.svm.solver=jax.
    c.evals = ml_collections.ConfigDict()
    c.evals.probe = probe.defaults()  # few-shot ridge per layer (ssl_jax.evals.probe)
    c.evals.voc07_svm = svm_benchmark.defaults("voc07_svm")
    c.evals.voc07_lowshot = svm_benchmark.defaults("voc07_lowshot")
    c.evals.linear = linear.defaults()
    return c


def jigsaw(num_perms: int, tile_features: int, hidden_features: int) -> ml_collections.ConfigDict:
    """The Jigsaw fields (PROTOCOLS.md): puzzle geometry, permutation set, head widths."""
    j = ml_collections.ConfigDict()
    j.num_perms = num_perms  # |P|
    j.perm_method = "max_avg"  # greedy selection: max_avg | max_min
    j.perm_seed = 0  # seed of the first, random permutation
    j.perm_file = ""  # a published .npy set instead (1- or 0-based); must hold num_perms rows
    j.grid = 3  # 3x3 puzzle
    j.cell = 85  # pixels per grid cell (3 x 85 = 255 crop)
    j.tile = 64  # tile size; its offset inside the cell is random in [0, cell - tile)
    j.gray_prob = 0.66  # whole-puzzle grayscale probability
    j.tile_features = tile_features  # per-tile fc width
    j.hidden_features = hidden_features  # fc after concatenation (0: none)
    j.head_bn = True
    return j


def data_from_args(c: ml_collections.ConfigDict, folder: str, filelist: str) -> None:
    """The ``folder=PATH`` / ``filelist=PATH`` config arguments: train on that data instead."""
    if folder and filelist:
        raise config_lib.ConfigError(
            f"Give folder={folder!r} or filelist={filelist!r} as config argument, not both."
        )
    if folder:
        c.data.source, c.data.path = "folder", folder
    if filelist:
        c.data.source, c.data.path = "filelist", filelist


def runlocal_data(c: ml_collections.ConfigDict) -> None:
    """Switches a config to the built-in demo images, unless it already names a folder or list."""
    if c.data.source == "tfds":
        c.data.source = "demo"


def runlocal_puzzle(c: ml_collections.ConfigDict, half_size: bool = True) -> None:
    """A short schedule, and optionally a half-size 3x3 puzzle, for CPU demos and tests.

    The half-size puzzle (111-pixel crop, 37-pixel cells, 32-pixel tiles) suits ResNets; AlexNet's
    stride-2 11x11 conv1 and three pools need tiles of at least 39 pixels, and its demo keeps the
    paper's 64-pixel tiles.
    """
    if half_size:
        c.input.resize_short = 128
        c.input.crop = 111
        c.jigsaw.cell = 37
        c.jigsaw.tile = 32
    runlocal_schedule(c, epochs=10.0, decay_epochs=(8.0,), log_every=10, checkpoint_every=100)


def runlocal_schedule(
    c: ml_collections.ConfigDict,
    epochs: float,
    decay_epochs: tuple[float, ...],
    log_every: int,
    checkpoint_every: int,
) -> None:
    """The CPU-demo schedule every task shares: batch 32 in BN groups of 16, 1 warm-up epoch."""
    c.model.bn_group_size = 16
    c.optim.batch_size = 32
    c.optim.epochs = epochs
    c.optim.warmup_epochs = 1.0
    c.optim.decay_epochs = decay_epochs
    c.train.log_every = log_every
    c.train.checkpoint_every = checkpoint_every
    # The few-shot probe on the demo photos (which photo a crop shows) at every third checkpoint
    # and at the end (about 10 s each on 2 cores).
    c.evals.probe.every_steps = 3 * checkpoint_every
    c.evals.probe.data.train, c.evals.probe.data.test = svm_benchmark.demo_splits()
    c.evals.probe.features.size = 112
    c.evals.probe.features.pooling = "adaptive"
    c.evals.probe.features.batch_size = 32
    # The benchmarks on the demo photos too, off until their every_steps is set.
    svm_benchmark.runlocal(c.evals.voc07_svm)
    svm_benchmark.runlocal(c.evals.voc07_lowshot)
    linear.runlocal(c.evals.linear)


def colorization(k: int = 10, bin_size: int = 10) -> ml_collections.ConfigDict:
    """The Colorization fields (PROTOCOLS.md): Lab, bins, soft encoding, rebalancing, targets."""
    c = ml_collections.ConfigDict()
    c.k = k  # nearest bins per pixel in the soft target: the problem-complexity axis (1 ... Q)
    # ab bins: 10 is Zhang's 313 gamut bins; 5, 15, 20 are FAIR's bins found in the pretraining
    # data (the occupied cells of a histogram over arange(-128, 128, bin_size), listed by their
    # lower edges), estimated at the start of the run and stored in the workdir.
    c.bin_size = bin_size
    c.sigma = 5.0  # Gaussian width of the soft encoding, ab units
    c.rebalance = True  # weight pixels by the rarity of their nearest bin (Zhang et al.)
    c.rebalance_gamma = 0.5  # mix of priors and uniform
    c.rebalance_alpha = 1.0  # exponent
    # Bin priors: a .npy of 313 probabilities (bin_size 10 only); empty estimates them from
    # prior_images images of the pretraining data at the start of the run and stores them in the
    # workdir (for data bins, with the bins: FAIR's unsmoothed frequencies of whole images
    # resized to 256 x 256).
    c.priors_file = ""
    c.prior_images = 10_000
    c.prior_smoothing = 5.0  # Gaussian smoothing of the priors of Zhang's bins, ab units (Zhang: 5)
    c.gray_threshold = 5.0  # images with no |a| or |b| above this are left out of the loss
    c.target_stride = 4  # target grid at 1/4 of the crop (56x56 for 224), Zhang's resolution
    # Lab of the 8-bit crops: "opencv" gives OpenCV's 8-bit codes exactly (the paper's pipeline:
    # cv2.cvtColor(bgr, COLOR_BGR2LAB)); "float" the CIE formulas in float32, rounded to 8-bit
    # codes when quantize (a code off on about a quarter of the colours), else left unrounded.
    c.lab = "opencv"
    c.quantize = True  # "float" only: round to 8-bit codes; "opencv" always is 8-bit
    return c


def colorization_picture(c: ml_collections.ConfigDict) -> None:
    """Attaches the picture (gray | prediction | truth, ssl_jax.colorization.picture) to a
    Colorization config as config.evals.samples, at every checkpoint."""
    c.evals.samples = picture.defaults(every_steps=-1)


def colorization_input(c: ml_collections.ConfigDict, crop: int) -> None:
    """Colorization's crops: resize the short side to 256, random crop, flip; no other change."""
    c.input.resize_short = 256
    c.input.crop = crop
    c.input.flip = True


def runlocal_colorization(c: ml_collections.ConfigDict) -> None:
    """A short schedule on 112-pixel crops (28x28 targets) for CPU demos and tests."""
    c.input.resize_short = 128
    c.input.crop = 112
    c.colorization.prior_images = 2048
    runlocal_schedule(c, epochs=6.0, decay_epochs=(5.0,), log_every=8, checkpoint_every=128)


def small_scale(c: ml_collections.ConfigDict) -> None:
    """What the small-scale recipes (configs/cifar/*) share: no demo-photo probe, logs for files."""
    c.evals.probe.every_steps = 0
    c.train.progress_bar = False
    c.train.log_every = 40
    c.train.checkpoint_every = 520
    c.optim.epochs = 10.0
    c.optim.decay_epochs = (8.0,)
