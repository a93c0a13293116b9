"""The matching maths: pure numpy, checked against plain Python loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge.match import (
    DIM,
    NO_ONE,
    Match,
    Matcher,
    PersonInfo,
    best_per_person,
    cosine_matrix,
    decide,
)

# On the emulated Pi too (scripts/test-arm64.sh): matching and thresholds, on the Pi's NumPy.
pytestmark = pytest.mark.pi


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))


def brute_force(sims: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    best: dict[int, float] = {}
    for s, i in zip(sims.tolist(), ids.tolist(), strict=True):
        best[i] = max(best.get(i, -np.inf), s)
    return best


def test_cosine_matrix_is_every_dot_product() -> None:
    rng = np.random.default_rng(1)
    q, t = unit(rng, 3), unit(rng, 7)
    m = cosine_matrix(q, t)
    assert m.shape == (3, 7) and m.dtype == np.float32
    for i in range(3):
        for j in range(7):
            assert m[i, j] == pytest.approx(float(np.dot(q[i], t[j])), abs=1e-5)
    assert cosine_matrix(q, np.zeros((0, DIM))).shape == (3, 0)
    with pytest.raises(ValueError):
        cosine_matrix(q, np.zeros((2, 64)))


def test_best_per_person_matches_a_loop() -> None:
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(0, 40))
        ids = rng.integers(0, 9, n)  # unsorted, with gaps and repeats
        sims = rng.uniform(-1, 1, n).astype(np.float32)
        got_ids, got_best = best_per_person(sims, ids)
        want = brute_force(sims, ids)
        assert got_ids.tolist() == sorted(want), seed
        assert got_best.tolist() == [want[i] for i in sorted(want)], seed


def test_decide_needs_threshold_and_margin() -> None:
    assert decide(0.50, 0.40, threshold=0.36, margin=0.05)
    assert not decide(0.35, NO_ONE, threshold=0.36, margin=0.05)  # below threshold
    assert not decide(0.50, 0.47, threshold=0.36, margin=0.05)  # too close to the next person
    assert decide(0.36, NO_ONE, threshold=0.36, margin=0.05)  # alone: margin against no one
    assert decide(0.375, 0.25, threshold=0.375, margin=0.125)  # both bounds inclusive


def people(n: int, **kw: object) -> list[PersonInfo]:
    return [PersonInfo(id=i + 10, name=f"p{i}", display_name=f"P {i}", **kw) for i in range(n)]  # type: ignore[arg-type]


def test_matcher_agrees_with_brute_force_on_random_unit_vectors() -> None:
    rng = np.random.default_rng(7)
    n_people, per = 40, 5
    ids = np.repeat(np.arange(n_people) + 10, per)
    perm = rng.permutation(ids.size)  # templates arrive in any order
    templates, ids = unit(rng, ids.size), ids[perm]
    threshold, margin = 0.1, 0.02
    m = Matcher(templates, ids, people(n_people), threshold, margin)
    assert len(m) == n_people * per and m.person_count == n_people
    # Queries: noisy copies of templates (clear matches) and random vectors (strangers).
    queries = np.vstack([templates[:30] + 0.05 * unit(rng, 30), unit(rng, 30)])
    accepted = 0
    for q in queries:
        qn = q / np.linalg.norm(q)
        best = brute_force(templates @ qn, ids)
        ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
        (top_id, top), (_, second) = ranked[0], ranked[1]
        got = m.match(q)
        assert got.similarity == pytest.approx(top, abs=1e-5)
        assert got.second == pytest.approx(second, abs=1e-5)
        assert got.nearest == f"p{top_id - 10}"
        assert got.accepted == decide(top, second, threshold, margin)
        if got.accepted:
            accepted += 1
            assert (got.name, got.person_id, got.display_name) == (
                f"p{top_id - 10}",
                top_id,
                f"P {top_id - 10}",
            )
        else:
            assert got.name is None and got.person_id is None
    assert accepted >= 30  # every noisy copy is recognised


def test_margin_refuses_look_alikes_and_one_person_needs_only_the_threshold() -> None:
    rng = np.random.default_rng(3)
    a = unit(rng, 1)[0]
    near = a + 0.01 * unit(rng, 1)[0]
    twins = Matcher(np.vstack([a, near]), [1, 2], people_ids([1, 2]), 0.36, 0.05)
    got = twins.match(a)
    assert not got.accepted and got.name is None and got.nearest == "p1"
    assert got.similarity - got.second < 0.05

    alone = Matcher(a[None, :], [1], people_ids([1]), 0.36, 0.05)
    got = alone.match(a)
    assert got.accepted and got.name == "p1" and got.second == NO_ONE


def people_ids(ids: list[int]) -> list[PersonInfo]:
    return [PersonInfo(id=i, name=f"p{i}") for i in ids]


def test_empty_gallery_matches_no_one() -> None:
    m = Matcher(np.zeros((0, DIM)), [], [], 0.36, 0.05)
    got = m.match(unit(np.random.default_rng(0), 1)[0])
    assert got == Match(None, None, NO_ONE, NO_ONE, False, None)
    assert got.refusal() == "unknown"


def test_templates_are_normalised_and_bad_queries_refused() -> None:
    rng = np.random.default_rng(5)
    t = unit(rng, 2)
    m = Matcher(t * np.array([[3.0], [0.5]]), [1, 2], people_ids([1, 2]), 0.36, 0.05)
    assert m.match(t[1] * 7).similarity == pytest.approx(1.0, abs=1e-5)
    for bad in (np.zeros(DIM), np.ones(DIM - 1), np.full(DIM, np.nan)):
        with pytest.raises(ValueError):
            m.match(bad)
    with pytest.raises(ValueError):
        Matcher(t, [1, 99], people_ids([1]), 0.36, 0.05)  # template of an unknown person


def test_refusal_reports_inactive_and_validity_window() -> None:
    start = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    end = start + timedelta(hours=10)
    rng = np.random.default_rng(9)
    t = unit(rng, 1)
    windowed = Matcher(
        t, [1], [PersonInfo(1, "ann", None, True, start.isoformat(), end.isoformat())], 0.36, 0.05
    )
    got = windowed.match(t[0])
    assert got.accepted and got.valid_from == start and got.valid_until == end
    assert got.refusal(start - timedelta(seconds=1)) == "outside validity window"
    assert got.refusal(start) is None
    assert got.refusal(end) == "outside validity window"  # the end is exclusive

    disabled = Matcher(t, [1], [PersonInfo(1, "ann", None, False)], 0.36, 0.05)
    got = disabled.match(t[0])
    assert got.accepted and got.name == "ann" and got.refusal() == "inactive"


def test_take_normalises_in_place_and_matches_like_a_copy():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((50, 128), dtype=np.float32)
    ids = np.repeat(np.arange(10), 5)
    people = [PersonInfo(int(i), f"p{i}") for i in range(10)]
    copied = Matcher(emb.copy(), ids, people, 0.3, 0.05)
    taken_from = emb.copy()
    taken = Matcher(taken_from, ids, people, 0.3, 0.05, take=True)
    assert np.allclose(np.linalg.norm(taken_from, axis=1), 1.0)  # normalised in place
    for q in rng.standard_normal((20, 128), dtype=np.float32):
        assert copied.match(q) == taken.match(q)
    # Out of order: copied, the caller's array untouched.
    shuffled = emb[::-1].copy()
    before = shuffled.copy()
    Matcher(shuffled, ids[::-1].copy(), people, 0.3, 0.05, take=True)
    assert np.array_equal(shuffled, before)
