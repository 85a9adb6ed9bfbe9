"""The Jigsaw pretext task: a siamese network classifies which permutation shuffled 9 tiles.

ResNet (PROTOCOLS.md): one trunk shared by the tiles; per tile the globally pooled res5 feature
-> fc 1000 + BN + ReLU; the tiles' vectors concatenated in slot order -> fc |P|.
AlexNet (CFN): per tile pool5 (flattened) -> fc 1024 + BN + ReLU; concatenated -> fc 4096 + BN +
ReLU -> fc |P|. The BN after the hidden fully-connected layers is our choice (config
``jigsaw.head_bn``); ReLU between them is CFN's.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import config_lib
from ssl_jax.jigsaw import permutations as perms_lib
from ssl_jax.jigsaw import tiles as tiles_lib
from ssl_jax.models import GroupedBatchNorm, make_trunk
from ssl_jax.tasks import Pretext, compute_dtype

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


def check_config(config: ml_collections.ConfigDict) -> None:
    jig = config.jigsaw
    if jig.tile > jig.cell:
        raise config_lib.ConfigError(
            f"config.jigsaw.tile={jig.tile} is larger than config.jigsaw.cell={jig.cell}."
        )
    if jig.grid * jig.cell > config.input.crop:
        raise config_lib.ConfigError(
            f"The puzzle grid config.jigsaw.grid x config.jigsaw.cell = {jig.grid}x{jig.cell} = "
            f"{jig.grid * jig.cell} does not fit in config.input.crop={config.input.crop}."
        )


def trunk_input(config: ml_collections.ConfigDict) -> tuple[str, int]:
    """The trunk sees tiles, not the crop (tasks.validate checks the size against the trunk)."""
    return "config.jigsaw.tile", config.jigsaw.tile


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


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Pretext:
    del workdir  # Jigsaw derives nothing from the data and draws no pictures
    check_config(config)
    jig = config.jigsaw
    dtype = compute_dtype(config.model.dtype)
    trunk = make_trunk(config.model, dtype)
    group = config.model.bn_group_size
    # The trunk sees every tile as a row: a group of G images is G * N rows.
    trunk = trunk.clone(bn_group_size=None if group is None else group * jig.grid**2)
    model = JigsawNet(
        trunk=trunk,
        num_perms=jig.num_perms,
        tile_features=jig.tile_features,
        hidden_features=jig.hidden_features,
        head_bn=jig.head_bn,
        bn_group_size=group,
        dtype=dtype,
    )
    permutations = jnp.asarray(load_permutation_set(jig), jnp.int32)
    make = functools.partial(
        tiles_lib.make_puzzles,
        grid=jig.grid,
        cell=jig.cell,
        tile=jig.tile,
        gray_prob=jig.gray_prob,
        mean=tuple(config.input.mean),
        std=tuple(config.input.std),
    )

    def prepare(rng, batch):
        return make(rng, batch["image"], permutations)

    example = jnp.zeros((2, jig.grid**2, jig.tile, jig.tile, 3), jnp.float32)
    return Pretext(model=model, example_inputs=example, prepare=prepare, loss=loss)


def loss(logits: jax.Array, labels: jax.Array):
    """Softmax cross-entropy over the permutation set, and top-1 accuracy."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    top1 = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return ce, {"loss": ce, "top1": top1}
