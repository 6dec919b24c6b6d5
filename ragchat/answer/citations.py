"""Citations: the `Citation` record, rendering `[n]` markers as `[file p.N]`, the streaming
renderer and the functions that strip citations again. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragchat.answer.focus import split_sentences
from ragchat.index.lexical import tokenize
from ragchat.records import Passage

# A citation as the model writes it ([1], [1, 2]) or as rendered ([file.pdf p.3–4]).
_BRACKETED = re.compile(r"\s*\[[^\[\]]*\]")


def strip_citations(text: str) -> str:
    """The answer without its citations, raw [n] markers or rendered [file p.N] labels
    (what the answer metrics and the abstention signals look at)."""
    return " ".join(_BRACKETED.sub("", text).split())


class CitationStream:
    """Turns streamed model text into display text: a `[n]` marker is held back until it is
    complete, then shown as `[file p.N]` (or dropped if it points at no given passage)."""

    _OPEN = re.compile(r"\[[^\]]{0,40}$")

    def __init__(self, passages: Sequence[Passage], emit: Callable[[str], None]) -> None:
        self._passages = passages
        self._emit = emit
        self._pending = ""
        self._last = " "  # the last character shown, to avoid doubled spaces

    def feed(self, piece: str) -> None:
        text = self._pending + piece
        match = self._OPEN.search(text)
        if match:  # an unfinished bracket: keep it until it closes
            text, self._pending = text[: match.start()], text[match.start() :]
        else:
            self._pending = ""
        if text:
            self._show(self._render(text))

    def close(self) -> None:
        if self._pending:
            self._show(self._render(self._pending))
            self._pending = ""

    def _show(self, text: str) -> None:
        if self._last.isspace():
            text = text.lstrip(" ")
        if text:
            self._emit(text)
            self._last = text[-1]

    def _render(self, text: str) -> str:
        if not text.strip():
            return text
        rendered, _ = render_citations(text, self._passages)
        # render_citations trims; keep the stream's own spacing at the edges.
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        return lead + rendered + trail if rendered else lead + trail


@dataclass(frozen=True)
class Citation:
    """A passage the answer cites; pages are 1-based and inclusive."""

    number: int  # the [n] the model wrote
    doc: str
    page: int
    page_end: int

    @property
    def label(self) -> str:
        """`file.pdf p.3`, `file.pdf p.3–4`; `notes.txt` or `notes.txt §2` for text files."""
        return source_label(self.doc, self.page, self.page_end)


def page_label(page: int, page_end: int) -> str:
    """`p.3` or `p.3–4` (1-based, inclusive)."""
    return f"p.{page}" if page_end <= page else f"p.{page}–{page_end}"


def source_label(doc: str, page: int, page_end: int) -> str:
    """Where a passage is: `file.pdf p.3`; for a text file (ingest/text.py: a page is a
    form-feed section) `notes.txt §2`, or just `notes.txt` for its first page."""
    from ragchat.ingest.text import is_text_file

    if not is_text_file(doc):
        return f"{doc} {page_label(page, page_end)}"
    if page == 1 and page_end <= 1:
        return doc
    return f"{doc} §{page}" if page_end <= page else f"{doc} §{page}–{page_end}"


# [1]  [1, 2]  [1][2]  [1-3]  [Passage 2]  [passages 1 and 3]
_MARKER = re.compile(
    r"\[\s*(?:passages?\s*)?(\d+(?:\s*(?:,|;|and|&|-|–)\s*(?:passages?\s*)?\d+)*)\s*\]",
    re.IGNORECASE,
)


def _numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for piece in re.split(r"\s*(?:,|;|and|&)\s*", group, flags=re.I):
        piece = re.sub(r"passages?\s*", "", piece, flags=re.I)
        if m := re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", piece):
            lo, hi = int(m.group(1)), int(m.group(2))
            numbers += list(range(lo, hi + 1)) if 0 < hi - lo < 20 else [lo, hi]
        elif piece.strip().isdigit():
            numbers.append(int(piece))
    return numbers


def cite_uncited(
    answer_text: str, passages: Sequence[Passage], share: float = 0.5, most: int = 3
) -> str:
    """`answer_text` with a marker added to each sentence that has none: `[n]` for the
    passage that holds most of its content words, `[n, m]` for the fewest passages (at
    most `most`) that together hold at least `share` of them; a sentence no passages bear
    out stays uncited. A small model asked to cite every sentence of a summary sometimes
    cites none, and a summary's sentence often joins facts from two places."""
    vocabularies = [set(tokenize(p.text, stopwords=True)) for p in passages]
    out = []
    for sentence in split_sentences(answer_text):
        words = set(tokenize(sentence, stopwords=True))
        numbers = [] if _MARKER.search(sentence) else _bearing_out(words, vocabularies, share, most)
        if not numbers:
            out.append(sentence)
            continue
        body, end = (sentence[:-1], sentence[-1]) if sentence[-1] in ".!?" else (sentence, "")
        out.append(f"{body} [{', '.join(map(str, numbers))}]{end}")
    return " ".join(out)


def _bearing_out(
    words: set[str], vocabularies: Sequence[set[str]], share: float, most: int
) -> list[int]:
    """The 1-based numbers of the fewest vocabularies (greedily, at most `most`) that
    together hold `share` of `words`, in passage order; none when they cannot."""
    chosen: list[int] = []
    held: set[str] = set()
    while words and len(chosen) < most and len(held) < share * len(words):
        gains = [
            len((words & v) - held) if n not in chosen else 0 for n, v in enumerate(vocabularies)
        ]
        best = max(range(len(gains)), key=gains.__getitem__, default=None)
        if best is None or gains[best] == 0:
            return []
        chosen.append(best)
        held |= words & vocabularies[best]
    return sorted(n + 1 for n in chosen) if words and len(held) >= share * len(words) else []


def render_citations(
    answer_text: str, given_passages: Sequence[Passage]
) -> tuple[str, list[Citation]]:
    """Replace [n] markers with `[file.pdf p.N]` (`p.N–M` for chunks spanning pages), drop
    markers that point at no given passage, and return the text plus the distinct cited
    passages in order of first mention. `given_passages[n-1]` is passage [n]."""
    citations: list[Citation] = []
    seen: set[tuple[str, int, int]] = set()

    def replace(match: re.Match[str]) -> str:
        labels: list[str] = []
        for number in _numbers(match.group(1)):
            if not 1 <= number <= len(given_passages):
                continue
            p = given_passages[number - 1]
            cite = Citation(number, p.doc, p.page, max(p.page, p.page_end))
            if cite.label not in labels:
                labels.append(cite.label)
            key = (cite.doc, cite.page, cite.page_end)
            if key not in seen:
                seen.add(key)
                citations.append(cite)
        return "".join(f"[{label}]" for label in labels)

    text = _MARKER.sub(replace, answer_text)
    text = re.sub(r"(\[[^\[\]]+\])(?:\1)+", r"\1", text)  # [a p.1][a p.1] -> [a p.1]
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "answer ." left by a dropped marker
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text, citations
