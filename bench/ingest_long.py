"""Ingest speed on ../shared/bench/pdfs-long, side by side with its parts.

    python bench/ingest_long.py                      # all 11 manuals (5,510 pages)
    python bench/ingest_long.py --files R-intro.pdf R-exts.pdf
    python bench/ingest_long.py --files ... --embedder-runtime torch --threads 1
    python bench/ingest_long.py --probe ../shared/bench/{ja-public/docs,qa-public/docs,pdfs-long}

Prints, in one run:
  1. full `ragchat ingest` (library call, fresh index): wall time, pages/s, chunks/s,
     peak RSS of the ingest process;
  2. extraction alone (the same extractor, same worker, no embedding);
  3. the bare embedder alone on exactly the chunks the ingest stored (same model, dtype,
     batch size and threads): the floor ingest can approach;
and the ratios ingest / bare embedder and extraction / ingest, with the load average.

--probe DIR...: per file, what the extractor choice measures (CPU ms of pypdf's first page
and PDFium's per page over the first 3, their ratio, PDFium's share of pypdf's characters
on page 1) and the order ragchat picks (ragchat/ingest/pdf.py `_cheaper_first`).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench" / "pdfs-long"


def rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, default=BENCH)
    parser.add_argument("--files", nargs="*", help="file names inside --bench (default all)")
    parser.add_argument("--extractor", default="pypdf", choices=("pypdf", "pdfium"))
    parser.add_argument("--skip-extract-only", action="store_true")
    parser.add_argument("--embedder-runtime", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="embedder intra-op threads")
    parser.add_argument("--probe", nargs="+", type=Path, help="folders: extractor probe table")
    parser.add_argument(
        "--extract-compare",
        nargs="+",
        type=Path,
        help="folders: extraction alone, ragchat's per-file choice vs pypdf only, side by side",
    )
    args = parser.parse_args()
    if args.probe:
        return probe_table(args.probe)
    if args.extract_compare:
        return extract_compare(args.extract_compare)
    if not args.bench.is_dir():
        print(f"no benchmark material at {args.bench}", file=sys.stderr)
        return 2
    files = [args.bench / f for f in args.files] if args.files else sorted(args.bench.glob("*.pdf"))

    from ragchat.config import load_settings
    from ragchat.hub import configure_hub

    settings = load_settings(
        {"extractor": args.extractor, "embedder_runtime": args.embedder_runtime}
    ).replace(threads=args.threads)
    print(f"load average at start: {os.getloadavg()}")
    configure_hub(False)
    from ragchat.index.store import IndexStore
    from ragchat.ingest.pdf import extract_document
    from ragchat.ingest.pipeline import ingest

    print(
        f"{len(files)} files, extractor {args.extractor}, embedder {settings.embedder}, "
        f"batch {settings.embed_batch_size}, chunk {settings.chunk_tokens}/"
        f"{settings.chunk_overlap}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "long"
        t0 = time.perf_counter()
        report = ingest(files, index, settings)
        ingest_s = time.perf_counter() - t0
        pages = sum(f.pages for f in report.files if f.status == "indexed")
        chunks = sum(f.chunks for f in report.files if f.status == "indexed")
        bad = [f for f in report.files if f.status != "indexed"]
        print(
            f"\n[1] ingest: {ingest_s:.1f} s wall, {pages} pages ({pages / ingest_s:.1f} "
            f"pages/s), {chunks} chunks ({chunks / ingest_s:.1f} chunks/s)"
        )
        # The PDF workers are children of the forkserver, not of this process, so
        # RUSAGE_CHILDREN does not see them: this is the ingest process alone.
        print(f"    peak RSS of the ingest process: {rss_mib(resource.RUSAGE_SELF):.0f} MiB")
        for f in bad:
            print(f"    {f.status}: {f.path}: {f.reason}")

        with IndexStore.open(index) as store:
            _, texts = store.iter_chunk_texts()

        extract_s = None
        if not args.skip_extract_only:
            t0 = time.perf_counter()
            for f in files:
                extract_document(f, timeout_s=settings.pdf_timeout_s, primary=args.extractor)
            extract_s = time.perf_counter() - t0
            print(f"\n[2] extraction alone: {extract_s:.1f} s ({pages / extract_s:.1f} pages/s)")

        from ragchat.retrieval.embedders import load_embedder

        embedder = load_embedder(settings.embedder, settings)
        print(f"    embedder runtime {embedder.runtime}, threads {settings.threads or 'default'}")
        embedder.embed(texts[:64], kind="passage", batch_size=settings.embed_batch_size)  # warm
        t0 = time.perf_counter()
        embedder.embed(texts, kind="passage", batch_size=settings.embed_batch_size)
        embed_s = time.perf_counter() - t0
        print(
            f"\n[3] bare embedder on the same {len(texts)} chunks: {embed_s:.1f} s "
            f"({len(texts) / embed_s:.1f} chunks/s)"
        )

    print(f"\nload average at the end: {os.getloadavg()}")
    print("side by side")
    print(f"  ingest / bare embedder   {ingest_s / embed_s:.2f}x   (goal <= 1.10x)")
    if extract_s:
        print(f"  extraction alone / ingest  {extract_s / ingest_s:.2f}")
        print(
            f"  extraction + embedding if run one after the other: {extract_s + embed_s:.1f} s"
            f" vs ingest {ingest_s:.1f} s"
        )
    return 0


def extract_compare(folders: list[Path]) -> int:
    """Extraction alone through the worker (extract_document), per file in turn: the default
    (extractor chosen by measured cost) and pypdf only (fallback off, no probe)."""
    from ragchat.ingest.pdf import extract_document

    print(f"load average: {os.getloadavg()}")
    for folder in folders:
        files = sorted(folder.glob("*.pdf"))
        seconds = {"chosen by cost": 0.0, "pypdf only": 0.0}
        pages = 0
        used: dict[str, int] = {}
        for f in files:
            for name, fallback in (("chosen by cost", True), ("pypdf only", False)):
                t0 = time.perf_counter()
                doc = extract_document(f, fallback=fallback)
                seconds[name] += time.perf_counter() - t0
                if fallback:
                    pages += doc.page_count
                    used[doc.extractor] = used.get(doc.extractor, 0) + 1
        print(f"{folder}: {len(files)} files, {pages} pages; chosen: {used}")
        for name, s in seconds.items():
            print(f"  {name:<15} {s:6.1f} s  {pages / s:6.1f} pages/s")
        print(
            f"  ratio pypdf only / chosen: {seconds['pypdf only'] / seconds['chosen by cost']:.1f}x"
        )
    print(f"load average: {os.getloadavg()}")
    return 0


def probe_table(folders: list[Path]) -> int:
    import logging

    from ragchat.ingest.pdf import _doc_chars, order_by_cost, probe_costs

    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    print(f"load average: {os.getloadavg()}")
    header = "file | pypdf CPU ms, page 1 | PDFium CPU ms/page | ratio | PDFium/pypdf chars | first"
    print(f"| {header} |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for folder in folders:
        for f in sorted(folder.glob("*.pdf")):
            costs = probe_costs(f)
            (a_texts, a), (b_texts, b) = costs["pypdf"], costs["pdfium"]
            share = _doc_chars(b_texts[:1]) / max(1, _doc_chars(a_texts))
            first = order_by_cost(costs)[0]
            print(
                f"| {folder.name}/{f.name} | {a * 1000:.1f} | {b * 1000:.1f} | "
                f"{a / max(b, 1e-9):.1f} | {share:.2f} | {first} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
