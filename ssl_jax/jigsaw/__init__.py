"""The Jigsaw pretext task: permutation sets, puzzles and the siamese classifier."""

from ssl_jax.jigsaw.permutations import generate_permutations, load_permutations
from ssl_jax.jigsaw.tiles import make_puzzles, shuffle_tiles, unshuffle_tiles

__all__ = [
    "generate_permutations",
    "load_permutations",
    "make_puzzles",
    "shuffle_tiles",
    "unshuffle_tiles",
]
