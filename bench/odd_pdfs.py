"""Robustness and speed figures for ragchat.ingest.pdf on the shared bench.

    python bench/odd_pdfs.py [--bench DIR] [--timeout S]   # pdfs-odd, fallback off vs on
    python bench/odd_pdfs.py --qa                          # + qa-public: pypdf vs pdfium
    python bench/odd_pdfs.py --long R-exts.pdf             # + one pdfs-long manual: speed
    python bench/odd_pdfs.py --skip-odd --overhead         # worker start-up cost only

pdfs-odd: every file through `extract_document` (worker process, time limit) twice,
without and with the PDFium fallback, passwords from manifest.jsonl; prints status counts,
files that gain real text through the fallback, files where poppler finds text and we do
not, the slowest files, and whether any exception other than PdfError escaped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragchat.errors import PdfError  # noqa: E402
from ragchat.ingest.pdf import (  # noqa: E402
    _read_pdfium,
    _read_pypdf,
    extract_document,
    extract_document_inprocess,
    normalise_pages,
)

DEFAULT_BENCH = REPO.parent / "shared" / "bench"


def run_odd(bench: Path, timeout_s: float) -> int:
    """pdfs-odd twice (fallback off/on); returns the number of escaped exceptions."""
    folder = bench / "pdfs-odd"
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").open()]
    results: dict[bool, dict[str, tuple[str, int, float, str]]] = {}
    escaped: list[str] = []
    walls: dict[bool, float] = {}
    for fallback in (False, True):
        rows: dict[str, tuple[str, int, float, str]] = {}
        wall = time.perf_counter()
        for entry in manifest:
            path = folder / entry["file"]
            start = time.perf_counter()
            try:
                doc = extract_document(
                    path, password=entry["password"], timeout_s=timeout_s, fallback=fallback
                )
                chars = sum(len(p.text) for p in doc.pages)
                rows[entry["file"]] = ("ok", chars, time.perf_counter() - start, doc.extractor)
            except PdfError as exc:
                rows[entry["file"]] = (exc.status, 0, time.perf_counter() - start, str(exc))
            except Exception as exc:  # the point of the bench: count, never crash
                escaped.append(f"{entry['file']} (fallback={fallback}): {exc!r}")
                rows[entry["file"]] = ("ESCAPED", 0, time.perf_counter() - start, repr(exc))
        walls[fallback] = time.perf_counter() - wall
        results[fallback] = rows

    off, on = results[False], results[True]
    print(f"pdfs-odd: {len(manifest)} files, time limit {timeout_s:g} s per file\n")
    print(f"{'status':<10}{'fallback off':>14}{'fallback on':>14}")
    for status in ("ok", "skipped", "failed", "ESCAPED"):
        a = sum(1 for r in off.values() if r[0] == status)
        b = sum(1 for r in on.values() if r[0] == status)
        print(f"{status:<10}{a:>14}{b:>14}")
    print(f"{'wall s':<10}{walls[False]:>14.1f}{walls[True]:>14.1f}")
    pdfium_used = sum(1 for r in on.values() if r[0] == "ok" and r[3] == "pdfium")
    print(f"\nwith fallback, text taken from PDFium for {pdfium_used} files")

    gained = [f for f in on if on[f][0] == "ok" and off[f][0] != "ok"]
    print(f"\nfiles gaining text through the fallback: {len(gained)}")
    for f in gained:
        print(f"  {f:<48} {off[f][0]:<8} -> ok ({on[f][1]} chars)  was: {off[f][3][:70]}")
    lost = [f for f in on if off[f][0] == "ok" and on[f][0] != "ok"]
    if lost:
        print(f"files LOST with the fallback: {lost}")

    poppler = {e["file"]: e["measured"].get("poppler_text_chars") or 0 for e in manifest}
    for fallback, rows in results.items():
        missing = [f for f, r in rows.items() if poppler[f] > 200 and r[1] < 20]
        extra = [f for f, r in rows.items() if poppler[f] < 20 and r[1] > 200]
        print(
            f"\nfallback {'on ' if fallback else 'off'}: poppler > 200 chars but ours < 20: "
            f"{len(missing)}; ours > 200 but poppler < 20: {len(extra)}"
        )
        for f in missing:
            print(
                f"  missing {f:<46} poppler {poppler[f]:>6}  ours: {rows[f][0]} {rows[f][3][:60]}"
            )
        for f in extra:
            print(f"  extra   {f:<46} poppler {poppler[f]:>6}  ours {rows[f][1]:>6} ({rows[f][3]})")

    print("\nreasons with fallback on (skipped/failed):")
    reasons = Counter(
        re.sub(r"\(.*\)", "(...)", r[3].split(": ", 1)[-1])[:70]
        for r in on.values()
        if r[0] != "ok"
    )
    for reason, count in reasons.most_common():
        print(f"  {count:>3}  {reason}")

    print("\nslowest files (fallback on):")
    for f, r in sorted(on.items(), key=lambda kv: -kv[1][2])[:6]:
        print(f"  {r[2]:6.2f} s  {f:<48} {r[0]}")
    print(f"\nexceptions other than PdfError that escaped: {len(escaped)}")
    for line in escaped:
        print("  " + line)
    return len(escaped)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower().strip()


def run_qa(bench: Path) -> None:
    """qa-public: is a gold answer on the gold page, is the gold passage one paragraph."""
    folder = bench / "qa-public"
    questions = [json.loads(line) for line in (folder / "questions.jsonl").open()]
    print("\nqa-public (20 PDFs, 200 questions), in-process, no fallback:")
    for primary in ("pypdf", "pdfium"):
        start = time.perf_counter()
        docs = {
            f.name: extract_document_inprocess(f, primary=primary, fallback=False)
            for f in sorted((folder / "docs").glob("*.pdf"))
        }
        seconds = time.perf_counter() - start
        on_page = exact = single = 0
        for q in questions:
            pages = {p.number: p.text for p in docs[q["doc"]].pages}
            text = pages.get(q["page"], "")
            on_page += any(_norm(a) in _norm(text) for a in q["answers"])
            if q["pages"][0] == q["pages"][-1]:
                single += 1
                exact += _norm(q["gold_passage"]) in {_norm(p) for p in text.split("\n\n")}
        print(
            f"  {primary:<7} {seconds:5.2f} s  gold answer on gold page {on_page}/{len(questions)}"
            f"  gold passage is exactly one paragraph {exact}/{single}"
        )


def run_long(bench: Path, name: str) -> None:
    """One pdfs-long manual: raw extraction speed of both libraries and normalisation cost."""
    path = bench / "pdfs-long" / name
    print(f"\npdfs-long/{name}:")
    for reader in (_read_pypdf, _read_pdfium):
        start = time.perf_counter()
        raw = reader(path, None, None)
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        texts, removed = normalise_pages(raw.pages)
        norm_s = time.perf_counter() - start
        n = len(raw.pages)
        print(
            f"  {raw.extractor:<7} {n} pages: extract {extract_s:6.2f} s"
            f" ({n / extract_s:5.0f} p/s);"
            f" normalise {norm_s:5.2f} s (+{100 * norm_s / extract_s:4.1f}%),"
            f" {removed} header/footer lines removed,"
            f" chars raw {sum(map(len, raw.pages))} -> {sum(map(len, texts))}"
        )


def run_overhead(repeats: int = 20) -> None:
    """Per-file cost of the worker process: a one-page PDF through the worker vs in-process."""
    import statistics
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from pdfmaker import make_pdf

    with tempfile.TemporaryDirectory() as tmp:
        path = make_pdf(["a tiny page of text for timing"], Path(tmp) / "tiny.pdf")
        start = time.perf_counter()
        extract_document(path)
        first = time.perf_counter() - start
        worker, inprocess = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            extract_document(path)
            worker.append(time.perf_counter() - start)
            start = time.perf_counter()
            extract_document_inprocess(path)
            inprocess.append(time.perf_counter() - start)
    print(
        f"\nworker overhead: first call {first * 1000:.0f} ms (starts the fork server); then"
        f" median {statistics.median(worker) * 1000:.1f} ms per file via the worker vs"
        f" {statistics.median(inprocess) * 1000:.1f} ms in-process"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="shared bench folder")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-file limit, seconds")
    parser.add_argument("--qa", action="store_true", help="also measure qa-public")
    parser.add_argument("--long", action="append", default=[], help="also time this manual")
    parser.add_argument("--skip-odd", action="store_true", help="do not run pdfs-odd")
    parser.add_argument("--overhead", action="store_true", help="time the worker start-up")
    args = parser.parse_args()
    escaped = 0 if args.skip_odd else run_odd(args.bench, args.timeout)
    if args.overhead:
        run_overhead()
    if args.qa:
        run_qa(args.bench)
    for name in args.long:
        run_long(args.bench, name)
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
