"""Rendering results for the terminal and for --json: passages, ingest progress bars and
reports, answers and their timing line."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ragchat.answer.citations import source_label, strip_citations

if TYPE_CHECKING:
    from ragchat.answer.qa import Answer
    from ragchat.ingest.pipeline import IngestProgress
    from ragchat.records import IngestReport, Passage


def passage_json(p: Passage) -> dict[str, Any]:
    return {
        "doc": p.doc,
        "path": p.path,
        "page": p.page,
        "page_end": p.page_end,
        "score": round(p.score, 6),
        "text": p.text,
    }


class IngestBars:
    """Draws ingest progress with tqdm on stderr: files overall, pages and chunks of the
    current file. Called from the extraction thread too, hence the lock."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._files: Any = None
        self._bars: dict[str, Any] = {}

    def __call__(self, event: IngestProgress) -> None:
        if not self.enabled:
            if event.stage == "wait":
                print(f"waiting for another ingest into {event.path} to finish...", file=sys.stderr)
            return
        from tqdm import tqdm

        with self._lock:
            if event.stage == "wait":
                tqdm.write(
                    f"waiting for another ingest into {event.path} to finish...", file=sys.stderr
                )
            elif event.stage == "start":
                self._files = tqdm(
                    total=event.total,
                    unit="file",
                    desc="files",
                    file=sys.stderr,
                    position=0,
                    dynamic_ncols=True,
                )
            elif event.stage in ("extract", "embed"):
                unit = "page" if event.stage == "extract" else "chunk"
                key = f"{event.stage}:{event.path}"
                bar = self._bars.get(key)
                if bar is None:
                    name = Path(event.path or "").name
                    label = ("reading " if event.stage == "extract" else "embedding ") + name
                    bar = tqdm(
                        total=event.total,
                        unit=unit,
                        desc=label[:40],
                        file=sys.stderr,
                        leave=False,
                        position=1 if event.stage == "extract" else 2,
                        dynamic_ncols=True,
                        # No rate: a file's bar appears with its first page or batch done,
                        # so tqdm's first rate is one item over microseconds (293051 chunk/s).
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]",
                    )
                    self._bars[key] = bar
                bar.n = event.done
                bar.refresh()
                if event.done >= event.total:
                    bar.close()
                    self._bars.pop(key, None)
            elif event.stage == "fit":
                tqdm.write(
                    f"computing the embedder's centring mean from {event.total} chunks",
                    file=sys.stderr,
                )
            elif event.stage == "file" and self._files is not None:
                self._files.update(1)

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            if self._files is not None:
                self._files.close()


def report_json(report: IngestReport) -> dict[str, Any]:
    return {
        "index": report.index,
        "seconds": round(report.seconds, 3),
        "files": [
            {
                "path": f.path,
                "status": f.status,
                "reason": f.reason,
                "pages": f.pages,
                "chunks": f.chunks,
                "extractor": f.extractor,
                "seconds": round(f.seconds, 3),
            }
            for f in report.files
        ],
        "counts": {
            s: report.count(s)
            for s in ("indexed", "unchanged", "skipped", "failed", "removed", "missing")
        },
    }


def print_report(report: IngestReport, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    counts = report_json(report)["counts"]
    pages = sum(f.pages for f in report.files if f.status == "indexed")
    chunks = sum(f.chunks for f in report.files if f.status == "indexed")
    rate = f", {speed(pages, report.seconds)}" if report.seconds > 0 and pages >= 20 else ""
    for f in report.files:
        if f.status in ("skipped", "failed", "removed", "missing") or (
            f.status == "indexed" and f.reason
        ):
            print(f"  {f.status:8} {f.path}: {_own_reason(f.path, f.reason or '')}", file=out)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    done = (
        f"{plural(pages, 'page')}, {plural(chunks, 'chunk')}"
        if counts["indexed"]
        else "nothing new to index"
    )
    print(
        f"{report.index}: {summary or 'no files'} — {done} in {report.seconds:.1f}s{rate}",
        file=out,
    )


def plural(n: int, noun: str) -> str:
    """`1 passage`, `3 passages`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def speed(pages: int, seconds: float) -> str:
    """`12 pages/s`, `1.4 pages/s`, or `1.2 s/page` below one page a second."""
    per_second = pages / seconds
    if per_second >= 10:
        return f"{per_second:.0f} pages/s"
    if per_second >= 1:
        return f"{per_second:.1f} pages/s"
    return f"{seconds / pages:.1f} s/page"


def _own_reason(path: str, reason: str) -> str:
    """The reason without the file name it starts with (the line already shows the path);
    "pypdf: …; used pdfium" said as what happened."""
    name = Path(path).name
    for prefix in (f"{path}: ", f"{name}: "):
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
    if "; used pdfium" in reason:
        reason = "read with PDFium instead (" + reason.replace("; used pdfium", ")")
    return reason


def print_passages(query: str, passages: Sequence[Passage], multiple: bool) -> None:
    if multiple:
        print(f"\n=== {query}")
    if not passages:
        print("(no passages: the index is empty)")
    for rank, p in enumerate(passages, 1):
        text = " ".join(p.text.split())
        if len(text) > 400:
            text = text[:400] + "…"
        print(
            f"{rank}. {source_label(p.doc, p.page, p.page_end)}  (score {p.score:.3f})\n   {text}"
        )


def answer_json(answer: Answer) -> dict[str, Any]:

    t = answer.timings
    return {
        "question": answer.question,
        # Citations live in "citations"; "answer" is the answer alone, "answer_cited" the
        # text as shown in the console.
        "answer": strip_citations(answer.text),
        "answer_cited": answer.text,
        "abstained": answer.abstained,
        "citations": [{"doc": c.doc, "page": c.page} for c in answer.citations],
        "passages": [passage_json(p) for p in answer.passages],
        "timings": {
            "load_s": round(t.load_s, 3),
            "retrieve_s": round(t.retrieve_s, 3),
            "first_token_s": None if t.first_token_s is None else round(t.first_token_s, 3),
            "total_s": round(t.total_s, 3),
            "prompt_tokens": t.prompt_tokens,
            "gen_tokens": t.gen_tokens,
            "tok_per_s": round(t.tok_per_s, 2),
        },
    }


# Abstentions decided from retrieval alone (abstention.RULES), as the timing line says them.
_BEFORE_THE_MODEL = {
    "no_passages": "nothing retrieved; the model was not asked",
    "coverage": "none of the question's words occur in the passages; the model was not asked",
    "unknown_names": "the documents never mention what the question names; the model was not asked",
    "off_topic": "no passage is close to the question; the model was not asked",
}


def before_the_model(answer: Answer) -> str | None:
    """Why the model was not asked, for an abstention decided from retrieval alone."""
    return _BEFORE_THE_MODEL.get(answer.decided_by)


def timing_line(answer: Answer) -> str:
    t = answer.timings
    if early := before_the_model(answer):
        return f"retrieve {t.retrieve_s:.2f}s · {early}"
    first = f"first token {t.first_token_s:.1f}s, " if t.first_token_s is not None else ""
    # A yes/no verdict is scored, not written: no tokens to speak of.
    tokens = f" · {t.gen_tokens} tokens at {t.tok_per_s:.1f} tok/s" if t.gen_tokens else ""
    return (
        f"{plural(len(answer.passages), 'passage')} · retrieve {t.retrieve_s:.2f}s, {first}"
        f"total {t.total_s:.1f}s{tokens}"
    )
