"""The `ragchat` command: parse arguments, build settings, call one library function, render
the result. Heavy libraries are imported inside the command that needs them, so `--help`
stays instant."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ragchat import __version__
from ragchat.config import Settings, load_settings
from ragchat.errors import RagchatError, UsageError

if TYPE_CHECKING:
    from ragchat.ingest import IngestProgress
    from ragchat.records import IngestReport, Passage

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # some files skipped or failed
EXIT_NOTHING = 4  # nothing indexed and nothing there before

DESCRIPTION = """\
Ask questions about your own PDFs, offline.

  ragchat ingest script.pdf papers/         extract, chunk, embed -> indexes/default
  ragchat search "who built the lighthouse?" the passages that answer it, with file and page
  ragchat ask "who built the lighthouse?"    a short answer citing [file p.N]
  ragchat chat                               an interactive console over your documents

Indexes live in ./indexes (or --index-dir / RAGCHAT_INDEX_DIR); --index NAME picks one, a
value with '/' or starting with '.' or '~' is a path. Nothing is downloaded unless you pass
--allow-download (or set RAGCHAT_ALLOW_DOWNLOAD=1).
"""


# ---------------------------------------------------------------------------- parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exits with 2, ours too
        self.print_usage(sys.stderr)
        raise SystemExit(f"ragchat: error: {message}\n(try `ragchat {self._sub_name()}--help`)")

    def _sub_name(self) -> str:
        parts = self.prog.split()[1:]
        return " ".join(parts) + " " if parts else ""


def _common(p: argparse.ArgumentParser, index: bool = True) -> None:
    g = p.add_argument_group("common options")
    if index:
        g.add_argument(
            "--index",
            "-i",
            default="default",
            help="index name under the index dir, or a path (default: %(default)s)",
        )
    g.add_argument("--index-dir", type=Path, help="where named indexes live (default ./indexes)")
    g.add_argument(
        "--cache-dir", type=Path, help="model cache (default ~/.cache/ragchat; RAGCHAT_CACHE_DIR)"
    )
    g.add_argument(
        "--allow-download",
        action="store_true",
        default=None,
        help="let Hugging Face hub ids be downloaded (off by default)",
    )
    g.add_argument(
        "--debug", action="store_true", default=None, help="show tracebacks (RAGCHAT_DEBUG=1)"
    )


def _chunking(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embedder",
        help="minilm (default), a sentence-transformers folder or hub "
        "id, or lm:MODEL for a causal LM's mean-pooled hidden states",
    )
    p.add_argument("--chunk-tokens", type=int, help="chunk size in embedder tokens")
    p.add_argument("--chunk-overlap", type=int, help="overlap between chunks in tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ragchat",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "ingest",
        help="add PDFs (files or folders) to an index",
        description="Extract, chunk and embed PDFs into an index. Files already "
        "indexed with the same content are skipped; changed files are re-indexed. "
        "Each file is committed on its own, so an interrupted ingest keeps what "
        "it finished and a rerun resumes.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="PDF files or folders")
    _chunking(p)
    p.add_argument("--password", help="password for encrypted PDFs (the empty one is tried first)")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also drop recorded sources whose files no longer exist",
    )
    p.add_argument(
        "--timeout",
        type=float,
        dest="pdf_timeout_s",
        metavar="SECONDS",
        help="time limit per file for text extraction (default 60)",
    )
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="don't retry with PDFium when pypdf fails or finds no text",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _common(p)

    p = sub.add_parser(
        "search",
        help="find the passages that match a query",
        description="Retrieve passages with file and page. QUERY '-' reads "
        "queries from stdin, one per line.",
    )
    p.add_argument("query", metavar="QUERY", help="the query, or - to read queries from stdin")
    p.add_argument("-k", type=int, help="how many passages (default 5)")
    p.add_argument(
        "--method",
        dest="retrieval",
        choices=("hybrid", "dense", "bm25"),
        help="retrieval method (default hybrid: dense + BM25 fused)",
    )
    p.add_argument("--embedder", help="must match the index's embedder (see `ragchat info`)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    _common(p)

    p = sub.add_parser("list", help="list indexes")
    p.add_argument("--json", action="store_true")
    _common(p, index=False)

    p = sub.add_parser("info", help="show an index: sources, chunks, embedder, disk use")
    p.add_argument("name", nargs="?", metavar="NAME", help="index name or path")
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("remove", help="drop sources from an index")
    p.add_argument("name", metavar="NAME", help="index name or path")
    p.add_argument("paths", nargs="+", metavar="PATH", help="source paths (or unique file names)")
    _common(p, index=False)

    p = sub.add_parser("delete", help="delete an index")
    p.add_argument("name", metavar="NAME", help="index name or path")
    p.add_argument("--yes", "-y", action="store_true", help="don't ask")
    _common(p, index=False)

    p = sub.add_parser(
        "rebuild",
        help="re-chunk and re-embed every source of an index",
        description="Rebuild an index from the page texts it stores, e.g. after "
        "changing embedder or chunk size. The old index stays usable until the "
        "new one is complete.",
    )
    p.add_argument("name", metavar="NAME", help="index name or path")
    _chunking(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    _common(p, index=False)

    _add_answer_commands(sub)
    return parser


def _add_answer_commands(sub: Any) -> None:
    """Commands of the answering side; each registers only if its module is present."""
    try:
        from ragchat import cli_answer
    except ImportError:
        return
    cli_answer.register(sub, _common)


# ---------------------------------------------------------------------------- settings


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    fields = (
        "index_dir",
        "cache_dir",
        "allow_download",
        "debug",
        "k",
        "retrieval",
        "pdf_timeout_s",
        "model",
        "backend",
        "device",
        "max_new_tokens",
        "threads",
    )
    overrides = {f: getattr(args, f, None) for f in fields}
    if getattr(args, "no_fallback", False):
        overrides["fallback_extractor"] = False
    settings = load_settings(overrides, env)
    from ragchat.hub import configure_hub

    configure_hub(settings.allow_download)
    return settings


def index_path(args: argparse.Namespace, settings: Settings, value: str | None = None) -> Path:
    from ragchat.store import resolve_index_path

    return resolve_index_path(
        value or getattr(args, "index", None) or "default", settings.index_dir
    )


# ---------------------------------------------------------------------------- output


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def passage_json(p: Passage) -> dict[str, Any]:
    return {
        "doc": p.doc,
        "path": p.path,
        "page": p.page,
        "page_end": p.page_end,
        "score": round(p.score, 6),
        "text": p.text,
    }


def page_label(p: Passage) -> str:
    return f"p.{p.page}" if p.page == p.page_end else f"p.{p.page}–{p.page_end}"


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
            s: report.count(s) for s in ("indexed", "unchanged", "skipped", "failed", "removed")
        },
    }


def print_report(report: IngestReport, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    counts = report_json(report)["counts"]
    pages = sum(f.pages for f in report.files if f.status == "indexed")
    chunks = sum(f.chunks for f in report.files if f.status == "indexed")
    rate = f", {pages / report.seconds:.0f} pages/s" if report.seconds > 0 and pages >= 20 else ""
    for f in report.files:
        if f.status in ("skipped", "failed", "removed"):
            print(f"  {f.status:8} {f.path}: {f.reason}", file=out)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(
        f"{report.index}: {summary or 'no files'} — {pages} pages, {chunks} chunks "
        f"in {report.seconds:.1f}s{rate}",
        file=out,
    )


def ingest_exit_code(report: IngestReport) -> int:
    if (
        report.count("indexed") == 0
        and report.chunks_before == 0
        and not any(f.status == "unchanged" for f in report.files)
    ):
        return EXIT_NOTHING
    if report.count("skipped") or report.count("failed"):
        return EXIT_PARTIAL
    return EXIT_OK


# ---------------------------------------------------------------------------- commands


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest import ingest

    bars = IngestBars(enabled=not args.quiet)
    try:
        report = ingest(
            args.paths,
            index_path(args, settings),
            settings,
            embedder_spec=args.embedder,
            chunk_tokens=args.chunk_tokens,
            chunk_overlap=args.chunk_overlap,
            password=args.password,
            prune=args.prune,
            progress=bars,
        )
    finally:
        bars.close()
    if args.json:
        _emit_json(report_json(report))
    print_report(report)
    return ingest_exit_code(report)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.retriever import open_retriever

    k = args.k or settings.k
    retriever = open_retriever(index_path(args, settings), settings, args.embedder)
    queries = _stdin_lines() if args.query == "-" else [args.query]
    status = EXIT_OK
    for query in queries:
        try:
            passages = retriever.search(query, k)
        except RagchatError as exc:
            status = EXIT_ERROR
            if args.json:
                _emit_json({"query": query, "error": str(exc)})
            else:
                print(f"error: {exc}", file=sys.stderr)
            continue
        if args.json:
            _emit_json({"query": query, "results": [passage_json(p) for p in passages]})
        else:
            _print_passages(query, passages, multiple=len(queries) > 1)
    retriever.close()
    return status


def _stdin_lines() -> Sequence[str]:
    """Non-blank lines of stdin, lazily, so a pipe can feed queries one at a time."""
    return _LazyLines(sys.stdin)


class _LazyLines(Sequence[str]):
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __iter__(self) -> Any:
        for line in self._stream:
            line = line.strip()
            if line:
                yield line

    def __len__(self) -> int:  # only used to decide headers: more than one
        return 2

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("stream of queries is not indexable")


def _print_passages(query: str, passages: Sequence[Passage], multiple: bool) -> None:
    if multiple:
        print(f"\n=== {query}")
    if not passages:
        print("(no passages: the index is empty)")
    for rank, p in enumerate(passages, 1):
        text = " ".join(p.text.split())
        if len(text) > 400:
            text = text[:400] + "…"
        print(f"{rank}. {p.doc} {page_label(p)}  (score {p.score:.3f})\n   {text}")


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.store import IndexStore, list_indexes

    rows = []
    for path in list_indexes(settings.index_dir):
        try:
            with IndexStore.open(path) as store:
                sources = store.sources()
                rows.append(
                    {
                        "name": path.name,
                        "path": str(path),
                        "embedder": store.config.embedder,
                        "sources": len(sources),
                        "chunks": sum(s.chunks for s in sources),
                        "bytes": store.disk_bytes(),
                    }
                )
        except RagchatError as exc:
            rows.append({"name": path.name, "path": str(path), "error": str(exc)})
    if args.json:
        _emit_json({"index_dir": str(settings.index_dir), "indexes": rows})
        return EXIT_OK
    if not rows:
        print(f"no indexes in {settings.index_dir} — create one with `ragchat ingest FILE.pdf`")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:20} unreadable: {r['error']}")
        else:
            print(
                f"{r['name']:20} {r['sources']:5} files {r['chunks']:8} chunks "
                f"{_human_bytes(r['bytes']):>9}  {r['embedder']}"
            )
    return EXIT_OK


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.store import IndexStore, describe

    with IndexStore.open(index_path(args, settings, args.name)) as store:
        info = describe(store)
    if args.json:
        _emit_json(info)
        return EXIT_OK
    cfg = info["config"]
    print(f"index      {info['name']}  ({info['path']})")
    print(f"embedder   {cfg['embedder']} (dimension {cfg['dim']})")
    print(f"chunking   {cfg['chunk_tokens']} tokens, {cfg['chunk_overlap']} overlap")
    print(
        f"contents   {len(info['sources'])} files, {info['pages']} pages, "
        f"{info['chunks']} chunks, {_human_bytes(info['bytes'])} on disk"
    )
    for warning in info["warnings"]:
        print(f"warning    {warning}")
    for s in info["sources"]:
        print(f"  {s['chunks']:6} chunks {s['pages']:5} pages  {s['path']}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest import remove

    removed = remove(index_path(args, settings, args.name), args.paths)
    for path in removed:
        print(f"removed {path}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.store import delete_index

    path = index_path(args, settings, args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {path} without --yes (stdin is not a terminal)")
        answer = input(f"delete index {path}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("kept")
            return EXIT_OK
    delete_index(path)
    print(f"deleted {path}")
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest import rebuild

    bars = IngestBars(enabled=not args.quiet)
    try:
        report = rebuild(
            index_path(args, settings, args.name),
            settings,
            embedder_spec=args.embedder,
            chunk_tokens=args.chunk_tokens,
            chunk_overlap=args.chunk_overlap,
            progress=bars,
        )
    finally:
        bars.close()
    if args.json:
        _emit_json(report_json(report))
    print_report(report)
    return EXIT_OK if not report.count("failed") else EXIT_PARTIAL


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "list": cmd_list,
    "info": cmd_info,
    "remove": cmd_remove,
    "delete": cmd_delete,
    "rebuild": cmd_rebuild,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RAGCHAT_DEBUG") == "1"
    try:
        settings = settings_from(args)
        command = COMMANDS.get(args.command) or getattr(args, "handler", None)
        if command is None:
            parser.print_help()
            return EXIT_USAGE
        return command(args, settings)
    except RagchatError as exc:
        if debug:
            raise
        print(f"ragchat: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(
            "\nragchat: interrupted — everything committed before this point is kept",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        # `ragchat search ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
