"""Merge ranked lists from several retrieval methods (dense, BM25) into one. Pure.

Two ways, chosen on the qa-public bench (docs/retrieval.md):
- "rrf": reciprocal rank fusion, sum over methods of weight / (k + rank), rank 1-based;
  ignores score sizes, so one method's confident first place counts no more than a shrug.
- "score": convex combination of min-max normalised scores; keeps how far ahead a method's
  first result is, which is what lets BM25's clear exact-term matches survive fusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Ranking = Sequence[tuple[int, float]]


METHODS = ("rrf", "score")


# Chosen on half A of the qa-public bench, confirmed on half B (docs/retrieval.md).
DEFAULT_METHOD = "score"


# Per fusion method, the weights used for rankings the caller gives no weight; a ranking
# named in neither weighs 1.0. RRF's default is the classic unweighted one.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "score": {"dense": 0.3, "bm25": 0.7},
    "rrf": {},
}


def fuse(
    rankings: Mapping[str, Ranking],
    weights: Mapping[str, float] | None = None,
    k: int = 60,
    limit: int = 10,
    method: str = DEFAULT_METHOD,
) -> list[tuple[int, float]]:
    """Fuse per-method rankings {method: [(chunk_id, score), ...] best first} into the best
    `limit` (chunk_id, fused score), best first. `weights` override DEFAULT_WEIGHTS per
    ranking name; `k` is RRF's rank offset (unused by "score"). A chunk missing from a
    ranking gets nothing from it. Ties go to the better single-method rank, then the
    lower id."""
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose from {METHODS}")
    merged = DEFAULT_WEIGHTS[method] | dict(weights or {})
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for name, ranking in rankings.items():
        weight = merged.get(name, 1.0)
        contributions = (
            _rrf_contributions(ranking, k) if method == "rrf" else _minmax_contributions(ranking)
        )
        for rank, (chunk_id, value) in enumerate(contributions, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * value
            best_rank[chunk_id] = min(best_rank.get(chunk_id, rank), rank)
    order = sorted(fused, key=lambda c: (-fused[c], best_rank[c], c))
    return [(chunk_id, fused[chunk_id]) for chunk_id in order[: max(limit, 0)]]


def _rrf_contributions(ranking: Ranking, k: int) -> list[tuple[int, float]]:
    """1 / (k + rank) per chunk, first occurrence only."""
    seen: set[int] = set()
    out: list[tuple[int, float]] = []
    for chunk_id, _score in ranking:
        if chunk_id in seen:
            continue
        seen.add(chunk_id)
        out.append((chunk_id, 1.0 / (k + len(out) + 1)))
    return out


def _minmax_contributions(ranking: Ranking) -> list[tuple[int, float]]:
    """Scores scaled to [0, 1] within this list (all 1.0 when they are equal)."""
    seen: set[int] = set()
    kept: list[tuple[int, float]] = []
    for chunk_id, score in ranking:
        if chunk_id not in seen:
            seen.add(chunk_id)
            kept.append((chunk_id, float(score)))
    if not kept:
        return []
    lo = min(s for _, s in kept)
    hi = max(s for _, s in kept)
    if hi <= lo:
        return [(c, 1.0) for c, _ in kept]
    return [(c, (s - lo) / (hi - lo)) for c, s in kept]
