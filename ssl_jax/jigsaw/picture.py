"""What a Jigsaw model learned, as a picture: each puzzle as the network sees it | the tiles put
back by the permutation the network predicts | the tiles put back by the true permutation.

  draw_run(workdir, "puzzles.png")   # the latest checkpoint of a Jigsaw run, 4 puzzles

The puzzles are made from fixed crops of the run's own pretraining data with the task's own
cutting, colouring and normalisation (``ssl_jax.jigsaw.tiles.make_puzzles``), then shown back in
RGB (the normalisation undone; a puzzle drawn in grayscale shows gray). A title above each row
says the true permutation's index, the predicted one and the predicted one's probability; a
correct prediction makes the middle and right columns equal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ssl_jax import paths
from ssl_jax.colorization.picture import sample_images  # fixed crops of a run's own data
from ssl_jax.jigsaw.task import Jigsaw
from ssl_jax.train import state as state_lib

_GAP = 3  # pixels between tiles
_MARGIN = 12  # pixels between the three grids
_TITLE = 14  # pixels of text above each grid
_MIN_TILE = 64  # smaller tiles are enlarged (nearest neighbour) to this size for the eye


def solve(
    task: Jigsaw, variables: dict, images: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Puzzles of ``images`` (uint8 (B, H, W, 3) crops) and the model's answers.

    Returns a dict of NumPy arrays: "tiles" float32 (B, N, T, T, 3) normalised, in slot order
    (the network's input, in RGB whatever config.input.channel_order says); "labels" (B,) the
    true permutation indices; "predicted" (B,) the model's; "probability" (B,) the softmax
    probability of the predicted index.
    """
    if task.permutations is None:
        raise ValueError("solve() needs the task's permutation set: call task.fit(workdir) first.")
    # The puzzles exactly as training makes them (the task's own cutting, colouring,
    # normalisation and channel order); the picture keeps them in RGB.
    network_input, labels = task.prepare(jax.random.PRNGKey(seed), {"image": jnp.asarray(images)})
    bgr = task.config.input.get("channel_order", "rgb") == "bgr"
    tiles = network_input[..., ::-1] if bgr else network_input
    variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    logits, _ = task.model.apply(jax.device_get(variables), network_input, train=False)
    probabilities = jax.nn.softmax(logits, axis=-1)
    predicted = jnp.argmax(logits, axis=-1)
    return {
        "tiles": np.asarray(tiles),
        "labels": np.asarray(labels),
        "predicted": np.asarray(predicted),
        "probability": np.asarray(jnp.take_along_axis(probabilities, predicted[:, None], 1)[:, 0]),
    }


def reassemble(shuffled: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """A puzzle's tiles (N, ...) in slot order back in cell order, as ``permutation`` says they
    were shuffled: slot i holds the original tile permutation[i] (PROTOCOLS.md)."""
    out = np.empty_like(shuffled)
    out[np.asarray(permutation)] = shuffled
    return out


def _rgb(tiles: np.ndarray, mean, std) -> np.ndarray:
    """Normalised tiles back to uint8 RGB."""
    pixels = tiles * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def _grid(tiles: np.ndarray, grid: int) -> np.ndarray:
    """(N, T, T, 3) tiles in row-major order -> one image with ``_GAP`` white pixels between."""
    scale = -(-_MIN_TILE // tiles.shape[1])
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    size = tiles.shape[1]
    side = grid * size + (grid - 1) * _GAP
    out = np.full((side, side, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = divmod(k, grid)
        out[
            y * (size + _GAP) : y * (size + _GAP) + size,
            x * (size + _GAP) : x * (size + _GAP) + size,
        ] = tile
    return out


def draw(task: Jigsaw, solved: dict[str, np.ndarray], path: str) -> str:
    """Writes the picture of ``solve``'s puzzles to ``path`` (local or gs://); returns it."""
    jig = task.config.jigsaw
    mean, std = task.config.input.mean, task.config.input.std
    perms = np.asarray(task.permutations)
    rows = []
    for k in range(solved["tiles"].shape[0]):
        shuffled = _rgb(solved["tiles"][k], mean, std)
        guess = reassemble(shuffled, perms[solved["predicted"][k]])
        truth = reassemble(shuffled, perms[solved["labels"][k]])
        rows.append([_grid(t, jig.grid) for t in (shuffled, guess, truth)])
    side = rows[0][0].shape[0]
    width = 3 * side + 2 * _MARGIN
    canvas = Image.new("RGB", (width, len(rows) * (side + _TITLE + _MARGIN)), (255, 255, 255))
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, grids in enumerate(rows):
        y = k * (side + _TITLE + _MARGIN)
        true, guessed = int(solved["labels"][k]), int(solved["predicted"][k])
        verdict = "right" if true == guessed else "wrong"
        titles = (
            f"puzzle: permutation {true}",
            f"model: {guessed}, p={float(solved['probability'][k]):.2f} ({verdict})",
            "true order",
        )
        for j, (image, text) in enumerate(zip(grids, titles, strict=True)):
            x = j * (side + _MARGIN)
            pen.text((x + 1, y), text, fill=(0, 0, 0), font=font)
            canvas.paste(Image.fromarray(image), (x, y + _TITLE))
    paths.makedirs(paths.dirname(path))
    with paths.open(path, "wb") as f:
        canvas.save(f, format="PNG")
    return path


def draw_run(
    workdir: str, out: str | None = None, *, step: int | None = None, images: int = 4
) -> tuple[str, int]:
    """Writes the puzzles picture of a Jigsaw run's checkpoint (the latest, or ``step``) for
    ``images`` fixed crops of its own data; returns (the PNG's path, the step). Default path:
    ``workdir/samples/puzzles_step_S.png``."""
    _, task, step, variables = state_lib.restore_variables(workdir, step)
    if not isinstance(task, Jigsaw):
        raise ValueError(f"{workdir} is a {task.name!r} run; puzzles need a Jigsaw run.")
    task.fit(workdir)  # the run's permutation set, stored in its workdir
    crops = sample_images(task.config, images)
    out = out or paths.join(workdir, "samples", f"puzzles_step_{step:08d}.png")
    return draw(task, solve(task, variables, crops), out), step
