"""Chunking sweep: passage hit@1 / hit@5 / MRR@5 on qa-public for a few chunk settings.

Extracts the qa-public PDFs with ragchat's extractor, chunks them with each setting, embeds
with MiniLM, searches a flat FAISS inner-product index over all chunks of all documents and
scores each question with `ragchat.eval.metrics.passage_hit` (gold document, within one page,
answer in the text). Questions are split into two halves by document (even / odd in name
order): tune on half A, check on half B. Never tune to particular questions.

    python bench/chunking_sweep.py [--bench ../shared/bench/qa-public] [SETTING ...]

A setting is TOKENS:OVERLAP, optionally with chunker options after a slash, e.g.
"160:32/min_fill=0.3,paragraph_lines=0"; "plain200:40" is the fixed-window baseline
(windows of 200 tokens sliding by 160, no boundary preferences).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from ragchat.config import load_settings
from ragchat.eval.metrics import load_questions, retrieval_metrics
from ragchat.ingest.chunking import _chunk, _Options, document_text
from ragchat.ingest.pdf import extract_document_inprocess
from ragchat.records import Chunk, Page, Passage
from ragchat.retrieval.embedders import load_embedder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SETTINGS = [
    "plain200:40",
    "160:32",
    "160:32/min_fill=0.5,overlap_across_paragraphs=1",  # the chunker before tuning
    "128:24",
    "200:40",
    "254:48",
]
K = 5


def plain_chunks(pages: list[Page], token_spans, size: int, overlap: int) -> list[Chunk]:
    """Fixed token windows (the baseline): `size` tokens, advancing by size - overlap."""
    text, spans = document_text(pages)
    tokens: list[tuple[int, int]] = []
    for page, (_, offset, _) in zip(pages, spans, strict=True):
        tokens += [(a + offset, b + offset) for a, b in token_spans(page.text)]
    page_starts = [s for _, s, _ in spans]
    chunks = []
    for start in range(0, max(len(tokens) - overlap, 1), size - overlap):
        window = tokens[start : start + size]
        if not window:
            break
        a, b = window[0][0], window[-1][1]
        first = max(i for i, s in enumerate(page_starts) if s <= a)
        last = max(i for i, s in enumerate(page_starts) if s < b)
        chunks.append(Chunk(text[a:b], spans[first][0], spans[last][0], a, b, len(window)))
    return chunks


def parse_setting(setting: str) -> tuple[bool, int, int, _Options]:
    head, _, opts = setting.partition("/")
    plain = head.startswith("plain")
    size, overlap = (int(x) for x in head.removeprefix("plain").split(":"))
    kinds = {f.name: f.type for f in fields(_Options)}
    values: dict[str, object] = {}
    for item in filter(None, opts.split(",")):
        name, value = item.split("=")
        values[name] = float(value) if kinds[name] in (float, "float") else bool(int(value))
    return plain, size, overlap, _Options(**values)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared/bench/qa-public")
    parser.add_argument("settings", nargs="*", default=DEFAULT_SETTINGS)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()

    questions = load_questions(args.bench / "questions.jsonl")
    pdfs = sorted((args.bench / "docs").glob("*.pdf"))
    half_of = {pdf.name: "A" if i % 2 == 0 else "B" for i, pdf in enumerate(pdfs)}
    t0 = time.perf_counter()
    docs = {pdf.name: list(extract_document_inprocess(pdf).pages) for pdf in pdfs}
    print(f"extracted {len(docs)} PDFs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    embedder = load_embedder("minilm", load_settings(), dtype=args.dtype)
    query_vectors = embedder.embed([q.question for q in questions], kind="query")
    cache: dict[str, np.ndarray] = {}  # chunk text → vector, shared by all settings

    import faiss

    print(f"{'setting':<40} {'chunks':>6} {'tok/chunk':>9}  half  hit@1  hit@5  MRR@5")
    for setting in args.settings:
        plain, size, overlap, options = parse_setting(setting)
        passages: list[Passage] = []
        n_tokens: list[int] = []
        for name, pages in docs.items():
            if plain:
                chunks = plain_chunks(pages, embedder.token_spans, size, overlap)
            else:
                chunks = _chunk(pages, embedder.token_spans, size, overlap, options)
            for c in chunks:
                passages.append(
                    Passage(len(passages), name, name, c.page_start, c.page_end, 0.0, c.text)
                )
                n_tokens.append(c.n_tokens)
        new = sorted({p.text for p in passages} - cache.keys())
        if new:
            for text, vector in zip(
                new, embedder.embed(new, kind="passage", batch_size=64), strict=True
            ):
                cache[text] = vector
        index = faiss.IndexFlatIP(embedder.dim)
        index.add(np.stack([cache[p.text] for p in passages]))
        _, ids = index.search(query_vectors, K)
        results = [[passages[i] for i in row if i >= 0] for row in ids]
        for half in ("A", "B", "all"):
            chosen = [i for i, q in enumerate(questions) if half in ("all", half_of.get(q.doc))]
            m = retrieval_metrics([questions[i] for i in chosen], [results[i] for i in chosen])
            first = half == "A"
            label, count = (setting, str(len(passages))) if first else ("", "")
            mean_tokens = f"{np.mean(n_tokens):.0f}" if first else ""
            print(
                f"{label:<40} {count:>6} {mean_tokens:>9} {half:>5}  "
                f"{m['hit@1']:.3f}  {m['hit@5']:.3f}  {m['mrr']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
