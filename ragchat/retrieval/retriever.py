"""Retrieval over one index: dense (FAISS), BM25, or both fused. `search`, `ask` and
`eval` all come through here, so they share one default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragchat.config import RETRIEVAL_METHODS
from ragchat.errors import UsageError
from ragchat.index.lexical import content_terms
from ragchat.index.store import IndexStore
from ragchat.records import Passage
from ragchat.retrieval.routing import named_source, route

if TYPE_CHECKING:
    from ragchat.config import Settings
    from ragchat.retrieval.embedders import Embedder


METHODS = RETRIEVAL_METHODS


# How many candidates each method hands to fusion. Score fusion min-max scales each list,
# so its depth changes the scaling: 30 is what docs/retrieval.md measured.
MIN_CANDIDATES = 30


class Retriever:
    """Searches one open index with the embedder it was built with."""

    def __init__(
        self, store: IndexStore, embedder: Embedder, method: str = "hybrid", *, route: bool = False
    ) -> None:
        if method not in METHODS:
            raise UsageError(f"unknown retrieval method {method!r}; choose from {METHODS}")
        self.store = store
        self.embedder = embedder
        self.method = method
        self.route = route  # keep to one document when the question names it (routing.py)

    def search(self, query: str, k: int) -> list[Passage]:
        """The `k` best passages for `query`, best first (score: higher is better)."""
        return self.search_with_evidence(query, k)[0]

    def search_with_evidence(self, query: str, k: int) -> tuple[list[Passage], dict[str, float]]:
        """`search`, and what the rankings say about how well the index covers the query:
        `dense_top`, the best passage's cosine similarity to the query, and (hybrid)
        `agreement`, the share of the dense top 5 that BM25 also ranks in its top 5;
        `routed` is 1.0 when the passages of other documents than the one the question
        names were dropped (routing.py)."""
        query = query.strip()
        if not query or k <= 0:
            return [], {}
        n = max(k, MIN_CANDIDATES)
        evidence: dict[str, float] = {}
        if self.method == "bm25":
            ranked = self.store.lexical_index().search(query, k)
        else:
            dense = self._dense(query, n)
            if dense:
                evidence["dense_top"] = round(dense[0][1], 4)
            ranked = dense[:k]
        if self.method == "hybrid":
            from ragchat.retrieval.fusion import fuse

            bm25 = self.store.lexical_index().search(query, n)
            top_dense = {i for i, _ in dense[:5]}
            if top_dense:
                shared = top_dense & {i for i, _ in bm25[:5]}
                evidence["agreement"] = round(len(shared) / len(top_dense), 4)
            ranked = fuse({"dense": dense, "bm25": bm25}, limit=k)
        source = self._routed_source(query) if self.route and ranked else None
        if source is not None:
            ids = np.fromiter((i for i, _ in ranked), dtype=np.int64, count=len(ranked))
            keep = self.store.chunk_sources(ids) == source
            if keep.any() and not keep.all():
                ranked = [pair for pair, kept in zip(ranked, keep, strict=True) if kept]
                evidence["routed"] = 1.0
        return self.store.passages(ranked), evidence

    def _routed_source(self, query: str) -> int | None:
        """The source id the query names (routing.route), None for one it doesn't or an
        index of one document."""
        if self.store.source_count() < 2:
            return None
        lexical = self.store.lexical_index()
        weights = {t: lexical.idf(t) for t in content_terms(query, lexical.respellings(query))}
        counts = {t: _per_source(self.store.chunk_sources(lexical.chunks_with(t))) for t in weights}
        holders = {t: set(c) for t, c in counts.items()}
        source = route(weights, holders)
        return source if source is not None else named_source(counts, self.store.source_sizes())

    def _dense(self, query: str, n: int) -> list[tuple[int, float]]:
        vector = self.embedder.embed([query], kind="query")[0]
        return self.store.search_vectors(vector, n)

    def warm_up(self) -> None:
        """Load the derived indexes now (they are built lazily on first search)."""
        self.store.vector_index()
        if self.method != "dense":
            self.store.lexical_index()

    def close(self) -> None:
        self.store.close()


def open_retriever(
    index_path: Path, settings: Settings, embedder_spec: str | None = None
) -> Retriever:
    """Open the index at `index_path` for searching with the embedder its manifest names."""
    from ragchat.retrieval.open import open_or_create

    store, embedder = open_or_create(index_path, settings, embedder_spec, create=False)
    return Retriever(store, embedder, settings.retrieval, route=settings.route_documents)


def _per_source(sources: np.ndarray) -> dict[int, int]:
    """How many of the chunks whose source ids these are each source has."""
    ids, counts = np.unique(sources, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True))
