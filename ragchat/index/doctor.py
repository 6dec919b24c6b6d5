"""`ragchat doctor`: check an index folder file by file, and copy whatever of a damaged
database is still readable into a new index.

The database is the only file that cannot be regenerated; everything else (FAISS, BM25,
their stamps, the manifest, the lock) is rebuilt from it. So the check is SQLite's own
`PRAGMA integrity_check`, then agreement between sources, pages, chunks and vectors, then
the derived files. Recovery reads row by row (a scan until the first unreadable page, then
one lookup per rowid past it), so one damaged page loses only the rows on it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragchat.errors import IndexDamagedError, IndexNotFoundError, RagchatError, UsageError
from ragchat.index.store import (
    DATABASE,
    MANIFEST,
    IndexConfig,
    IndexStore,
    is_index,
)


@dataclass(frozen=True)
class Finding:
    """One checked thing: `ok`, or what is wrong with it."""

    what: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    """What `ragchat doctor` found; `healthy` when every finding is ok."""

    index: str
    path: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, what: str, problem: str | None, fine: str = "ok") -> None:
        self.findings.append(Finding(what, problem is None, problem or fine))


def _readonly(file: Path) -> sqlite3.Connection:
    """A connection that cannot change the file (doctor only looks)."""
    db = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=30)
    db.execute("PRAGMA trusted_schema = OFF")
    return db


def check_index(path: Path) -> DoctorReport:
    """Check the index at `path` (see module docstring); repairs nothing except that
    opening rewrites a damaged manifest, as every command does."""
    if not is_index(path):
        raise IndexNotFoundError(f"no index at {path} (see `ragchat list`)")
    report = DoctorReport(path.name, str(path))
    file = path / DATABASE
    try:
        store = IndexStore.open(path)
    except IndexDamagedError as exc:
        report.add(DATABASE, str(exc))
        return report
    with store:
        try:
            db = _readonly(file)
            try:
                rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)").fetchall()]
            finally:
                db.close()
            report.add(f"{DATABASE} integrity", None if rows == ["ok"] else "; ".join(rows))
        except sqlite3.Error as exc:
            report.add(f"{DATABASE} integrity", f"damaged ({exc})")
        try:
            _check_agreement(store, report)
        except IndexDamagedError as exc:
            report.add(f"{DATABASE} contents", str(exc))
            return report
        for name, problem in store.derived_problems().items():
            report.add(name, problem, "ok (or stale: rebuilt on next use)")
    return report


def _check_agreement(store: IndexStore, report: DoctorReport) -> None:
    """Sources, pages, chunks and vectors agree: no orphans, every vector the right size."""
    db = store._db
    one = lambda sql: int(db.execute(sql).fetchone()[0])  # noqa: E731
    report.counts = {
        "sources": one("SELECT COUNT(*) FROM sources"),
        "pages": one("SELECT COUNT(*) FROM pages"),
        "chunks": one("SELECT COUNT(*) FROM chunks"),
    }
    orphans = one("SELECT COUNT(*) FROM chunks WHERE source_id NOT IN (SELECT id FROM sources)")
    orphan_pages = one("SELECT COUNT(*) FROM pages WHERE source_id NOT IN (SELECT id FROM sources)")
    bad = one(f"SELECT COUNT(*) FROM chunks WHERE length(vector) != {4 * store.config.dim}")
    empty = one("SELECT COUNT(*) FROM sources WHERE id NOT IN (SELECT source_id FROM chunks)")
    report.counts["vectors"] = report.counts["chunks"] - bad
    problems = []
    if orphans or orphan_pages:
        problems.append(f"{orphans} chunks and {orphan_pages} pages without a source")
    if bad:
        problems.append(f"{bad} chunks whose vector is not {store.config.dim} floats")
    if empty:
        problems.append(f"{empty} sources without chunks")
    c = report.counts
    report.add(
        "sources, chunks, vectors",
        "; ".join(problems) or None,
        f"agree: {c['sources']} sources, {c['pages']} pages, {c['chunks']} chunks, "
        f"{c['vectors']} vectors",
    )


@dataclass
class RecoverReport:
    """Rows read from the damaged index and copied into the new one, per table."""

    source: str
    dest: str
    copied: dict[str, int] = field(default_factory=dict)
    dropped_sources: int = 0  # sources none of whose chunks could be read
    expected_chunks: int | None = None  # from the old manifest, when it was readable


def _rows(db: sqlite3.Connection, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
    """Every readable row of `table` as (rowid, *columns): a scan up to the first
    unreadable page, then a lookup per rowid past it."""
    last = 0
    try:
        for row in db.execute(f"SELECT rowid, {columns} FROM {table} ORDER BY rowid"):
            last = row[0]
            yield row
        return
    except sqlite3.Error:
        pass
    try:
        top = int(db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    except sqlite3.Error:
        top = 0
    # The largest rowid may be on the damaged page itself: keep probing past the last
    # one seen until a long run finds nothing.
    misses, rowid = 0, last
    while rowid < top or misses < 2000:
        rowid += 1
        try:
            row = db.execute(
                f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?", (rowid,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        if row is None:
            misses += 1
            continue
        misses = 0
        yield row


def recover_index(path: Path, dest: Path) -> RecoverReport:
    """Copy every readable source, page, chunk (with its vector) and embedder state of the
    index at `path` into a new index at `dest`, whose FAISS and BM25 files are built
    fresh. The damaged index is only read."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} already exists: give a new folder or index name to recover into")
    file = path / DATABASE
    if not file.is_file():
        raise IndexDamagedError(f"nothing to recover: {file} is missing")
    try:
        db = _readonly(file)
        config = _recover_config(db, path)
    except sqlite3.Error as exc:
        raise IndexDamagedError(
            f"{file} cannot be read at all ({exc}): nothing to recover; ingest the files again"
        ) from exc
    report = RecoverReport(str(path), str(dest))
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        report.expected_chunks = int(manifest["chunks"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    store = IndexStore.create(dest, config)
    try:
        new = store._db
        with new:
            sources = set()
            for row in _rows(
                db,
                "sources",
                "id, path, name, sha256, size, page_count, pages_with_text, extractor, indexed_at",
            ):
                new.execute("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row[1:])
                sources.add(row[1])
            report.copied["sources"] = len(sources)
            pages = 0
            for row in _rows(db, "pages", "source_id, number, text"):
                if row[1] in sources:
                    new.execute("INSERT OR IGNORE INTO pages VALUES (?, ?, ?)", row[1:])
                    pages += 1
            report.copied["pages"] = pages
            chunks = 0
            size = 4 * config.dim
            for row in _rows(
                db,
                "chunks",
                "id, source_id, page_start, page_end, char_start, char_end, n_tokens, text, vector",
            ):
                if row[2] in sources and isinstance(row[9], bytes) and len(row[9]) == size:
                    new.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row[1:])
                    chunks += 1
            report.copied["chunks"] = chunks
            states = 0
            for row in _rows(db, "embedder_state", "name, value"):
                new.execute("INSERT OR REPLACE INTO embedder_state VALUES (?, ?)", row[1:])
                states += 1
            report.copied["embedder_state"] = states
            # Sources none of whose chunks survived cannot be searched: drop them so a
            # later ingest of the same file indexes it again.
            gone = new.execute(
                "DELETE FROM sources WHERE id NOT IN (SELECT source_id FROM chunks)"
            ).rowcount
            report.copied["sources"] -= gone
            report.dropped_sources = gone
            store._bump_generation()
        store.flush()
    except BaseException:
        store.close()
        raise
    finally:
        db.close()
    store.close()
    return report


def _recover_config(db: sqlite3.Connection, path: Path) -> IndexConfig:
    """The index settings from the damaged database, else from its manifest."""
    for read in (
        lambda: db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0],
        lambda: json.dumps(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["config"]),
    ):
        try:
            return IndexConfig(**json.loads(read()))
        except (sqlite3.Error, OSError, ValueError, KeyError, TypeError):
            continue
    raise RagchatError(
        f"cannot recover {path}: neither its database nor its manifest says which embedder "
        "and chunking it used; ingest the files again"
    )


def report_json(report: DoctorReport | RecoverReport) -> dict[str, Any]:
    data = asdict(report)
    if isinstance(report, DoctorReport):
        data["healthy"] = report.healthy
    return data
