"""Ingest: files → pages → chunks → vectors → the index, one committed file at a time.

Extraction of the next file runs in a background thread (whose work happens in the PDF
worker process) while the current file is embedded, so the two cores are both busy.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ragchat.errors import PdfError, UsageError
from ragchat.index.store import IndexStore, writing
from ragchat.ingest.pdf import OCR_HINT, Passwords
from ragchat.records import Chunk, Document, FileOutcome, IngestReport, Page
from ragchat.retrieval.open import check_compatible, open_or_create

if TYPE_CHECKING:
    from ragchat.config import Settings
    from ragchat.retrieval.embedders import Embedder


# The LM embedder's centring mean is computed from at least this many chunks (or all there
# are on a first ingest smaller than that), and from at most FIT_MAX_CHUNKS.
FIT_MIN_CHUNKS = 512


FIT_MAX_CHUNKS = 4096


@dataclass(frozen=True)
class IngestProgress:
    """A progress event. `stage` is one of: "start" (total = files), "wait" (another
    writer holds the index), "extract" (done/total pages of `path`), "embed" (done/total
    chunks of `path`), "file" (a file finished: `outcome`), "fit" (computing the LM
    embedder's mean)."""

    stage: str
    path: str | None = None
    done: int = 0
    total: int = 0
    outcome: FileOutcome | None = None


ProgressFn = Callable[[IngestProgress], None]


def _no_progress(_: IngestProgress) -> None:
    return None


def find_files(paths: Iterable[Path]) -> tuple[list[Path], list[FileOutcome]]:
    """Expand files and folders (recursively: *.pdf, *.txt, *.md, any case) into files to ingest;
    paths that don't exist come back as failed outcomes."""
    files: list[Path] = []
    missing: list[FileOutcome] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _indexable(p))
        elif path.is_file():
            found = [path]
        else:
            missing.append(FileOutcome(str(path), "failed", "no such file or folder"))
            continue
        for f in found:
            resolved = f.resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(resolved)
    return files, missing


