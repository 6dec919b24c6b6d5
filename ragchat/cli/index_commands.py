"""The index commands: ingest, search, list, info, remove, delete, rebuild, doctor."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragchat.cli.common import (
    EXIT_ERROR,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_PARTIAL,
    add_chunking_options,
    add_common_options,
    add_retrieval_options,
    check_line,
    emit_json,
    human_bytes,
    index_path,
    passwords_from,
    silence_library_bars,
    stdin_lines,
)
from ragchat.cli.render import (
    IngestBars,
    passage_json,
    plural,
    print_passages,
    print_report,
    report_json,
)
from ragchat.config import Settings
from ragchat.errors import RagchatError, UsageError

if TYPE_CHECKING:
    from ragchat.records import IngestReport


def register(sub: Any) -> None:
    """Add the index commands to the `ragchat` subparsers."""
    p = sub.add_parser(
        "ingest",
        help="add PDFs and text files (files or folders) to an index",
        description="Extract, chunk and embed PDFs and plain-text files (.txt, .md) into "
        "an index. Files already "
        "indexed with the same content are skipped; changed files are re-indexed. "
        "Each file is committed on its own, so an interrupted ingest keeps what "
        "it finished and a rerun resumes.",
    )
    p.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="PDF, .txt, .md files or folders"
    )
    add_chunking_options(p)
    p.add_argument(
        "--password",
        action="append",
        metavar="PASSWORD",
        help="a password for encrypted PDFs; repeat for several, each is tried in turn after "
        "the empty one (visible in `ps`: prefer --password-file or RAGCHAT_PASSWORD)",
    )
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="a file of passwords, one per line, tried in turn (RAGCHAT_PASSWORD_FILE)",
    )
    p.add_argument(
        "--ocr",
        action="store_true",
        default=None,
        help="read pages without a text layer (scans) with Tesseract OCR (RAGCHAT_OCR=1)",
    )
    p.add_argument(
        "--ocr-language",
        metavar="LANG",
        help="Tesseract language(s) for --ocr, e.g. eng+deu (default eng)",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="drop recorded sources whose files were deleted from disk (without it they "
        "are reported as missing and stay searchable)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        dest="pdf_timeout_s",
        metavar="SECONDS",
        help="time limit per file for text extraction (default 60)",
    )
    p.add_argument(
        "--extractor",
        choices=("pypdf", "pdfium"),
        help="PDF text extractor to try first; the other is the fallback (default pypdf)",
    )
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="don't retry with PDFium when pypdf fails or finds no text",
    )
    p.add_argument(
        "--no-summaries",
        action="store_true",
        help="don't have the model summarise each section of a play or screenplay after "
        "ingesting it (minutes per script, once; story questions are answered from these "
        "summaries; RAGCHAT_SUMMARISE_SCRIPTS=0)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    add_common_options(p)
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser(
        "search",
        help="find the passages that match a query",
        description="Retrieve passages with file and page. QUERY '-' reads "
        "queries from stdin, one per line.",
    )
    p.add_argument("query", metavar="QUERY", help="the query, or - to read queries from stdin")
    add_retrieval_options(p, k_help="how many passages (default 5)")
    p.add_argument("--embedder", help="must match the index's embedder (see `ragchat info`)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    add_common_options(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("list", help="list indexes")
    p.add_argument("--json", action="store_true")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("info", help="show an index: sources, chunks, embedder, disk use")
    p.add_argument("name", nargs="?", metavar="NAME", help="index name or path")
    p.add_argument("--json", action="store_true")
    add_common_options(p)
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("remove", help="drop sources from an index")
    p.add_argument("name", metavar="NAME", help="index name or path")
    p.add_argument("paths", nargs="+", metavar="PATH", help="source paths (or unique file names)")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_remove)

    p = sub.add_parser("delete", help="delete an index")
    p.add_argument("name", metavar="NAME", help="index name or path")
    p.add_argument("--yes", "-y", action="store_true", help="don't ask")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser(
        "rebuild",
        help="re-chunk and re-embed every source of an index",
        description="Rebuild an index from the page texts it stores, e.g. after "
        "changing embedder or chunk size. The old index stays usable until the "
        "new one is complete.",
    )
    p.add_argument("name", metavar="NAME", help="index name or path")
    add_chunking_options(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_rebuild)

    p = sub.add_parser(
        "doctor",
        help="check an index for damage; copy what is readable into a new index",
        description="Run SQLite's integrity check on an index, check that its sources, "
        "chunks and vectors agree, and check the files derived from the database (which "
        "any command rebuilds when damaged). With --recover, copy every readable source, "
        "page and chunk into a new index. Exit code 0 when healthy, 3 when not.",
    )
    p.add_argument("name", metavar="NAME", help="index name or path")
    p.add_argument(
        "--recover",
        metavar="NEW_INDEX",
        help="copy what is readable into this new index (name or path)",
    )
    p.add_argument("--json", action="store_true")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_doctor)


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


def _with_bars(args: argparse.Namespace, run: Callable[[IngestBars], IngestReport]) -> IngestReport:
    """Run an ingest-like job with progress bars (unless --quiet), then print its report
    (and the --json one)."""
    if args.quiet:
        silence_library_bars()
    bars = IngestBars(enabled=not args.quiet)
    try:
        report = run(bars)
    finally:
        bars.close()
    if args.json:
        emit_json(report_json(report))
    print_report(report)
    return report


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest.pipeline import ingest

    report = _with_bars(
        args,
        lambda bars: ingest(
            args.paths,
            index_path(args, settings),
            settings,
            embedder_spec=args.embedder,
            chunk_tokens=args.chunk_tokens,
            chunk_overlap=args.chunk_overlap,
            password=passwords_from(args, settings),
            prune=args.prune,
            progress=bars,
        ),
    )
    status = ingest_exit_code(report)
    if settings.summarise_scripts:
        summarise_scripts(index_path(args, settings), settings, quiet=args.quiet)
    return status


def summarise_scripts(path: Path, settings: Settings, *, quiet: bool = False) -> int:
    """Have the model summarise the sections of the index's scripts that have no summary
    yet (answer/summaries.py), with a progress bar; returns how many it made. Ctrl-C stops
    it, keeping every summary made: the next ingest goes on from there."""
    from ragchat.answer.summaries import pending, summarise
    from ragchat.cli.answer_commands import load_model
    from ragchat.index.store import IndexStore, writing

    try:
        store = IndexStore.open(path)
    except RagchatError:
        return 0  # nothing was indexed (the report said why)
    with store:
        work = pending(store)
        if not work:
            return 0
        total = sum(len(item.sections) for item in work)
        names = ", ".join(item.source.name for item in work)
        print(
            f"summarising {plural(total, 'section')} of {names} with {settings.model}, once "
            "(story questions are answered from them; Ctrl-C stops and keeps what is done, "
            "--no-summaries skips this)",
            file=sys.stderr,
        )
        try:
            generator = load_model(settings, quiet=quiet)
        except RagchatError as exc:
            print(f"note: no summaries made, the model did not load: {exc}", file=sys.stderr)
            return 0
        bar: Any = None
        if not quiet:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="section", desc="summarising", file=sys.stderr)
        made = 0
        try:
            with writing(store):
                made = summarise(
                    store,
                    work,
                    generator,
                    on_section=lambda item, section: bar.update(1) if bar is not None else None,
                )
        except KeyboardInterrupt:
            made = total - sum(len(item.sections) for item in pending(store))
            print(
                f"\nstopped: {made} of {total} sections summarised and kept; `ragchat ingest` "
                "again goes on from there",
                file=sys.stderr,
            )
            raise
        finally:
            if bar is not None:
                bar.close()
    return made


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.retrieval.retriever import open_retriever

    k = args.k or settings.k
    retriever = open_retriever(index_path(args, settings), settings, args.embedder)
    queries = stdin_lines() if args.query == "-" else [args.query]
    status = EXIT_OK
    for query in queries:
        try:
            check_line(query)
            passages = retriever.search(query, k)
        except RagchatError as exc:
            status = EXIT_ERROR
            if args.json:
                emit_json({"query": query, "error": str(exc)})
            else:
                print(f"error: {exc}", file=sys.stderr)
            continue
        if args.json:
            emit_json({"query": query, "results": [passage_json(p) for p in passages]})
        else:
            print_passages(query, passages, multiple=len(queries) > 1)
    retriever.close()
    return status


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.index.store import IndexStore, list_indexes

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
        emit_json({"index_dir": str(settings.index_dir), "indexes": rows})
        return EXIT_OK
    if not rows:
        print(f"no indexes in {settings.index_dir} — create one with `ragchat ingest FILE.pdf`")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:20} unreadable: {r['error']}")
        else:
            print(
                f"{r['name']:20} {plural(r['sources'], 'file'):>11} "
                f"{plural(r['chunks'], 'chunk'):>14} "
                f"{human_bytes(r['bytes']):>9}  {r['embedder']}"
            )
    return EXIT_OK


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.index.store import IndexStore, describe

    with IndexStore.open(index_path(args, settings, args.name)) as store:
        info = describe(store)
    if args.json:
        emit_json(info)
        return EXIT_OK
    cfg = info["config"]
    print(f"index      {info['name']}  ({info['path']})")
    print(f"embedder   {cfg['embedder']} (dimension {cfg['dim']})")
    print(f"chunking   {cfg['chunk_tokens']} tokens, {cfg['chunk_overlap']} overlap")
    print(
        f"contents   {plural(len(info['sources']), 'file')}, {plural(info['pages'], 'page')}, "
        f"{plural(info['chunks'], 'chunk')}, {human_bytes(info['bytes'])} on disk"
    )
    if info["summaries"]:
        n = info["summaries"]
        print(f"story map  {n} summar{'y' if n == 1 else 'ies'} of script sections")
    for warning in info["warnings"]:
        print(f"warning    {warning}")
    for s in info["sources"]:
        print(f"  {s['chunks']:6} chunks {s['pages']:5} pages  {s['path']}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest.pipeline import remove

    removed = remove(index_path(args, settings, args.name), args.paths)
    for path in removed:
        print(f"removed {path}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.index.store import delete_index

    path = index_path(args, settings, args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {path} without --yes (stdin is not a terminal)")
        answer = input(f"delete index {path}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("kept")
            return EXIT_OK
    left = delete_index(path)
    if left:
        print(
            f"deleted the index files in {path}; kept the folder and the {len(left)} "
            f"entries ragchat did not make: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
        )
    else:
        print(f"deleted {path}")
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.ingest.pipeline import rebuild

    report = _with_bars(
        args,
        lambda bars: rebuild(
            index_path(args, settings, args.name),
            settings,
            embedder_spec=args.embedder,
            chunk_tokens=args.chunk_tokens,
            chunk_overlap=args.chunk_overlap,
            progress=bars,
        ),
    )
    return EXIT_OK if not report.count("failed") else EXIT_PARTIAL


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.index.doctor import check_index, recover_index, report_json

    path = index_path(args, settings, args.name)
    report = check_index(path)
    if args.json and not args.recover:
        emit_json(report_json(report))
    elif not args.json:
        print(f"index {report.index} ({report.path})")
        for f in report.findings:
            print(f"  {'ok ' if f.ok else 'BAD'}  {f.what}: {f.detail}")
        print("healthy" if report.healthy else "damaged: see above")
    if not args.recover:
        return EXIT_OK if report.healthy else EXIT_PARTIAL
    dest = index_path(args, settings, args.recover)
    recovered = recover_index(path, dest)
    if args.json:
        emit_json({"check": report_json(report), "recover": report_json(recovered)})
        return EXIT_OK
    c = recovered.copied
    expected = f" of {recovered.expected_chunks}" if recovered.expected_chunks is not None else ""
    print(
        f"recovered into {dest}: {c['sources']} sources, {c['pages']} pages, "
        f"{c['chunks']}{expected} chunks"
        + (
            f"; {recovered.dropped_sources} sources had no readable chunks (ingest them again)"
            if recovered.dropped_sources
            else ""
        )
    )
    return EXIT_OK
