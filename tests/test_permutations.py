"""Jigsaw permutation sets: greedy selection against the naive reference, cache, loading."""

import itertools
import os

import numpy as np
import pytest

from ssl_jax.jigsaw import permutations as pm


def naive_greedy(candidates: np.ndarray, num: int, method: str, first: int) -> np.ndarray:
    """The reference script's loop: recompute the full (selected x pool) distance matrix each
    step and delete picked rows from the pool. Distances are kept as exact integers (see the
    module docstring for why not floating-point means of d/9)."""
    pool = candidates.copy()
    pool_index = np.arange(len(candidates))
    selected = [first]
    chosen = candidates[first][None]
    pool, pool_index = np.delete(pool, first, 0), np.delete(pool_index, first)
    while len(selected) < num:
        dist = (chosen[:, None, :] != pool[None, :, :]).sum(-1)  # (k, pool)
        score = dist.sum(0) if method == "max_avg" else dist.min(0)
        j = int(np.argmax(score))  # first maximum: lowest remaining (hence original) index
        selected.append(int(pool_index[j]))
        chosen = np.concatenate([chosen, pool[j][None]])
        pool, pool_index = np.delete(pool, j, 0), np.delete(pool_index, j)
    return np.array(selected)


@pytest.fixture(scope="module")
def all_perms():
    return pm.lexicographic_permutations(9)


@pytest.fixture(scope="module")
def subset(all_perms):
    """3000 of the 9! candidates, still in lexicographic order."""
    rng = np.random.default_rng(0)
    return all_perms[np.sort(rng.choice(len(all_perms), 3000, replace=False))]


@pytest.fixture(scope="module")
def cold_sets(tmp_path_factory):
    """Freshly generated sets (empty cache each), keyed by (num, method, seed)."""
    out = {}
    for num, method, seed in [(200, "max_avg", 0), (60, "max_avg", 0), (200, "max_min", 3)]:
        cache = tmp_path_factory.mktemp(f"cold_{num}_{method}_{seed}")
        out[num, method, seed] = pm.generate_permutations(num, method, seed, cache_dir=str(cache))
    return out


def test_lexicographic_order_matches_itertools(all_perms):
    expected = np.array(list(itertools.permutations(range(9))), np.int8)
    np.testing.assert_array_equal(all_perms, expected)
    for index in [0, 1, 40319, 40320, 200000, 362879]:
        np.testing.assert_array_equal(pm.permutation_at(index), expected[index])


@pytest.mark.parametrize("method", pm.METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_reference_on_all_candidates(all_perms, method, seed):
    first = pm.first_index(seed)
    expected = naive_greedy(all_perms, 7, method, first)
    np.testing.assert_array_equal(pm.greedy_select(all_perms, 7, method, first), expected)


@pytest.mark.parametrize("method", pm.METHODS)
@pytest.mark.parametrize("first", [0, 17])
@pytest.mark.parametrize("candidate_set", ["perms_of_6", "subset_of_9"])
def test_matches_naive_reference_on_small_candidate_sets(subset, method, first, candidate_set):
    # All 720 orderings of 6 tiles tie a lot; a 3000-row subset of 9! ties rarely. Every prefix
    # of the 30-row selection is a selection of that size (checked separately below).
    cands = pm.lexicographic_permutations(6) if candidate_set == "perms_of_6" else subset
    expected = naive_greedy(cands, 30, method, first)
    np.testing.assert_array_equal(pm.greedy_select(cands, 30, method, first), expected)


def test_prefix_property_of_greedy_select(subset):
    longest = pm.greedy_select(subset, 30, "max_avg", 5)
    for num in [1, 2, 13]:
        np.testing.assert_array_equal(pm.greedy_select(subset, num, "max_avg", 5), longest[:num])


def test_generated_sets_are_valid(cold_sets, all_perms):
    for (num, _, seed), perms in cold_sets.items():
        assert perms.shape == (num, 9) and perms.dtype == np.int32
        np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(9), (num, 1)))
        assert len(np.unique(perms, axis=0)) == num
        # Row 0 is the documented seeded pick.
        index = int(np.random.default_rng(seed).integers(362880))
        np.testing.assert_array_equal(perms[0], all_perms[index])


def test_generated_sets_are_spread_out(cold_sets):
    perms = cold_sets[200, "max_avg", 0]
    dist = pm.hamming_distances(perms, perms)
    off_diagonal = dist[~np.eye(len(perms), dtype=bool)]
    # Greedy max_avg keeps the mean distance near the maximum of 9 (Noroozi: about 0.9 of 9).
    assert off_diagonal.mean() > 7.9 and off_diagonal.min() >= 2
    min_dist = pm.hamming_distances(cold_sets[200, "max_min", 3], cold_sets[200, "max_min", 3])
    assert min_dist[~np.eye(200, dtype=bool)].min() >= 6


def test_prefix_property_of_generated_sets(cold_sets):
    np.testing.assert_array_equal(cold_sets[60, "max_avg", 0], cold_sets[200, "max_avg", 0][:60])


