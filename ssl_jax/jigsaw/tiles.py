"""Jigsaw puzzles made on device: tiles cut from a crop, coloured, normalised and shuffled.

Everything here runs inside the jitted train step. The input pipeline ships each image as a uint8
crop (255x255 in the paper's recipe); here the crop is cut into a ``grid x grid`` array of cells
(85 pixels), a ``tile x tile`` patch (64) is taken at a random offset inside each cell, the whole
puzzle is turned to grayscale with probability ``gray_prob`` (0.66) and normalised with one
mean/std for all tiles, and a permutation drawn from the set shuffles the tiles.

Convention (PROTOCOLS.md): the label is the permutation's row index, and slot ``i`` of the
shuffled puzzle receives tile ``p[i]`` of the original, row-major order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma, as PIL's convert("L") and torchvision's RandomGrayscale.
LUMA = (0.299, 0.587, 0.114)


def cut_tiles(
    images: jax.Array, offsets: jax.Array, *, grid: int, cell: int, tile: int
) -> jax.Array:
    """Cuts one tile per cell.

    Args:
      images: (B, H, W, C) with H, W >= grid * cell; the grid starts at the top-left corner.
      offsets: int (B, grid * grid, 2), each (dy, dx) in [0, cell - tile].
    Returns:
      (B, grid * grid, tile, tile, C), tiles in row-major cell order.
    """
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    origin = jnp.asarray(np.stack([rows, cols], axis=-1) * cell, jnp.int32)  # (9, 2)
    starts = origin[None] + offsets.astype(jnp.int32)  # (B, 9, 2)

    def one(image, start):
        return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (tile, tile, image.shape[-1]))

    return jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, 0))(images, starts)


def shuffle_tiles(tiles: jax.Array, permutations: jax.Array, labels: jax.Array) -> jax.Array:
    """Slot i of puzzle b receives tile permutations[labels[b], i]. tiles: (B, N, ...)."""
    order = permutations[labels]  # (B, N)
    order = order.reshape(order.shape + (1,) * (tiles.ndim - 2))
    return jnp.take_along_axis(tiles, order, axis=1)


def unshuffle_tiles(shuffled: jax.Array, permutations: jax.Array, labels: jax.Array) -> jax.Array:
    """Inverse of ``shuffle_tiles``: puts every tile back in its original cell."""
    inverse = jnp.argsort(permutations[labels], axis=1)
    inverse = inverse.reshape(inverse.shape + (1,) * (shuffled.ndim - 2))
    return jnp.take_along_axis(shuffled, inverse, axis=1)


def make_puzzles(
    rng: jax.Array,
    images: jax.Array,
    permutations: jax.Array,
    *,
    grid: int = 3,
    cell: int = 85,
    tile: int = 64,
    gray_prob: float = 0.66,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[jax.Array, jax.Array]:
    """Turns uint8 crops into shuffled, normalised tiles and their permutation labels.

    Args:
      rng: a PRNG key.
      images: uint8 (B, H, W, 3) RGB crops, H and W >= grid * cell.
      permutations: int (P, grid * grid), the permutation set.
    Returns:
      tiles: float32 (B, grid * grid, tile, tile, 3), in slot order.
      labels: int32 (B,), row indices into ``permutations``.
    """
    batch = images.shape[0]
    if images.shape[1] < grid * cell or images.shape[2] < grid * cell:
        raise ValueError(
            f"Crops of {images.shape[1]}x{images.shape[2]} are smaller than the puzzle grid "
            f"{grid}x{cell}={grid * cell}; raise config.input.crop or lower config.jigsaw.cell."
        )
    k_offset, k_gray, k_label = jax.random.split(rng, 3)
    # Offsets in [0, cell - tile), as PROTOCOLS.md: [0, 21) for 64-pixel tiles in 85-pixel cells.
    offsets = jax.random.randint(k_offset, (batch, grid * grid, 2), 0, max(cell - tile, 1))
    tiles = cut_tiles(images, offsets, grid=grid, cell=cell, tile=tile).astype(jnp.float32)
    tiles = tiles / 255.0
    # Grayscale and normalisation act on the whole puzzle at once, never per tile, so that no tile
    # carries its own colour statistics (a shortcut the network could exploit).
    gray = jax.random.bernoulli(k_gray, gray_prob, (batch,))
    luma = jnp.sum(tiles * jnp.asarray(LUMA, jnp.float32), axis=-1, keepdims=True)
    tiles = jnp.where(gray[:, None, None, None, None], jnp.broadcast_to(luma, tiles.shape), tiles)
    tiles = (tiles - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    labels = jax.random.randint(k_label, (batch,), 0, permutations.shape[0], dtype=jnp.int32)
    return shuffle_tiles(tiles, permutations, labels), labels
