"""The Jigsaw pretext task: a siamese network classifies which permutation shuffled 9 tiles.

ResNet (PROTOCOLS.md): one trunk shared by the tiles; per tile the globally pooled res5 feature
-> fc 1000 + BN + ReLU; the tiles' vectors concatenated in slot order -> fc |P|.
AlexNet (CFN): per tile pool5 (flattened) -> fc 1024 + BN + ReLU; concatenated -> fc 4096 + BN +
ReLU -> fc |P|. The BN after the hidden fully-connected layers is our choice (config
``jigsaw.head_bn``); ReLU between them is CFN's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax import config_lib, paths
from ssl_jax.jigsaw import permutations as perms_lib
from ssl_jax.jigsaw import tiles as tiles_lib
from ssl_jax.models import GroupedBatchNorm, make_trunk
from ssl_jax.pretext import compute_dtype, normalised_rgb

PERMUTATIONS_FILE = "permutations.npy"  # the run's set, in its workdir

SCHEMA = {
    "jigsaw.num_perms": config_lib.in_range(2, 362880, integer=True),
    "jigsaw.perm_method": config_lib.one_of("max_avg", "max_min"),
    "jigsaw.grid": config_lib.in_range(2, 8, integer=True),
    "jigsaw.cell": config_lib.positive(integer=True),
    "jigsaw.tile": config_lib.positive(integer=True),
    "jigsaw.gray_prob": config_lib.in_range(0, 1),
    "jigsaw.tile_features": config_lib.positive(integer=True),
    "jigsaw.hidden_features": config_lib.non_negative(integer=True),
}


class JigsawNet(nn.Module):
    """Siamese trunk + permutation classifier.

    Input: float (B, N, T, T, 3) tiles in slot order. Output: float32 logits (B, num_perms) and the
    trunk's taps for all B * N tiles (leading axis image-major: image b's tiles are contiguous).
    """

    trunk: nn.Module
    num_perms: int
    tile_features: int
    hidden_features: int = 0
    head_bn: bool = True
    bn_group_size: int | None = None  # in images
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tiles: jax.Array, train: bool):
        batch, num_tiles = tiles.shape[:2]
        flat = tiles.reshape((batch * num_tiles,) + tiles.shape[2:])
        pooled, taps = self.trunk(flat, train=train)
        group = None if self.bn_group_size is None else self.bn_group_size * num_tiles
        x = nn.Dense(self.tile_features, dtype=self.dtype, name="tile_fc")(pooled)
        if self.head_bn:
            x = GroupedBatchNorm(group_size=group, dtype=self.dtype, name="tile_bn")(x, train=train)
        x = nn.relu(x).reshape(batch, num_tiles * self.tile_features)
        if self.hidden_features:
            x = nn.Dense(self.hidden_features, dtype=self.dtype, name="hidden_fc")(x)
            if self.head_bn:
                x = GroupedBatchNorm(
                    group_size=self.bn_group_size, dtype=self.dtype, name="hidden_bn"
                )(x, train=train)
            x = nn.relu(x)
        logits = nn.Dense(self.num_perms, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32), taps


def load_permutation_set(jig: ml_collections.ConfigDict):
    """The permutation set of a config: a published file if ``perm_file`` is set, else generated."""
    if jig.perm_file:
        perms = perms_lib.load_permutations(jig.perm_file)
        if perms.shape[0] != jig.num_perms:
            raise config_lib.ConfigError(
                f"config.jigsaw.perm_file={jig.perm_file!r} holds {perms.shape[0]} permutations, "
                f"but "
                f"config.jigsaw.num_perms={jig.num_perms}; make them agree."
            )
    else:
        perms = perms_lib.generate_permutations(jig.num_perms, jig.perm_method, jig.perm_seed)
    if perms.shape[1] != jig.grid**2:
        raise config_lib.ConfigError(
            f"Permutations of {perms.shape[1]} tiles do not fit config.jigsaw.grid={jig.grid}."
        )
    return perms


class Jigsaw:
    """The Jigsaw task (``ssl_jax.pretext.Pretext``): puzzles made on device, |P|-way labels."""

    name = "jigsaw"
    schema = SCHEMA

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        jig = config.jigsaw
        if jig.tile > jig.cell:
            raise config_lib.ConfigError(
                f"config.jigsaw.tile={jig.tile} is larger than config.jigsaw.cell={jig.cell}."
            )
        if jig.grid * jig.cell > config.input.crop:
            raise config_lib.ConfigError(
                f"The puzzle grid config.jigsaw.grid x config.jigsaw.cell = {jig.grid}x{jig.cell} "
                f"= {jig.grid * jig.cell} does not fit in config.input.crop={config.input.crop}."
            )
        self.rows_per_image = jig.grid**2
        # The trunk sees tiles, not the crop.
        self.trunk_input = ("config.jigsaw.tile", jig.tile)
        self.input_channels = 3
        self.linear_augment = "random_resized_crop"
        self.linear_bn_scale_shift = False
        dtype = compute_dtype(config.model.dtype)
        group = config.model.bn_group_size
        # The trunk sees every tile as a row: a group of G images is G * N rows.
        trunk = make_trunk(config.model, dtype).clone(
            bn_group_size=None if group is None else group * self.rows_per_image
        )
        self.model = JigsawNet(
            trunk=trunk,
            num_perms=jig.num_perms,
            tile_features=jig.tile_features,
            hidden_features=jig.hidden_features,
            head_bn=jig.head_bn,
            bn_group_size=group,
            dtype=dtype,
        )
        self.example_inputs = np.zeros((2, self.rows_per_image, jig.tile, jig.tile, 3), np.float32)
        self.permutations = None  # int32 (|P|, grid * grid), set by fit()

    def check_source(self, source) -> None:
        del source  # any images

    def fit(self, workdir: str | None) -> None:
        """The run's permutation set: the one stored in the workdir (``permutations.npy``), else
        loaded or generated (``load_permutation_set``) and stored there; nothing comes from
        data."""
        stored = paths.join(workdir, PERMUTATIONS_FILE) if workdir else None
        if stored and paths.isfile(stored):
            perms = perms_lib.load_permutations(stored)
            if perms.shape[0] != self.config.jigsaw.num_perms:
                raise config_lib.ConfigError(
                    f"{stored} holds {perms.shape[0]} permutations, but config.jigsaw.num_perms="
                    f"{self.config.jigsaw.num_perms}: this workdir was started with another |P|; "
                    "use a new --workdir."
                )
        else:
            perms = load_permutation_set(self.config.jigsaw)
            if stored and jax.process_index() == 0:
                paths.save_npy(stored, perms)
        self.permutations = jnp.asarray(perms, jnp.int32)

    def restore(self, workdir: str) -> None:
        del workdir  # the head has |P| = config.jigsaw.num_perms outputs, known from the config

    def prepare(self, rng: jax.Array, batch: dict[str, jax.Array]):
        if self.permutations is None:
            raise RuntimeError("Jigsaw.prepare needs the permutation set: call fit() first.")
        jig = self.config.jigsaw
        tiles, labels = tiles_lib.make_puzzles(
            rng,
            batch["image"],
            self.permutations,
            grid=jig.grid,
            cell=jig.cell,
            tile=jig.tile,
            gray_prob=jig.gray_prob,
            mean=tuple(self.config.input.mean),
            std=tuple(self.config.input.std),
        )
        if self.config.input.get("channel_order", "rgb") == "bgr":
            tiles = tiles[..., ::-1]
        return tiles, labels

    def loss(self, logits: jax.Array, labels: jax.Array):
        return loss(logits, labels)

    def model_inputs(self, images: jax.Array) -> jax.Array:
        return normalised_rgb(self.config, images)


def loss(logits: jax.Array, labels: jax.Array):
    """Softmax cross-entropy over the permutation set, and top-1 accuracy."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    top1 = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return ce, {"loss": ce, "top1": top1}
