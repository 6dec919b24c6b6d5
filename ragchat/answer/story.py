"""The summaries of a script's sections (answer/summaries.py) that match a question best,
as passages the reader is given before the script's speeches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ragchat.records import Passage

if TYPE_CHECKING:
    from ragchat.index.store import IndexStore, Summary
    from ragchat.retrieval.embedders import Embedder

# How many section summaries go into a script question's prompt (each about 100 tokens).
STORY_SECTIONS = 3

# Summaries have no chunk id: they are numbered below every chunk's.
_FIRST_ID = -1_000_000

_CACHE: dict[tuple[str, int, int], tuple[list[Summary], np.ndarray]] = {}


def _embedded(store: IndexStore, embedder: Embedder) -> tuple[list[Summary], np.ndarray]:
    """The index's non-empty summaries and their vectors (cached while neither the index
    nor its summaries change: a few dozen short texts, embedded once)."""
    summaries = [s for s in store.summaries() if s.text]
    key = (str(store.path), store.generation, len(summaries))
    if key not in _CACHE:
        vectors = (
            np.asarray(embedder.embed([s.text for s in summaries], kind="passage"))
            if summaries
            else np.zeros((0, 1), np.float32)
        )
        _CACHE[key] = (summaries, vectors)
    return _CACHE[key]


def story_passages(
    query: str,
    store: IndexStore,
    embedder: Embedder,
    source_ids: Sequence[int],
    n: int = STORY_SECTIONS,
) -> list[Passage]:
    """Up to `n` summaries of sections of the documents `source_ids`, those closest to
    `query` by cosine, in the order of the story; [] when none are summarised."""
    summaries, vectors = _embedded(store, embedder)
    wanted = set(source_ids)
    rows = [i for i, s in enumerate(summaries) if s.source_id in wanted]
    if not rows or n <= 0:
        return []
    question = np.asarray(embedder.embed([query], kind="query"))[0]
    scores = vectors[rows] @ question
    best = sorted(np.argsort(-scores, kind="stable")[:n].tolist(), key=lambda i: rows[i])
    return [summary_passage(summaries[rows[i]], rows[i], round(float(scores[i]), 4)) for i in best]


def summary_passage(summary: Summary, number: int, score: float = 1.0) -> Passage:
    """The `number`-th summary of an index as a passage the reader is given (is_summary)."""
    return Passage(
        chunk_id=_FIRST_ID - number,
        doc=summary.doc,
        path=summary.path,
        page=summary.page_start,
        page_end=summary.page_end,
        score=score,
        text=f"Summary of these pages: {summary.text}",
    )


def is_summary(passage: Passage) -> bool:
    """Whether `passage` is a section summary (story_passages), not a chunk."""
    return passage.chunk_id <= _FIRST_ID