def test_hamming_distances_brute_force(subset):
    a, b = subset[:20], subset[100:130]
    expected = np.array([[int(np.sum(x != y)) for y in b] for x in a])
    np.testing.assert_array_equal(pm.hamming_distances(a, b), expected)


def _forbid_generation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated although a cached set should have been used")

    monkeypatch.setattr(pm, "greedy_select", fail)


def test_cache_hit_skips_generation(tmp_path, monkeypatch, cold_sets):
    monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path))
    first = pm.generate_permutations(60, "max_avg", 0)  # default dir from SSL_JAX_CACHE
    path = tmp_path / "permutations" / "perms_max_avg_60_seed0.npy"
    assert path.is_file()
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    np.testing.assert_array_equal(first, cold_sets[60, "max_avg", 0])
    _forbid_generation(monkeypatch)
    again = pm.generate_permutations(60, "max_avg", 0)
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.int32
    # A smaller set of the same method and seed is a prefix of the cached one.
    np.testing.assert_array_equal(pm.generate_permutations(25, "max_avg", 0), first[:25])
    # Another seed, method or a larger size is not served from it.
    for args in [(60, "max_avg", 1), (60, "max_min", 0), (61, "max_avg", 0)]:
        with pytest.raises(AssertionError, match="generated although"):
            pm.generate_permutations(*args)


@pytest.mark.parametrize("damage", ["garbage", "wrong_rows", "wrong_first_row", "not_perms"])
def test_bad_cache_file_is_regenerated(tmp_path, cold_sets, damage):
    good = cold_sets[60, "max_avg", 0]
    path = tmp_path / "perms_max_avg_60_seed0.npy"
    if damage == "garbage":
        path.write_bytes(b"\x93NUMPY truncated")
    elif damage == "wrong_rows":
        np.save(path, good[:59])
    elif damage == "wrong_first_row":
        np.save(path, good[::-1])
    else:
        bad = good.copy()
        bad[10, 0] = bad[10, 1]
        np.save(path, bad)
    perms = pm.generate_permutations(60, "max_avg", 0, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(perms, good)
    np.testing.assert_array_equal(np.load(path), good)  # overwritten with the good set


def test_unwritable_cache_dir_still_returns(tmp_path, cold_sets):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    perms = pm.generate_permutations(60, "max_avg", 0, cache_dir=str(blocker / "cache"))
    np.testing.assert_array_equal(perms, cold_sets[60, "max_avg", 0])


@pytest.mark.parametrize("num", [0, -3, 362881])
def test_bad_num_perms(num, tmp_path):
    with pytest.raises(ValueError, match=rf"{num}.*362880.*config\.jigsaw\.num_perms"):
        pm.generate_permutations(num, cache_dir=str(tmp_path))


@pytest.mark.parametrize("num", [2.5, True, "100"])
def test_non_integer_num_perms(num, tmp_path):
    with pytest.raises(ValueError, match=r"integer.*config\.jigsaw\.num_perms"):
        pm.generate_permutations(num, cache_dir=str(tmp_path))


def test_bad_method(tmp_path):
    with pytest.raises(ValueError, match=r"'max'.*max_avg, max_min.*config\.jigsaw\.perm_method"):
        pm.generate_permutations(10, "max", cache_dir=str(tmp_path))


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_bad_seed(seed, tmp_path):
    with pytest.raises(ValueError, match=r"seed.*>= 0.*config\.jigsaw\.perm_seed"):
        pm.generate_permutations(10, seed=seed, cache_dir=str(tmp_path))


def test_load_one_based_and_zero_based(tmp_path, cold_sets):
    perms = cold_sets[60, "max_avg", 0]
    np.save(tmp_path / "one_based.npy", (perms + 1).astype(np.int64))
    np.save(tmp_path / "zero_based.npy", perms.astype(np.uint8))
    np.save(tmp_path / "float.npy", perms.astype(np.float64))
    for name in ["one_based.npy", "zero_based.npy", "float.npy"]:
        loaded = pm.load_permutations(str(tmp_path / name))
        assert loaded.dtype == np.int32
        np.testing.assert_array_equal(loaded, perms)


IDENTITY = list(range(9))


@pytest.mark.parametrize(
    "content, message",
    [
        (np.arange(9).reshape(3, 3), r"shape \(3, 3\)"),
        (np.tile(np.arange(9), (4, 1)) * 2, r"span \[0, 16\]"),
        (np.array([IDENTITY, [0, 0, 2, 3, 4, 5, 6, 7, 8]]), r"row 1 .*not a"),
        (np.array([IDENTITY, IDENTITY[::-1]] * 2), r"rows \[0, 2\]"),
        (np.full((2, 9), 0.5), r"dtype float64"),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(ValueError, match=message):
        pm.load_permutations(str(path))


def test_load_rejects_non_npy(tmp_path):
    path = tmp_path / "perms.txt"
    path.write_text("0 1 2 3 4 5 6 7 8\n")
    with pytest.raises(ValueError, match="not a readable .npy"):
        pm.load_permutations(str(path))
