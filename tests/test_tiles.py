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