def _indexable(path: Path) -> bool:
    """Whether a file found in a folder is ingested: PDFs and plain text (.txt, .md)."""
    from ragchat.ingest.text import is_text_file

    return path.suffix.lower() == ".pdf" or is_text_file(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ingest(
    paths: Sequence[Path],
    index_path: Path,
    settings: Settings,
    *,
    embedder_spec: str | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    password: Passwords = None,
    prune: bool = False,
    progress: ProgressFn = _no_progress,
) -> IngestReport:
    """Index `paths` (files and folders) into the index at `index_path`, creating it if
    needed. Each file is committed on its own; unchanged files (same sha256) are skipped,
    changed ones re-indexed. Never raises for one bad file: its outcome says why."""
    files, outcomes = find_files(paths)
    if chunk_tokens is not None or chunk_overlap is not None:
        settings = settings.replace(
            chunk_tokens=chunk_tokens or settings.chunk_tokens,
            chunk_overlap=chunk_overlap if chunk_overlap is not None else settings.chunk_overlap,
        )
    from ragchat.index.store import MANIFEST

    if not files and not (index_path / MANIFEST).is_file():
        # Nothing to read (a typo in a path, say): don't leave an empty index behind.
        return IngestReport(index=index_path.name, files=outcomes)
    # The files bar first: opening the index loads the embedder (a second or more).
    progress(IngestProgress("start", total=len(files)))
    store, embedder = open_or_create(index_path, settings, embedder_spec, create=True)
    report = IngestReport(index=store.name, chunks_before=store.chunk_count())
    started = time.perf_counter()
    try:
        check_compatible(
            store, settings, embedder_spec, chunk_tokens, chunk_overlap, embedder.max_tokens
        )
        with writing(store, on_wait=lambda: progress(IngestProgress("wait", str(index_path)))):
            report.files.extend(outcomes)
            report.files.extend(_prune(store) if prune else _missing(store))
            todo = []
            for path in files:
                outcome = _unchanged(store, path)
                if outcome is None:
                    todo.append(path)
                else:
                    report.files.append(outcome)
                    progress(IngestProgress("file", str(path), outcome=outcome))
            for outcome in _index_files(store, embedder, todo, settings, password, progress):
                report.files.append(outcome)
                progress(IngestProgress("file", outcome.path, outcome=outcome))
    finally:
        report.seconds = time.perf_counter() - started
        store.close()
    return report


def _unchanged(store: IndexStore, path: Path) -> FileOutcome | None:
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return FileOutcome(str(path), "failed", f"cannot read: {exc.strerror or exc}")
    known = store.source_by_path(str(path))
    if known is not None and known.sha256 == sha:
        return FileOutcome(
            str(path), "unchanged", "already indexed", known.page_count, known.chunks
        )
    twin = store.source_by_sha(sha)
    if twin is not None and twin.path != str(path):
        return FileOutcome(
            str(path), "unchanged", f"same content as {twin.path}", twin.page_count, twin.chunks
        )
    return None


def _missing(store: IndexStore) -> list[FileOutcome]:
    """Recorded sources whose files are gone from disk (still searchable until pruned)."""
    return [
        FileOutcome(s.path, "missing", "deleted from disk; `--prune` drops it from the index")
        for s in store.sources()
        if not Path(s.path).exists()
    ]


def _prune(store: IndexStore) -> list[FileOutcome]:
    gone = [s.path for s in store.sources() if not Path(s.path).exists()]
    return [FileOutcome(p, "removed", "file no longer exists") for p in store.remove_sources(gone)]


@dataclass
class _Prepared:
    path: Path
    sha256: str
    size: int
    document: Document | None
    chunks: list[Chunk]
    error: PdfError | None
    seconds: float


def _prepare_all(
    files: Sequence[Path],
    embedder: Embedder,
    settings: Settings,
    chunk_tokens: int,
    chunk_overlap: int,
    password: Passwords,
    progress: ProgressFn,
) -> Iterator[_Prepared]:
    """Extract and chunk files one ahead of the consumer, in a background thread."""

    def prepare(path: Path) -> _Prepared:
        from ragchat.ingest.chunking import chunk_pages
        from ragchat.ingest.pdf import extract_document
        from ragchat.ingest.text import extract_text_document, is_text_file

        t0 = time.perf_counter()
        sha = file_sha256(path)
        size = path.stat().st_size
        try:
            if is_text_file(path):
                document = extract_text_document(path)
                progress(
                    IngestProgress("extract", str(path), document.page_count, document.page_count)
                )
            else:
                document = extract_document(
                    path,
                    password=password,
                    timeout_s=settings.pdf_timeout_s,
                    fallback=settings.fallback_extractor,
                    primary=settings.extractor,
                    ocr=settings.ocr,
                    ocr_language=settings.ocr_language,
                    on_page=lambda done, total: progress(
                        IngestProgress("extract", str(path), done, total)
                    ),
                )
        except PdfError as exc:
            return _Prepared(path, sha, size, None, [], exc, time.perf_counter() - t0)
        chunks = chunk_pages(document.pages, embedder.token_spans, chunk_tokens, chunk_overlap)
        return _Prepared(path, sha, size, document, chunks, None, time.perf_counter() - t0)

    if not files:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragchat-extract") as pool:
        pending: Future[_Prepared] = pool.submit(prepare, files[0])
        try:
            for nxt in [*files[1:], None]:
                current = pending.result()
                if nxt is not None:
                    pending = pool.submit(prepare, nxt)
                yield current
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _index_files(
    store: IndexStore,
    embedder: Embedder,
    files: Sequence[Path],
    settings: Settings,
    password: Passwords,
    progress: ProgressFn,
) -> Iterator[FileOutcome]:
    cfg = store.config
    prepared = _prepare_all(
        files, embedder, settings, cfg.chunk_tokens, cfg.chunk_overlap, password, progress
    )
    if embedder.needs_fit:
        prepared = _fit_first(store, embedder, prepared, progress)
    for n, item in enumerate(prepared):
        if n == 0:  # as many more files like this one: MiniLM then skips its numpy path
            embedder.expect(len(item.chunks) * len(files))
        yield _commit(store, embedder, item, settings, progress)


def _fit_first(
    store: IndexStore, embedder: Embedder, prepared: Iterator[_Prepared], progress: ProgressFn
) -> Iterator[_Prepared]:
    """Buffer prepared files until there are enough chunks to compute the LM embedder's
    centring mean, fit and store it, then hand the files on."""
    buffered: list[_Prepared] = []
    total = 0
    for item in prepared:
        buffered.append(item)
        total += len(item.chunks)
        if total >= FIT_MIN_CHUNKS:
            break
    texts = [c.text for item in buffered for c in item.chunks][:FIT_MAX_CHUNKS]
    if texts:
        progress(IngestProgress("fit", done=0, total=len(texts)))
        embedder.fit(texts)
        store.set_embedder_state(embedder.state())
    yield from buffered
    yield from prepared


def _commit(
    store: IndexStore,
    embedder: Embedder,
    item: _Prepared,
    settings: Settings,
    progress: ProgressFn,
) -> FileOutcome:
    path = str(item.path)
    if item.error is not None:
        return FileOutcome(path, item.error.status, str(item.error), seconds=item.seconds)
    document = item.document
    assert document is not None  # set whenever error is None
    if not item.chunks:
        return FileOutcome(
            path,
            "skipped",
            OCR_HINT,
            document.page_count,
            seconds=item.seconds,
        )
    if embedder.needs_fit:
        # Only reachable when the index got its mean from nothing (an empty first batch).
        embedder.fit([c.text for c in item.chunks])
        store.set_embedder_state(embedder.state())
    t0 = time.perf_counter()
    n = len(item.chunks)
    vectors = embedder.embed(
        [c.text for c in item.chunks],
        kind="passage",
        batch_size=settings.embed_batch_size,
        on_batch=lambda done: progress(IngestProgress("embed", path, done, n)),
    )
    store.add_source(
        path=path,
        sha256=item.sha256,
        size=item.size,
        page_count=document.page_count,
        extractor=document.extractor,
        pages=document.pages,
        chunks=item.chunks,
        vectors=vectors,
    )
    reason = "; ".join(document.warnings) or None
    return FileOutcome(
        path,
        "indexed",
        reason,
        document.page_count,
        n,
        document.extractor,
        item.seconds + time.perf_counter() - t0,
    )


def remove(index_path: Path, paths: Sequence[str]) -> list[str]:
    """Drop sources (by path, or by file name when that is unique) from an index."""
    store = IndexStore.open(index_path)
    with writing(store):
        sources = store.sources()
        targets = []
        for raw in paths:
            full = str(Path(raw).expanduser().resolve())
            exact = [s.path for s in sources if s.path == full]
            named = [s.path for s in sources if s.name == raw]
            if exact:
                targets.extend(exact)
            elif len(named) == 1:
                targets.extend(named)
            elif len(named) > 1:
                raise UsageError(
                    f"{raw!r} matches {len(named)} sources in {store.name}; give the full path"
                )
            else:
                raise UsageError(
                    f"{raw!r} is not a source of index {store.name} "
                    f"(see `ragchat info {store.name}`)"
                )
        removed = store.remove_sources(targets)
    store.close()
    return removed


def rebuild(
    index_path: Path,
    settings: Settings,
    *,
    embedder_spec: str | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    progress: ProgressFn = _no_progress,
) -> IngestReport:
    """Re-chunk and re-embed every recorded source (from the page texts stored in the index,
    so moved or deleted files survive) into a fresh index, then swap it in atomically."""
    old = IndexStore.open(index_path)
    old.acquire_lock(wait=True, on_wait=lambda: progress(IngestProgress("wait", str(index_path))))
    settings = settings.replace(
        embedder=embedder_spec or old.config.embedder,
        chunk_tokens=chunk_tokens or old.config.chunk_tokens,
        chunk_overlap=chunk_overlap if chunk_overlap is not None else old.config.chunk_overlap,
    )
    tmp_path = index_path.with_name(f".{index_path.name}.rebuild")
    if tmp_path.exists():
        shutil.rmtree(tmp_path)
    report = IngestReport(index=old.name, chunks_before=old.chunk_count())
    started = time.perf_counter()
    try:
        new, embedder = open_or_create(tmp_path, settings, settings.embedder, create=True)
        sources = old.sources()
        progress(IngestProgress("start", total=len(sources)))

        def from_store() -> Iterator[_Prepared]:
            from ragchat.ingest.chunking import chunk_pages

            for src in sources:
                pages: list[Page] = old.pages(src.id)
                document = Document(Path(src.path), tuple(pages), src.page_count, src.extractor)
                chunks = chunk_pages(
                    pages, embedder.token_spans, new.config.chunk_tokens, new.config.chunk_overlap
                )
                yield _Prepared(Path(src.path), src.sha256, src.size, document, chunks, None, 0.0)

        embedder.expect(report.chunks_before)
        with writing(new):
            prepared: Iterator[_Prepared] = from_store()
            if embedder.needs_fit:
                prepared = _fit_first(new, embedder, prepared, progress)
            for item in prepared:
                outcome = _commit(new, embedder, item, settings, progress)
                report.files.append(outcome)
                progress(IngestProgress("file", outcome.path, outcome=outcome))
            # The pages are the same, so a script's section summaries still hold.
            new_ids = {src.path: src.id for src in new.sources()}
            for kept in old.summaries():
                if kept.path in new_ids:
                    new.add_summary(
                        new_ids[kept.path], kept.page_start, kept.page_end, kept.model, kept.text
                    )
        new.close()
        # Swap: the old folder moves aside only once the new one is complete.
        aside = index_path.with_name(f".{index_path.name}.old")
        if aside.exists():
            shutil.rmtree(aside)
        index_path.rename(aside)
        tmp_path.rename(index_path)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        old.close()
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)
        report.seconds = time.perf_counter() - started
    return report
