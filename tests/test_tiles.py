"""Jigsaw puzzle geometry, colour handling and the shuffle convention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.jigsaw import tiles as T


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 255, 255, 3), dtype=np.uint8)


def test_cut_tiles_matches_numpy(images):
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, 22, (6, 9, 2))
    got = np.asarray(
        T.cut_tiles(jnp.asarray(images), jnp.asarray(offsets), grid=3, cell=85, tile=64)
    )
    assert got.shape == (6, 9, 64, 64, 3)
    for b in range(6):
        for k in range(9):
            r, c = divmod(k, 3)
            y, x = r * 85 + offsets[b, k, 0], c * 85 + offsets[b, k, 1]
            np.testing.assert_array_equal(got[b, k], images[b, y : y + 64, x : x + 64])


def _unnormalise(tiles):
    return np.asarray(tiles) * np.asarray(T.IMAGENET_STD) + np.asarray(T.IMAGENET_MEAN)


def test_puzzle_geometry_and_colour(images):
    perms = jnp.asarray(np.stack([np.arange(9), np.arange(9)[::-1]]))
    tiles, labels = jax.jit(lambda r, x: T.make_puzzles(r, x, perms, gray_prob=0.0))(
        jax.random.PRNGKey(0), images
    )
    assert tiles.shape == (6, 9, 64, 64, 3) and tiles.dtype == jnp.float32
    assert labels.dtype == jnp.int32 and set(np.asarray(labels)) <= {0, 1}
    # Un-shuffle with the label, then every tile must be an exact crop of its cell of the image,
    # at an offset in [0, 21), with one whole-image normalisation.
    orig = _unnormalise(T.unshuffle_tiles(tiles, perms, labels)) * 255
    for b in range(6):
        for k in range(9):
            r, c = divmod(k, 3)
            cell = images[b, r * 85 : (r + 1) * 85, c * 85 : (c + 1) * 85].astype(np.float64)
            found = [
                (dy, dx)
                for dy in range(22)
                for dx in range(22)
                if np.abs(cell[dy : dy + 64, dx : dx + 64] - orig[b, k]).max() < 1e-3
            ]
            assert found and max(found[0]) <= 20


def test_shuffle_convention():
    tiles = jnp.arange(2 * 9).reshape(2, 9).astype(jnp.float32)
    perms = jnp.asarray([[8, 7, 6, 5, 4, 3, 2, 1, 0], [1, 0, 2, 3, 4, 5, 6, 7, 8]])
    labels = jnp.asarray([0, 1])
    shuffled = T.shuffle_tiles(tiles, perms, labels)
    # Slot i receives tile p[i].
    np.testing.assert_array_equal(shuffled[0], tiles[0, ::-1])
    np.testing.assert_array_equal(shuffled[1], tiles[1, jnp.asarray([1, 0, 2, 3, 4, 5, 6, 7, 8])])
    np.testing.assert_array_equal(T.unshuffle_tiles(shuffled, perms, labels), tiles)


def test_grayscale_whole_puzzle():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (400, 30, 30, 3), dtype=np.uint8)
    perms = jnp.asarray(np.arange(9)[None])
    tiles, _ = T.make_puzzles(
        jax.random.PRNGKey(3), jnp.asarray(images), perms, gray_prob=0.66, cell=10, tile=8
    )
    raw = _unnormalise(tiles)
    spread = np.abs(raw - raw[..., :1]).max(axis=(1, 2, 3, 4))  # per puzzle
    gray = spread < 1e-4
    assert 0.58 < gray.mean() < 0.74  # 0.66 +- 4 sigma over 400 puzzles
    # A grey puzzle is grey in all 9 tiles; a colour one keeps colour in all 9 tiles.
    per_tile = np.abs(raw - raw[..., :1]).max(axis=(2, 3, 4)) < 1e-4
    assert np.all(per_tile.all(axis=1) == gray) and np.all(per_tile.any(axis=1) == gray)
    # Luma weights (ITU-R 601) on a grey puzzle.
    b = int(np.argmax(gray))
    assert raw[b].min() >= -1e-4 and raw[b].max() <= 1 + 1e-4
    # Its value is the ITU-R 601 luma of the pixels: compare the mean over the puzzle's tiles
    # with the mean luma of the image (tiles cover most of it).
    luma = images[b].astype(np.float64) @ np.asarray(T.LUMA) / 255
    assert abs(raw[b].mean() - luma.mean()) < 0.05


def test_labels_uniform_over_set():
    perms = jnp.asarray(np.tile(np.arange(9), (100, 1)))
    images = jnp.zeros((2000, 12, 12, 3), jnp.uint8)
    _, labels = jax.jit(lambda r: T.make_puzzles(r, images, perms, cell=4, tile=3))(
        jax.random.PRNGKey(0)
    )
    counts = np.bincount(np.asarray(labels), minlength=100)
    assert counts.min() > 0 and labels.max() < 100


def test_small_crop_error():
    perms = jnp.asarray(np.arange(9)[None])
    with pytest.raises(ValueError, match="config.input.crop"):
        T.make_puzzles(jax.random.PRNGKey(0), jnp.zeros((1, 200, 200, 3), jnp.uint8), perms)


def test_shuffle_convention_three_cycle():
    # A 3-cycle is not its own inverse: slot i must receive tile p[i], not tile p^-1[i].
    p = np.array([1, 2, 0, 3, 4, 5, 6, 7, 8])
    q = np.array([0, 1, 2, 3, 4, 5, 7, 8, 6])
    perms = jnp.asarray(np.stack([p, q]))
    tiles = jnp.asarray(np.arange(3 * 9 * 2, dtype=np.float32).reshape(3, 9, 2))
    labels = jnp.asarray([0, 1, 0])
    shuffled = np.asarray(T.shuffle_tiles(tiles, perms, labels))
    for b, row in enumerate((p, q, p)):
        for i in range(9):
            np.testing.assert_array_equal(shuffled[b, i], np.asarray(tiles)[b, row[i]])
    np.testing.assert_array_equal(T.unshuffle_tiles(jnp.asarray(shuffled), perms, labels), tiles)


@pytest.fixture(scope="module")
def coordinate_puzzles():
    """Puzzles cut from images whose red channel holds the row and green the column of each pixel
    (255 x 255 fits in uint8), made with no grayscale and mean 0 / std 1 so that every tile pixel
    gives back where it was cut; the set holds two 3-cycle permutations."""
    yy, xx = np.meshgrid(np.arange(255), np.arange(255), indexing="ij")
    image = np.stack([yy, xx, np.full_like(yy, 7)], -1).astype(np.uint8)
    images = jnp.asarray(np.broadcast_to(image, (64, 255, 255, 3)))
    perms = np.array([[1, 2, 0, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 8, 6, 7]])
    tiles, labels = jax.jit(
        lambda r, x: T.make_puzzles(
            r, x, jnp.asarray(perms), gray_prob=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
    )(jax.random.PRNGKey(5), images)
    pixels = np.rint(np.asarray(tiles, np.float64) * 255).astype(np.int64)
    return perms, pixels, np.asarray(labels)


def test_puzzle_slots_and_offsets_from_coordinates(coordinate_puzzles):
    perms, pixels, labels = coordinate_puzzles
    assert pixels.shape == (64, 9, 64, 64, 3)
    assert set(labels.tolist()) == {0, 1}  # both permutations drawn
    rows = np.broadcast_to(np.arange(64)[:, None], (64, 64))
    offsets = []
    for b in range(pixels.shape[0]):
        for slot in range(9):
            tile = pixels[b, slot]
            y0, x0 = int(tile[0, 0, 0]), int(tile[0, 0, 1])
            # Every tile is one contiguous 64 x 64 window of the image.
            np.testing.assert_array_equal(tile[..., 0], y0 + rows)
            np.testing.assert_array_equal(tile[..., 1], x0 + rows.T)
            np.testing.assert_array_equal(tile[..., 2], 7)
            # Slot i holds the tile of cell p[i] (row-major), at an offset inside that cell.
            r, c = divmod(int(perms[labels[b], slot]), 3)
            assert (y0 // 85, x0 // 85) == (r, c), f"puzzle {b}, slot {slot}"
            offsets += [y0 - 85 * r, x0 - 85 * c]
    offsets = np.asarray(offsets)
    # Offsets in [0, 21) for 64-pixel tiles in 85-pixel cells: 0 and 20 both occur (64 x 9 x 2
    # draws; each value is missing with probability (20/21)^1152 < 1e-24), 21 never does.
    assert offsets.min() == 0 and offsets.max() == 20
    assert set(offsets.tolist()) == set(range(21))


def test_grayscale_is_itu_601_luma_per_pixel():
    """gray_prob=1: every tile pixel is 0.299 R + 0.587 G + 0.114 B of its image pixel, in all
    three channels, then normalised with the ImageNet mean and std (literals here)."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    # Colourful: channels far apart, so mean, red-channel and luma greys all differ.
    images[..., 0] = rng.integers(200, 256, (4, 24, 24))
    images[..., 2] = rng.integers(0, 40, (4, 24, 24))
    perms = jnp.asarray(np.arange(9)[None])
    # cell == tile: every offset is 0 and the tiles cover the image exactly.
    tiles, _ = T.make_puzzles(
        jax.random.PRNGKey(6), jnp.asarray(images), perms, gray_prob=1.0, cell=8, tile=8
    )
    rgb = images.astype(np.float64) / 255
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    got = np.asarray(tiles, np.float64)
    for k in range(9):
        r, c = divmod(k, 3)
        cell = luma[:, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
        expected = (cell[..., None] - mean) / std
        np.testing.assert_allclose(got[:, k], expected, atol=2e-5, err_msg=f"cell {k}")
