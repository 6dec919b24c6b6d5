"""Questions about the documents as a whole: "Summarize the document.", "What is this PDF
about?", "Give me an overview of gull-point.pdf". No passage matches them by their words
(the coverage rule refused them: "document" occurs in none), so they are answered from
passages spread over each document asked about: its section summaries where the index has
them (a script's story map, answer/summaries.py), else its chunks at even steps, the first
and the last first."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ragchat.answer.story import summary_passage
from ragchat.index.lexical import content_terms, tokenize
from ragchat.records import Passage

if TYPE_CHECKING:
    from ragchat.index.store import IndexStore, SourceRecord

# What asks for an account of a whole document.
_ASKS = re.compile(
    r"\b(summari[sz]e|summary|overview|outline|gist|about|main points?|key points?|"
    r"main ideas?|tl;?dr)\b",
    re.IGNORECASE,
)

# Words that name the documents themselves, or how a summary is asked for, not something
# in them: a question with no other content term (besides a document's file name) is about
# the documents as a whole.
_DOCUMENT_WORDS = (
    "document documents doc docs pdf pdfs file files paper papers article articles text "
    "texts book books report reports manual manuals script scripts screenplay screenplays "
    "play plays story stories this these that it whole entire all main key point points "
    "idea ideas topic topics gist summary summarise summarize summarised summarized short "
    "brief briefly overview outline say says cover covers index collection please"
)

# An index of more documents than this gets their list, not a summary of all of them.
MAX_SOURCES = 4

# A document's passages offered to the prompt at most (more never fit its budget).
CANDIDATES = 16


def overview_sources(question: str, sources: Sequence[SourceRecord]) -> list[SourceRecord] | None:
    """The documents `question` asks to have summarised, or None when it asks about
    something in them. It must ask for an account ("summarize", "overview", "what is …
    about") and hold no content term beyond words for documents and the file names of
    some of `sources`: those are the ones asked about, all of them when it names none."""
    if not sources or not _ASKS.search(question):
        return None
    # ("What's": "s" is no content term.)
    left = {t for t in content_terms(question) if len(t) > 1 or t.isdigit()} - _document_terms()
    if not left:
        return list(sources)
    # The documents whose names share most terms with the question ("Summarize
    # report-3.txt": report-3.txt, not report-2.txt), if its other terms are in them too.
    overlap = [len(left & _name_terms(s.name)) for s in sources]
    best = max(overlap)
    named = [s for s, n in zip(sources, overlap, strict=True) if best and n == best]
    covered = set().union(*(_name_terms(s.name) for s in named))
    return named if named and left <= covered else None


def overview_passages(
    store: IndexStore,
    sources: Sequence[SourceRecord],
    fits: Callable[[Sequence[Passage]], Sequence[Passage]],
) -> list[Passage]:
    """Passages spread over each of `sources`, as many as `fits` keeps (it takes
    candidates best first and returns those that fit the prompt), in document order:
    the section summaries of a document the index has them for, else its chunks at even
    steps (the first and the last, then the middle, then the quarters ...). The
    documents take turns, so each gets its first pick before any gets a second."""
    summaries = store.summaries()
    per_source: list[list[Passage]] = []
    for source in sources:
        own = [(n, s) for n, s in enumerate(summaries) if s.source_id == source.id and s.text]
        if own:
            picked = [summary_passage(s, n) for n, s in own]
            per_source.append([picked[i] for i in spread(len(picked))])
        else:
            ids = store.source_chunk_ids(source.id)
            order = [int(ids[i]) for i in spread(len(ids))[:CANDIDATES]]
            per_source.append(store.passages([(cid, 1.0) for cid in order]))
    candidates = [p for turn in _turns(per_source) for p in turn]
    kept = {p.chunk_id for p in fits(candidates)}
    position = {p.chunk_id: (n, p.page, p.chunk_id) for n, ps in enumerate(per_source) for p in ps}
    chosen = [p for p in candidates if p.chunk_id in kept]
    return sorted(chosen, key=lambda p: position[p.chunk_id])


def spread(n: int) -> list[int]:
    """0..n-1 coarse to fine: the first and the last, the middle, the quarters, the
    eighths ... (every index once)."""
    if n <= 0:
        return []
    order = [0] if n == 1 else [0, n - 1]
    seen = set(order)
    parts = 2
    while len(order) < n:
        for k in range(1, parts, 2):
            i = round(k * (n - 1) / parts)
            if i not in seen:
                seen.add(i)
                order.append(i)
        parts *= 2
        if parts > 2 * n:  # rounding left some out: fill them in
            order += [i for i in range(n) if i not in seen]
            break
    return order


def document_list(sources: Sequence[SourceRecord]) -> str:
    """The reply when an index of more than MAX_SOURCES documents is asked to summarise
    them all: what it holds, and how to ask about one."""
    names = [s.name for s in sources]
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return (
        f"This index holds {len(names)} documents: {shown}. Name one to have it "
        f'summarised, e.g. "Summarize {names[0]}".'
    )


def _turns(groups: Sequence[Sequence[Passage]]) -> list[list[Passage]]:
    """The groups' first items, then their second items, ..."""
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


def _name_terms(name: str) -> set[str]:
    """The index terms of a file name, less words for documents ("gull-point.pdf": gull;
    "report-3.txt": 3, txt)."""
    return set(tokenize(name.replace("_", " "), stopwords=True)) - _document_terms()


@functools.cache
def _document_terms() -> frozenset[str]:
    return frozenset(tokenize(_DOCUMENT_WORDS, stopwords=False))
