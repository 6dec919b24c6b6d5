"""Split a document's pages into chunks of at most `max_tokens` embedder tokens.

Pure: no torch. The embedder's tokenizer is passed in as `token_spans(text)`, the
(start, end) character offsets of its tokens, so chunk limits are counted in the tokens the
model will really read while chunk text stays the document's own characters (a decoded
wordpiece string is lower-cased and re-spaced, which breaks answer strings and citations).

How a chunk end is chosen (see docs/chunking.md): every gap between two tokens gets a
level — blank-line paragraph break > sentence end on a short line (a paragraph's last line
in PDF text, which has no blank lines) > sentence end > line break > space > no space (a
sub-word or CJK character boundary) > inside one character (byte-level tokens). A chunk
ends at the latest gap of the highest level in the last 70% of its window. When it ended
inside a paragraph, the next chunk starts with the whole trailing sentences of the previous
chunk that fit in `overlap` tokens (or at a word or token boundary when no sentence ends
there); after a paragraph end it starts clean. A page break counts as a line break, so the
tail of a sentence that runs onto the next page is never a chunk start.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ragchat.ingest.script import lead_line_ends
from ragchat.records import Chunk, Page

PAGE_SEPARATOR = "\n\n"


# Gap levels between consecutive tokens; higher is a better place to end a chunk.
_INSIDE_CHAR = -1  # byte-level BPE tokens that share one character


_NO_SPACE = 0  # sub-word pieces, punctuation glued to a word, CJK characters


_SPACE = 1


_LINE = 2


_SENTENCE = 3


_PARAGRAPH_LINE = 4  # sentence end on a line much shorter than the page's usual line


_PARAGRAPH = 5  # blank line inside a page


# A token spanning more characters than this (an [UNK] standing for a whole run of a script
# the vocabulary lacks, e.g. Thai in MiniLM) is counted as one token per this many
# characters and may be cut there: it over-counts, so the hard limit still holds, and it
# keeps such chunks to a readable size for BM25 and the answering LM.
LONG_TOKEN_CHARS = 16


# Sentence enders: ". ! ?" and "…" need whitespace (or the end) after them, optionally after
# closing quotes/brackets; the full-width CJK enders need nothing after them.
_ENDERS = ".!?…"


_CLOSERS = "\"'’”)]»"


_CJK_ENDERS = "。！？．"


_CJK_CLOSERS = '」』）】"”’'


# Words before a full stop that usually does not end a sentence, as a single capital does
# ("J. Smith"); "Brown v. Board" is one name. Not "Inc." or "Co.", which often end one,
# nor another lower-case letter: "... divisible by n. Then" ends one. The chunker's
# boundaries and answer/focus.py's sentences both use them.
ABBREVIATIONS = (
    "e.g", "i.e", "cf", "v", "vs", "al", "Dr", "Mr", "Mrs", "Ms", "Prof", "Fig", "Figs", "Eq",
    "Eqs", "No", "Nos", "Vol", "pp", "St", "Mt", "Jr", "Sr", "approx", "ca", "resp",
    "Gen", "Col", "Lt", "Capt", "Sgt", "Rev", "Gov",
)  # fmt: skip


_WHITESPACE = [c for c in range(0x3001) if chr(c).isspace()]


# A line shorter than this fraction of its page's median line, ending a sentence, is taken
# as the last line of a paragraph.
_SHORT_LINE = 0.7


@dataclass(frozen=True)
class _Options:
    """Tuning knobs of the boundary choice; the defaults are what chunk_pages uses."""

    # A chunk ends in the last (1 - min_fill) of its window, so it holds at least
    # min_fill * max_tokens tokens unless the document ends first. 0.3 beat 0.5 and 0.75 on
    # qa-public (docs/chunking.md): a paragraph end at 30% is a better cut than a sentence
    # inside the next paragraph.
    min_fill: float = 0.3
    # Whether sentence ends on short lines count as paragraph ends.
    paragraph_lines: bool = True
    # Whether a chunk that ended at a paragraph end still carries overlap into the next.
    # Off: the next paragraph starts clean (hit@5 +0.045, MRR +0.04 on qa-public).
    overlap_across_paragraphs: bool = False


def document_text(pages: Sequence[Page]) -> tuple[str, list[tuple[int, int, int]]]:
    """The document's text (page texts joined by PAGE_SEPARATOR) and, per page,
    (page_number, char_start, char_end) of that page's text in it."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    for i, page in enumerate(pages):
        if i:
            pos += len(PAGE_SEPARATOR)
        spans.append((page.number, pos, pos + len(page.text)))
        pos += len(page.text)
    return PAGE_SEPARATOR.join(page.text for page in pages), spans


