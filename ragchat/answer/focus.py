"""Question-focused passages: only the sentences of the retrieved passages that bear on the
question go into the answer prompt.

A 0.5B reader picks the wrong span more often the more text it is given, and on a CPU every
prompt token costs prefill time. Ranking the sentences of the top passages against the
question (the embedder's cosine plus the share of the question's content words they hold,
with a small prior for better-ranked passages) and keeping the best few cuts the prompt to
about a third while keeping the sentence with the answer for most questions
(docs/answering.md has the figures).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ragchat.index.lexical import tokenize
from ragchat.ingest.chunking import ABBREVIATIONS
from ragchat.ingest.script import is_script, speeches
from ragchat.records import Passage

if TYPE_CHECKING:
    from ragchat.retrieval.embedders import Embedder


def _not_after_abbreviation() -> str:
    """A regex that matches where the text before is neither a single capital ("U.S.",
    "J. Smith") nor one of the chunker's ABBREVIATIONS ("Brown v. Board", "Gen. Lee"): one
    look-behind per word length, since each must be of fixed width."""
    by_length: dict[int, list[str]] = {}
    for word in ABBREVIATIONS:
        by_length.setdefault(len(word), []).append(re.escape(word))
    return r"(?<!\b[A-Z])" + "".join(
        rf"(?<!\b(?:{'|'.join(words)}))" for _, words in sorted(by_length.items())
    )


NOT_AFTER_ABBREVIATION = _not_after_abbreviation()


# A sentence ends at . ! or ? followed by space and something that can start a sentence,
# but not after an abbreviation or an initial.
_SENTENCE_END = re.compile(NOT_AFTER_ABBREVIATION + r"([.!?])\s+(?=[\"“(\[A-Z0-9])")


# Score = cosine + LEXICAL_WEIGHT × (share of question words) − RANK_PRIOR × passage rank.
LEXICAL_WEIGHT = 1.0


RANK_PRIOR = 0.05


# Sentences embedded at most (or 3 x those asked for, if more), picked by their lexical
# score: on 150 qa-public dev questions (~20 sentences each) the 3 chosen were the same for
# 149 with 12 embedded, for all with 16 (docs/answering.md, "Stop 22").
CANDIDATES = 12


GAP = " … "


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed; CJK text without spaces stays whole."""
    flat = " ".join(text.split())
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(flat):
        pieces.append(flat[start : match.end(1)])
        start = match.end()
    pieces.append(flat[start:])
    return [p.strip() for p in pieces if p.strip()]


def passage_units(text: str, script: bool | None = None) -> list[str]:
    """What focusing picks from: a script's speeches with their speakers (script.py), the
    sentences of anything else. `script` None: whether `text` looks like one."""
    if is_script(text) if script is None else script:
        return [speech.render() for speech in speeches(text)]
    return split_sentences(text)


@dataclass(frozen=True)
class Ranking:
    """The units (sentences, or a script's speeches) of some passages scored against a
    question: `units` as (passage index, text), `score` per unit (-inf: not embedded),
    `top` the best cosine of an embedded unit to the question (how close the closest
    sentence is: the prose off-topic rule's signal, `sentence_top`)."""

    units: list[tuple[int, str]]
    score: np.ndarray
    top: float
    script: bool


def rank_units(
    question: str,
    passages: Sequence[Passage],
    embedder: Embedder,
    *,
    sentences: int = 0,
    script: bool | None = None,
) -> Ranking:
    """Score the units of `passages` against `question`: the embedder's cosine plus the
    share of the question's words a unit holds, less RANK_PRIOR per passage rank. Only the
    CANDIDATES best by the lexical part (or 3 x `sentences`, if more) are embedded; a
    script's speeches are all embedded."""
    units = [(i, s) for i, p in enumerate(passages) for s in passage_units(p.text, script)]
    scripted = bool(script or (script is None and any(is_script(p.text) for p in passages)))
    if not units:
        return Ranking(units, np.zeros(0), 0.0, scripted)
    words = set(tokenize(question))
    overlap = np.array(
        [len(words & set(tokenize(s))) / len(words) if words else 0.0 for _, s in units]
    )
    rank = np.array([i for i, _ in units], dtype=np.float32)
    lexical = LEXICAL_WEIGHT * overlap - RANK_PRIOR * rank
    # Only the best candidates by the cheap part of the score are embedded (the embedding
    # is most of a lookup's time outside the model).
    candidates = np.arange(len(units))
    if not scripted:
        candidates = np.argsort(-lexical, kind="stable")[: max(CANDIDATES, 3 * sentences)]
    query = embedder.embed([question], kind="query")[0]
    cosine = embedder.embed([units[u][1] for u in candidates], kind="passage") @ query
    score = np.full(len(units), -np.inf)
    score[candidates] = cosine + lexical[candidates]
    return Ranking(units, score, float(cosine.max()), scripted)


def focus_passages(
    question: str,
    passages: Sequence[Passage],
    embedder: Embedder,
    *,
    sentences: int,
    script: bool | None = None,
    neighbours: int = 0,
    ranking: Ranking | None = None,
) -> list[Passage]:
    """The passages cut down to the `sentences` best sentences overall (a script's best
    speeches, speakers named), in their original order, gaps marked with " … "; passages
    left without a sentence are dropped, the order of the others is kept. `script`: read
    every passage as a script (True), none (False), or each as it looks (None). `ranking`:
    `rank_units` of the same arguments, when the caller has it already."""
    if ranking is None:
        units = [(i, s) for i, p in enumerate(passages) for s in passage_units(p.text, script)]
        scripted = script or (script is None and any(is_script(p.text) for p in passages))
        if len(units) > sentences:
            ranking = rank_units(question, passages, embedder, sentences=sentences, script=script)
    else:
        units, scripted = ranking.units, ranking.script
    if len(units) <= sentences:
        if not scripted:
            return list(passages)
        return _picked(passages, units, set(range(len(units))))
    assert ranking is not None
    keep = set(np.argsort(-ranking.score, kind="stable")[:sentences].tolist())
    # The units just before each kept one, in the same passage: a speech with its cue.
    for u in sorted(keep):
        for back in range(1, neighbours + 1):
            if u - back >= 0 and units[u - back][0] == units[u][0]:
                keep.add(u - back)
    return _picked(passages, units, keep)


def _picked(
    passages: Sequence[Passage], units: Sequence[tuple[int, str]], keep: set[int]
) -> list[Passage]:
    """The passages with only the `keep` units of their text (gaps marked)."""
    focused: list[Passage] = []
    offset = 0
    for i, passage in enumerate(passages):
        count = sum(1 for j, _ in units if j == i)
        picked = [u for u in range(offset, offset + count) if u in keep]
        offset += count
        if not picked:
            continue
        text = ""
        for n, u in enumerate(picked):
            joint = " " if n and u == picked[n - 1] + 1 else GAP
            text += (joint if n else "") + units[u][1]
        focused.append(dataclasses.replace(passage, text=text))
    return focused