def chunk_pages(
    pages: Sequence[Page],
    token_spans: Callable[[str], list[tuple[int, int]]],
    max_tokens: int,
    overlap: int,
) -> list[Chunk]:
    """Chunks of at most `max_tokens` tokens (as counted by `token_spans`, the tokenizer's
    character offsets without special tokens), ending preferably at paragraph, then
    sentence, then line ends; a chunk cut inside a paragraph overlaps the next by about
    `overlap` tokens. Each chunk's text is
    `document_text(pages)[0][char_start:char_end]`, stripped; pages are 1-based, inclusive."""
    return _chunk(pages, token_spans, max_tokens, overlap, _Options())


def _chunk(
    pages: Sequence[Page],
    token_spans: Callable[[str], list[tuple[int, int]]],
    max_tokens: int,
    overlap: int,
    options: _Options,
) -> list[Chunk]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    # Overlap of half a chunk or more would make chunks advance by less than they repeat.
    overlap = max(0, min(overlap, max_tokens // 2))
    text, page_spans = document_text(pages)
    starts, ends = _document_tokens(pages, page_spans, token_spans)
    n = len(starts)
    if n == 0:
        return []
    levels = _gap_levels(text, page_spans, starts, ends, options)

    page_starts = [start for _, start, _ in page_spans]
    chunks: list[Chunk] = []
    s = 0
    while True:
        if n - s <= max_tokens:
            b = n
        else:
            b = _chunk_end(levels, s, max_tokens, options.min_fill)
        chunks.append(_make_chunk(text, page_spans, page_starts, starts, ends, s, b))
        if b >= n:
            return chunks
        if overlap == 0 or (not options.overlap_across_paragraphs and levels[b] >= _PARAGRAPH_LINE):
            s = b
        else:
            s = _overlap_start(levels, s, b, overlap)


def _document_tokens(
    pages: Sequence[Page],
    page_spans: list[tuple[int, int, int]],
    token_spans: Callable[[str], list[tuple[int, int]]],
) -> tuple[np.ndarray, np.ndarray]:
    """Token (starts, ends) in document coordinates, int64, long tokens split."""
    all_starts: list[np.ndarray] = []
    all_ends: list[np.ndarray] = []
    for page, (_, offset, _) in zip(pages, page_spans, strict=True):
        if not page.text.strip():
            continue
        found = token_spans(page.text)
        flat = np.fromiter(itertools.chain.from_iterable(found), np.int64, count=2 * len(found))
        spans = flat.reshape(-1, 2)
        spans = spans[spans[:, 1] > spans[:, 0]]
        all_starts.append(spans[:, 0] + offset)
        all_ends.append(spans[:, 1] + offset)
    if not all_starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate(all_starts)
    ends = np.concatenate(all_ends)
    lengths = ends - starts
    if (lengths > LONG_TOKEN_CHARS).any():
        pieces = -(-lengths // LONG_TOKEN_CHARS)  # ceil
        first = np.repeat(starts, pieces)
        token_end = np.repeat(ends, pieces)
        # k-th piece of a token starts k * LONG_TOKEN_CHARS after the token's start.
        k = np.arange(len(first)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = first + k * LONG_TOKEN_CHARS
        ends = np.minimum(starts + LONG_TOKEN_CHARS, token_end)
    return starts, ends


def _gap_levels(
    text: str,
    page_spans: list[tuple[int, int, int]],
    starts: np.ndarray,
    ends: np.ndarray,
    options: _Options,
) -> np.ndarray:
    """levels[i] = how good a chunk end the gap before token i is; levels[0] is unused."""
    # One code point per element: vectorised character tests instead of a Python loop
    # over ~10 M characters.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    is_space = _lookup(_char_table(_WHITESPACE), codes)
    # nonspace_before[i] = number of non-whitespace characters in text[:i]
    nonspace_before = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(~is_space, out=nonspace_before[1:])
    newlines = np.flatnonzero(codes == ord("\n"))
    sentence_ends = _sentence_ends(codes, is_space)

    levels = np.full(len(starts), _NO_SPACE, dtype=np.int8)
    gap = levels[1:]  # a view: gap[j] is the gap between tokens j and j + 1
    prev_start, prev_end, next_start = starts[:-1], ends[:-1], starts[1:]
    gap[next_start > prev_end] = _SPACE
    gap[next_start < prev_end] = _INSIDE_CHAR
    # Page separators contain newlines, so a page break is at least a line break.
    has_newline = _count_in(newlines, prev_end, next_start, "left") > 0
    gap[has_newline & (gap >= _SPACE)] = _LINE
    # A sentence end at e belongs to the gap whose tokens straddle it: the previous token
    # starts before e and the next one starts at or after it.
    is_sentence = (_count_in(sentence_ends, prev_start, next_start, "right") > 0) & (
        gap >= _NO_SPACE
    )
    gap[is_sentence] = _SENTENCE
    if options.paragraph_lines:
        para_ends = _paragraph_line_ends(
            codes, page_spans, newlines, nonspace_before, sentence_ends
        )
        gap[(_count_in(para_ends, prev_start, next_start, "right") > 0) & is_sentence] = (
            _PARAGRAPH_LINE
        )
    gap[
        _count_in(_blank_lines(page_spans, newlines, nonspace_before), prev_end, next_start, "left")
        > 0
    ] = _PARAGRAPH
    # Right after a speaker's cue or a heading is the worst place to end: the chunk would
    # end on a name and the next begin with words nobody says.
    leads = np.asarray(lead_line_ends(text), dtype=np.int64)
    if len(leads):
        after_lead = (_count_in(leads, prev_end, next_start, "left") > 0) & (gap > _SPACE)
        gap[after_lead] = _SPACE
    return levels


def _count_in(
    positions: np.ndarray, lo: np.ndarray, hi: np.ndarray, side: Literal["left", "right"]
) -> np.ndarray:
    """How many of the sorted `positions` lie in [lo, hi) (side "left") or (lo, hi]
    (side "right"), element-wise."""
    return np.searchsorted(positions, hi, side=side) - np.searchsorted(positions, lo, side=side)


def _char_table(chars: str | list[int]) -> np.ndarray:
    """A lookup table: table[min(code, 0xFFFF)] is True for the given characters."""
    table = np.zeros(0x10000, dtype=bool)
    table[[ord(c) if isinstance(c, str) else c for c in chars]] = True
    table[0xFFFF] = False  # where every code above the BMP lands
    return table


def _lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return table[np.minimum(codes, 0xFFFF)]


def _sentence_ends(codes: np.ndarray, is_space: np.ndarray) -> np.ndarray:
    """Sorted character positions just after a sentence's final punctuation (and closers)."""
    pad = 8
    padded = np.concatenate([np.full(pad, 32, np.uint32), codes, np.full(1, 32, np.uint32)])
    enders, closers = _char_table(_ENDERS), _char_table(_CLOSERS)
    cjk_enders, cjk_closers = _char_table(_CJK_ENDERS), _char_table(_CJK_CLOSERS)
    # Candidate ends e (1..n): the character before e can close a sentence.
    any_closing = _char_table(_ENDERS + _CLOSERS + _CJK_ENDERS + _CJK_CLOSERS)
    e = np.flatnonzero(_lookup(any_closing, codes)) + 1

    shifted: dict[int, np.ndarray] = {}

    def before(k: int) -> np.ndarray:
        """The code k characters before each candidate end (spaces before the text)."""
        if k not in shifted:
            shifted[k] = padded[pad + e - k]
        return shifted[k]

    c1, c2, c3 = before(1), before(2), before(3)
    space_after = np.append(is_space, True)[e]  # the character at e, or the end of the text
    western = space_after & (
        _lookup(enders, c1)
        | (_lookup(closers, c1) & _lookup(enders, c2))
        | (_lookup(closers, c1) & _lookup(closers, c2) & _lookup(enders, c3))
    )
    # Full stops that are abbreviations, initials ("J. Smith", "U.S. law") or list numbers
    # at the start of a line ("3. Install").
    not_end = (c2 >= ord("A")) & (c2 <= ord("Z")) & ~_is_word(c3)
    digits = [(before(k) >= ord("0")) & (before(k) <= ord("9")) for k in (2, 3, 4)]
    line_start = [(before(k) == ord("\n")) | (e - k < 0) for k in (3, 4, 5)]
    not_end |= digits[0] & line_start[0]
    not_end |= digits[0] & digits[1] & line_start[1]
    not_end |= digits[0] & digits[1] & digits[2] & line_start[2]
    for word in ABBREVIATIONS:
        match = ~_is_word(before(len(word) + 2))
        for j, char in enumerate(reversed(word)):
            match &= before(j + 2) == ord(char)
        not_end |= match
    western &= ~((c1 == ord(".")) & not_end)

    next_code = padded[pad + e]
    cjk = (_lookup(cjk_enders, c1) | (_lookup(cjk_closers, c1) & _lookup(cjk_enders, c2))) & ~(
        _lookup(cjk_enders, next_code) | _lookup(cjk_closers, next_code)
    )
    return e[western | cjk]


def _is_word(codes: np.ndarray) -> np.ndarray:
    """ASCII letters and digits, and every non-ASCII character."""
    lower = codes | 0x20
    return (
        ((lower >= ord("a")) & (lower <= ord("z")))
        | ((codes >= ord("0")) & (codes <= ord("9")))
        | (codes > 0x7F)
    )


def _paragraph_line_ends(
    codes: np.ndarray,
    page_spans: list[tuple[int, int, int]],
    newlines: np.ndarray,
    nonspace_before: np.ndarray,
    sentence_ends: np.ndarray,
) -> np.ndarray:
    """Sentence ends that close a line clearly shorter than the median line of its page."""
    n = len(codes)
    # Lines: [line_starts[k], line_ends[k]) with line_ends the newline (or the text end).
    line_ends = np.concatenate([newlines, [n]])
    line_starts = np.concatenate([[0], newlines + 1])
    lengths = line_ends - line_starts
    has_text = nonspace_before[line_ends] > nonspace_before[line_starts]
    page_starts = np.asarray([start for _, start, _ in page_spans])
    line_page = np.searchsorted(page_starts, line_starts, side="right") - 1
    median = np.zeros(len(page_spans))
    # Lines are in page order, so each page's lines are one slice.
    bounds = np.searchsorted(line_page, np.arange(len(page_spans) + 1))
    for page in range(len(page_spans)):
        page_lengths = lengths[bounds[page] : bounds[page + 1]][
            has_text[bounds[page] : bounds[page + 1]]
        ]
        if len(page_lengths):
            median[page] = np.median(page_lengths)
    # The line holding each sentence end e (e may be the position of its newline).
    line = np.searchsorted(line_ends, sentence_ends, side="left")
    ends_line = nonspace_before[line_ends[line]] == nonspace_before[sentence_ends]
    short = (sentence_ends - line_starts[line]) < _SHORT_LINE * median[line_page[line]]
    return sentence_ends[ends_line & short & (line_ends[line] < n)]


def _blank_lines(
    page_spans: list[tuple[int, int, int]], newlines: np.ndarray, nonspace_before: np.ndarray
) -> np.ndarray:
    """Positions of newlines followed by a blank line inside one page (not the separator)."""
    first, second = newlines[:-1], newlines[1:]
    blank = nonspace_before[second] == nonspace_before[first + 1]
    page_starts = np.asarray([start for _, start, _ in page_spans])
    page_ends = np.asarray([end for _, _, end in page_spans])
    page = np.searchsorted(page_starts, first, side="right") - 1
    inside = (page >= 0) & (second < page_ends[np.maximum(page, 0)])
    return first[blank & inside]


def _chunk_end(levels: np.ndarray, s: int, max_tokens: int, min_fill: float) -> int:
    """Token index b (exclusive end) for the chunk starting at token s: the latest gap of
    the highest level in s + min_fill * max_tokens .. s + max_tokens."""
    lo = s + max(1, int(max_tokens * min_fill))
    hi = s + max_tokens  # b == hi means exactly max_tokens tokens
    window = levels[lo : hi + 1]
    best = window.max()
    if best < _NO_SPACE:
        # Never cut inside a character: the slice would hold more tokens than counted.
        whole = np.flatnonzero(levels[s + 1 : hi + 1] >= _NO_SPACE)
        return s + 1 + int(whole[-1]) if len(whole) else hi
    last = len(window) - 1 - int(np.argmax(window[::-1] == best))
    return lo + last


def _overlap_start(levels: np.ndarray, s: int, b: int, overlap: int) -> int:
    """Start of the next chunk: the earliest gap of the best level (sentence ends and
    better count alike) in the last `overlap` tokens before b, after s."""
    lo = max(s + 1, b - overlap)
    if lo >= b:
        return b
    window = np.minimum(levels[lo:b], _SENTENCE)
    best = window.max()
    if best < _NO_SPACE:
        return b  # the overlap would start inside a character
    return lo + int(np.argmax(window == best))


def _make_chunk(
    text: str,
    page_spans: list[tuple[int, int, int]],
    page_starts: list[int],
    starts: np.ndarray,
    ends: np.ndarray,
    s: int,
    b: int,
) -> Chunk:
    char_start, char_end = int(starts[s]), int(ends[b - 1])
    piece = text[char_start:char_end]
    # Tokenizers that keep a leading space in their offsets (byte-level BPE) would leave
    # whitespace at the edges.
    stripped = piece.strip()
    if stripped != piece:
        char_start += len(piece) - len(piece.lstrip())
        char_end = char_start + len(stripped)
    page_first = bisect.bisect_right(page_starts, char_start) - 1
    page_last = bisect.bisect_right(page_starts, max(char_start, char_end - 1)) - 1
    return Chunk(
        text=stripped,
        page_start=page_spans[page_first][0],
        page_end=page_spans[page_last][0],
        char_start=char_start,
        char_end=char_end,
        n_tokens=b - s,
    )
