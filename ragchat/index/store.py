"""The on-disk index: chunk records, vectors and page texts in SQLite, a FAISS index and a
BM25 index derived from them, and a JSON manifest.

Layout of `indexes/NAME/`:

    manifest.json    embedder id and dimension, chunking settings, format version, sources
    chunks.sqlite    sources, pages, chunks (text + float32 vector), embedder state,
                     summaries of a script's sections (answer/summaries.py)
    vectors.faiss    IndexIDMap2(IndexFlatIP) over the normalised vectors, ids = chunk ids
    lexical/         BM25 over the chunk texts
    .lock            held (flock) by the one process writing
    .ragchat-index   marker: ragchat made this folder (delete and writers check it)

SQLite is the source of truth and every commit is one SQLite transaction, so a crash,
kill -9 or Ctrl-C keeps everything committed before it and never leaves half a file in.
The FAISS and BM25 files are caches stamped with the generation they were built from;
a reader that finds them older than the database rebuilds them from SQLite (seconds),
so they may be written lazily (at the end of an ingest, or every few files). A damaged
derived file (or manifest, stamp, lock) is detected on opening and rebuilt from SQLite with
one warning on the "ragchat" logger; a damaged database is an IndexDamagedError that says
to run `ragchat doctor` (docs/robustness.md has every case).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragchat import __version__
from ragchat.errors import (
    IndexBusyError,
    IndexDamagedError,
    IndexMismatchError,
    IndexNotFoundError,
    RagchatError,
    UsageError,
)
from ragchat.records import Chunk, Page, Passage

if TYPE_CHECKING:
    import faiss

    from ragchat.index.lexical import LexicalIndex


FORMAT_VERSION = 1


MANIFEST = "manifest.json"


DATABASE = "chunks.sqlite"


FAISS_FILE = "vectors.faiss"


LEXICAL_DIR = "lexical"


LOCK_FILE = ".lock"


MARKER = ".ragchat-index"


# Everything ragchat writes into an index folder; `delete` removes these and nothing else.
_OWN_FILES = (
    MANIFEST,
    DATABASE,
    DATABASE + "-wal",
    DATABASE + "-shm",
    DATABASE + "-journal",
    FAISS_FILE,
    FAISS_FILE + ".generation",
    LEXICAL_DIR,
    LEXICAL_DIR + ".generation",
    LOCK_FILE,
    MARKER,
)


log = logging.getLogger("ragchat")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    page_count INTEGER NOT NULL,
    pages_with_text INTEGER NOT NULL,
    extractor TEXT NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_sha ON sources (sha256);
CREATE TABLE IF NOT EXISTS pages (
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (source_id, number)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source_id);
CREATE TABLE IF NOT EXISTS embedder_state (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS summaries (
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (source_id, page_start)
);
"""


@dataclass(frozen=True)
class IndexConfig:
    """What an index was built with; a mismatch means `ragchat rebuild`."""

    embedder: str
    dim: int
    chunk_tokens: int
    chunk_overlap: int
    format_version: int = FORMAT_VERSION
    # what computed the vectors (torch | onnx | onnx-int8); manifests from before it was
    # recorded were all made by torch. See retrieval/onnxembed.vector_family.
    embedder_runtime: str = "torch"


@dataclass(frozen=True)
class Summary:
    """A model's summary of pages page_start..page_end of a document (a script's section)."""

    source_id: int
    doc: str  # file name
    path: str
    page_start: int
    page_end: int
    model: str
    text: str


@dataclass(frozen=True)
class SourceRecord:
    """One indexed file."""

    id: int
    path: str
    name: str
    sha256: str
    size: int
    page_count: int
    pages_with_text: int
    extractor: str
    indexed_at: float
    chunks: int


def resolve_index_path(value: str, index_dir: Path) -> Path:
    """`--index` value → folder: with '/' or starting with '.' or '~' it is a path, else a
    name under `index_dir`."""
    if not value:
        raise UsageError("an index name cannot be empty")
    if "/" in value or value.startswith((".", "~")):
        return Path(value).expanduser().resolve()
    if any(c in value for c in '\\:*?"<>|') or value.strip() != value:
        raise UsageError(f"{value!r} is not a valid index name (use letters, digits, - and _)")
    return index_dir / value


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class IndexStore:
    """An index folder. Readers may open it any time; writers hold `writing()`."""

    # chunks from which the FAISS cache is an IVF index instead of flat (tests lower it)
    ivf_threshold = None  # None = IVF_THRESHOLD

    def __init__(self, path: Path, db: sqlite3.Connection, config: IndexConfig) -> None:
        self.path = path
        self.name = path.name
        self._db = db
        self.config = config
        self._faiss: faiss.Index | None = None
        self._faiss_generation = -1
        self._lexical: LexicalIndex | None = None
        self._lexical_generation = -1
        self._source_table = np.empty((0, 2), np.int64)  # chunk id, source id
        self._sources_generation = -1
        self._lock_fh: Any = None
        self._db_id = _file_id(path / DATABASE)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: Path) -> IndexStore:
        """Open an existing index; IndexNotFoundError if there is none at `path`,
        IndexDamagedError if its database is damaged, IndexMismatchError if a newer ragchat
        made it. A missing or damaged manifest is rewritten from the database."""
        if not is_index(path) or not _started(path):
            # (a marker alone: an ingest is creating the index, or died doing so)
            raise IndexNotFoundError(
                f"no index at {path}. Create one with `ragchat ingest FILE.pdf --index "
                f"{path.name}`, or see `ragchat list`."
            )
        db = _open_database(path)
        try:
            config = _database_config(db, path)
            manifest, problem = _read_manifest(path)
            _refuse_newer(path, manifest)
            store = cls(path, db, config)
            if manifest is not None and problem is None:
                try:
                    if IndexConfig(**manifest["config"]) != config:
                        problem = "its settings differ from the database's"
                except (KeyError, TypeError) as exc:
                    problem = f"no valid settings ({exc})"
            if manifest is not None and problem is None:
                problem = store._manifest_drift(manifest)
            if problem is not None:
                store._persist(MANIFEST, problem, store.write_manifest)
            if not (path / MARKER).is_file():
                # An index from before the marker (or a damaged one): it has just proved to
                # be an index (a database with ragchat's settings), so mark it.
                store._persist(MARKER, None, lambda: _write_marker(path))
        except BaseException:
            db.close()
            raise
        return store

    def _manifest_drift(self, manifest: dict[str, Any]) -> str | None:
        """Why a readable manifest disagrees with the database (it may lag behind it: the
        manifest is written lazily; it may not be ahead of it or miscount it)."""
        generation = manifest.get("generation")
        if not isinstance(generation, int) or generation > self.generation:
            return "out of step with the database (generation)"
        if generation == self.generation and manifest.get("chunks") != self.chunk_count():
            return "out of step with the database (chunk count)"
        return None

    @classmethod
    def create(cls, path: Path, config: IndexConfig) -> IndexStore:
        """Create an empty index at `path` (which must not hold one, and must be new, empty
        or a folder ragchat made)."""
        _refuse_foreign(path)
        path.mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST).exists():
            raise UsageError(f"an index already exists at {path}")
        _write_marker(path)
        db = _connect(path / DATABASE)
        with db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('config', ?)", (json.dumps(asdict(config)),)
            )
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('made_by', ?)", (__version__,))
        store = cls(path, db, config)
        store.write_manifest()
        return store

    @classmethod
    def create_or_open(cls, path: Path, config: IndexConfig) -> tuple[IndexStore, bool]:
        """Create the index unless another process has just done so (creation is
        serialised on the lock file); returns the store and whether it was created here."""
        _refuse_foreign(path)
        path.mkdir(parents=True, exist_ok=True)
        with _open_lock_file(path) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if is_index(path) and _started(path):
                    return cls.open(path), False
                return cls.create(path, config), True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _persist(self, name: str, problem: str | None, write: Callable[[], None]) -> None:
        """Write a file the database regenerates (a derived index, the manifest, the
        marker) unless another process is writing; when `problem` says the one on disk was
        damaged (not merely stale), say so once on the "ragchat" logger."""
        with self._persisting() as allowed:
            if allowed:
                try:
                    write()
                except OSError as exc:
                    log.warning(
                        "%s of index %s could not be written (%s); using it from memory",
                        name,
                        self.name,
                        exc.strerror or exc,
                    )
        if problem is not None:
            log.warning(
                "%s of index %s was %s: rebuilt from %s", name, self.name, problem, DATABASE
            )

    def close(self) -> None:
        self.release_lock()
        self._db.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- locking

    def acquire_lock(self, wait: bool = True, on_wait: Any = None) -> None:
        """Take the writer lock; with `wait` block until the other writer is done
        (calling `on_wait()` once first), else raise IndexBusyError. If the folder was
        swapped while waiting (`rebuild` finished), reopen the new one and lock that."""
        if self._lock_fh is not None:
            return
        while True:
            fh = _open_lock_file(self.path, self.name)
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    fh.close()
                    raise IndexBusyError(
                        f"another ragchat process is writing to index {self.name}; "
                        "wait for it to finish and try again"
                    ) from None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                fcntl.flock(fh, fcntl.LOCK_EX)
            if self._still_here(fh):
                self._lock_fh = fh
                return
            fh.close()
            self._reopen()

    def _still_here(self, fh: Any) -> bool:
        """Whether the lock file `fh` and this store's database are still the ones at
        self.path (`rebuild` swaps in a new folder when it finishes)."""
        return _same_file(fh, self.path / LOCK_FILE) and self._db_id == _file_id(
            self.path / DATABASE
        )

    def _reopen(self) -> None:
        """Point this store at the index now at self.path (rebuild swapped the folder)."""
        self._db.close()
        self._db = _open_database(self.path)
        self._db_id = _file_id(self.path / DATABASE)
        config = _database_config(self._db, self.path)
        if (config.embedder, config.dim) != (self.config.embedder, self.config.dim):
            raise IndexMismatchError(
                f"index {self.name} was rebuilt with embedder {config.embedder!r} while this "
                "command waited for it; run the command again"
            )
        self.config = config
        self._faiss, self._faiss_generation = None, -1
        self._lexical, self._lexical_generation = None, -1

    def release_lock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ---------------------------------------------------------------- reading

    @property
    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def sources(self) -> list[SourceRecord]:
        rows = self._db.execute(
            "SELECT s.id, s.path, s.name, s.sha256, s.size, s.page_count, s.pages_with_text,"
            " s.extractor, s.indexed_at, COUNT(c.id)"
            " FROM sources s LEFT JOIN chunks c ON c.source_id = s.id"
            " GROUP BY s.id ORDER BY s.path"
        ).fetchall()
        return [SourceRecord(*row) for row in rows]

    def source_by_path(self, path: str) -> SourceRecord | None:
        return next((s for s in self.sources() if s.path == path), None)

    def source_by_sha(self, sha256: str) -> SourceRecord | None:
        return next((s for s in self.sources() if s.sha256 == sha256), None)

    def chunk_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def pages(self, source_id: int) -> list[Page]:
        rows = self._db.execute(
            "SELECT number, text FROM pages WHERE source_id = ? ORDER BY number", (source_id,)
        ).fetchall()
        return [Page(number, text) for number, text in rows]

    def passages(self, scored: Sequence[tuple[int, float]]) -> list[Passage]:
        """Chunk ids with scores → Passages, in the given order (unknown ids dropped)."""
        if not scored:
            return []
        ids = [cid for cid, _ in scored]
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            "SELECT c.id, s.name, s.path, c.page_start, c.page_end, c.text"
            f" FROM chunks c JOIN sources s ON s.id = c.source_id WHERE c.id IN ({marks})",
            ids,
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        out = []
        for cid, score in scored:
            row = by_id.get(cid)
            if row is not None:
                out.append(Passage(row[0], row[1], row[2], row[3], row[4], float(score), row[5]))
        return out

    def chunk_sources(self, chunk_ids: np.ndarray) -> np.ndarray:
        """The source id of each of `chunk_ids` (ids the index holds)."""
        table = self._chunk_source_table()
        if not len(table):
            return np.empty(0, np.int64)
        at = np.searchsorted(table[:, 0], chunk_ids).clip(0, len(table) - 1)
        return table[at, 1]

    def source_sizes(self) -> dict[int, int]:
        """How many chunks each document with chunks in the index has, by source id."""
        ids, counts = np.unique(self._chunk_source_table()[:, 1], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist(), strict=True))

    def source_count(self) -> int:
        """How many documents have chunks in the index."""
        return len(np.unique(self._chunk_source_table()[:, 1]))

    def _chunk_source_table(self) -> np.ndarray:
        """(chunk id, source id) rows by chunk id, for the committed state."""
        generation = self.generation
        if self._sources_generation != generation:
            rows = self._db.execute("SELECT id, source_id FROM chunks ORDER BY id").fetchall()
            self._source_table = np.array(rows, dtype=np.int64).reshape(-1, 2)
            self._sources_generation = generation
        return self._source_table

    def source_chunk_ids(self, source_id: int) -> np.ndarray:
        """The chunk ids of one document, in order (committed state)."""
        table = self._chunk_source_table()
        return table[table[:, 1] == source_id, 0] if len(table) else np.empty(0, np.int64)

    def source_texts(self, source_id: int) -> list[str]:
        """The chunk texts of one document, in order."""
        rows = self._db.execute(
            "SELECT text FROM chunks WHERE source_id = ? ORDER BY id", (source_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def summaries(self) -> list[Summary]:
        """Every section summary (answer/summaries.py), by document and first page."""
        rows = self._db.execute(
            "SELECT m.source_id, s.name, s.path, m.page_start, m.page_end, m.model, m.text"
            " FROM summaries m JOIN sources s ON s.id = m.source_id"
            " ORDER BY m.source_id, m.page_start"
        ).fetchall()
        return [Summary(*row) for row in rows]

    def add_summary(
        self, source_id: int, page_start: int, page_end: int, model: str, text: str
    ) -> None:
        """Record (or replace) the summary of pages page_start..page_end of a document, in
        a transaction of its own: an interrupted summarising run keeps what it made. The
        generation stays: summaries are not in the vector or BM25 index."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?)",
                (source_id, page_start, page_end, model, text),
            )

    def iter_chunk_texts(self) -> tuple[list[int], list[str]]:
        rows = self._db.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    def embedder_state(self) -> dict[str, np.ndarray]:
        rows = self._db.execute("SELECT name, value FROM embedder_state").fetchall()
        return {name: _load_array(value) for name, value in rows}

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    # ---------------------------------------------------------------- writing

    def set_embedder_state(self, state: dict[str, np.ndarray]) -> None:
        with self._db:
            for name, value in state.items():
                self._db.execute(
                    "INSERT OR REPLACE INTO embedder_state VALUES (?, ?)",
                    (name, _dump_array(value)),
                )
            self._bump_generation()

    def add_source(
        self,
        *,
        path: str,
        sha256: str,
        size: int,
        page_count: int,
        extractor: str,
        pages: Sequence[Page],
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
    ) -> int:
        """Record one file with its pages, chunks and vectors in one transaction, replacing
        any earlier version of the same path. Returns the source id."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if len(vectors) and vectors.shape[1] != self.config.dim:
            raise IndexMismatchError(
                f"vectors of dimension {vectors.shape[1]} cannot go into index {self.name} "
                f"(dimension {self.config.dim})"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._db:
            self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
            cur = self._db.execute(
                "INSERT INTO sources (path, name, sha256, size, page_count, pages_with_text,"
                " extractor, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    path,
                    Path(path).name,
                    sha256,
                    size,
                    page_count,
                    len(pages),
                    extractor,
                    time.time(),
                ),
            )
            source_id = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO pages VALUES (?, ?, ?)",
                [(source_id, p.number, p.text) for p in pages],
            )
            self._db.executemany(
                "INSERT INTO chunks (source_id, page_start, page_end, char_start, char_end,"
                " n_tokens, text, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        source_id,
                        c.page_start,
                        c.page_end,
                        c.char_start,
                        c.char_end,
                        c.n_tokens,
                        c.text,
                        vec.tobytes(),
                    )
                    for c, vec in zip(chunks, vectors, strict=True)
                ],
            )
            self._bump_generation()
        return source_id

    def remove_sources(self, paths: Sequence[str]) -> list[str]:
        """Drop these sources and their chunks; returns the paths that were there."""
        removed = []
        with self._db:
            for path in paths:
                cur = self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
                if cur.rowcount:
                    removed.append(path)
            if removed:
                self._bump_generation()
        return removed

    def _bump_generation(self) -> None:
        self._db.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
            " WHERE key = 'generation'"
        )

    def write_manifest(self) -> None:
        """Swap in a manifest describing the committed state (atomic replace)."""
        sources = self.sources()
        data = {
            "format_version": FORMAT_VERSION,
            "ragchat_version": __version__,
            "name": self.name,
            "config": asdict(self.config),
            "generation": self.generation,
            "chunks": sum(s.chunks for s in sources),
            "updated": time.time(),
            "sources": [_source_json(s) for s in sources],
        }
        _clear_for_write(self.path / MANIFEST)
        _atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False))

    def flush(self) -> None:
        """Write the derived FAISS and BM25 files for the committed state, then the manifest."""
        self.vector_index()
        self.lexical_index()
        self.write_manifest()

    # ---------------------------------------------------------------- derived indexes

    def vector_index(self) -> faiss.Index:
        """The FAISS index for the committed state, loaded from disk or rebuilt from SQLite
        (with a warning when the file on disk was damaged rather than just stale)."""
        import faiss

        generation = self.generation
        if self._faiss is not None and self._faiss_generation == generation:
            return self._faiss
        file = self.path / FAISS_FILE
        index, problem = self._load_faiss(file, generation)
        if index is None:
            index = self._build_faiss()

            def persist() -> None:
                _clear_for_write(file)
                tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
                faiss.write_index(index, str(tmp))
                crc = _file_crc(tmp)
                os.replace(tmp, file)
                _write_stamp(file, generation, crc)

            self._persist(FAISS_FILE, problem, persist)
        self._faiss, self._faiss_generation = index, generation
        return index

    def _build_faiss(self) -> faiss.Index:
        """A FAISS index over every chunk vector in SQLite: flat, or IVF from
        `ivf_threshold` chunks on (`build_vector_index`)."""
        ids, vectors = self._all_vectors()
        return build_vector_index(ids, vectors, self.config.dim, self.ivf_threshold)

    def _load_faiss(self, file: Path, generation: int) -> tuple[faiss.Index | None, str | None]:
        """The FAISS file if it is sound and current; else (None, why it is damaged), or
        (None, None) when it is merely older than the database (a normal lazy state)."""
        import faiss

        stamp, crc, problem = _check_stamp(file, generation)
        if problem is not None or stamp < generation:
            return None, problem
        try:
            data = file.read_bytes()
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        if crc is not None and zlib.crc32(data) != crc:
            return None, "damaged (checksum differs)"
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:  # a cache: whatever FAISS cannot read is rebuilt
            return None, f"damaged ({_first_line(exc)})"
        ids = self._chunk_ids()
        if index.d != self.config.dim or index.ntotal != len(ids):
            return None, (
                f"out of step ({index.ntotal} vectors of dimension {index.d} for {len(ids)} "
                f"chunks of dimension {self.config.dim})"
            )
        if hasattr(index, "id_map"):
            held = np.sort(faiss.vector_to_array(index.id_map))
            if not np.array_equal(held, ids):
                return None, "out of step (its chunk ids differ from the database's)"
        return index, None

    def _chunk_ids(self) -> np.ndarray:
        rows = self._db.execute("SELECT id FROM chunks ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def lexical_index(self) -> LexicalIndex:
        """The BM25 index for the committed state, loaded from disk or rebuilt from SQLite
        (with a warning when the file on disk was damaged rather than just stale)."""
        from ragchat.index.lexical import FILE_NAME, LexicalIndex

        generation = self.generation
        if self._lexical is not None and self._lexical_generation == generation:
            return self._lexical
        folder = self.path / LEXICAL_DIR
        previous = self._lexical
        lexical, stamp, problem = self._load_lexical(folder, generation)
        if lexical is None or stamp != generation:
            # Chunks whose id and text are unchanged keep their postings (`reuse`).
            ids, texts = self.iter_chunk_texts()
            lexical = LexicalIndex.build(ids, texts, reuse=previous or lexical)
            built = lexical

            def persist() -> None:
                _clear_for_write(folder, keep_dir=True)
                _clear_for_write(folder / FILE_NAME)
                built.save(folder)
                _write_stamp(folder, generation)

            self._persist(f"{LEXICAL_DIR}/{FILE_NAME}", problem, persist)
        self._lexical, self._lexical_generation = lexical, generation
        return lexical

    def _load_lexical(
        self, folder: Path, generation: int
    ) -> tuple[LexicalIndex | None, int, str | None]:
        """The BM25 index on disk (possibly stale, for reuse), its stamp, and why it is
        damaged (None when sound or merely stale)."""
        from ragchat.index.lexical import FILE_NAME, LexicalIndex

        stamp, _crc, problem = _check_stamp(folder, generation, folder / FILE_NAME)
        if problem is not None or stamp < 0:
            return None, stamp, problem
        try:
            lexical = LexicalIndex.load(folder)
        except Exception as exc:  # a cache: whatever cannot be read is rebuilt
            cause = exc.__cause__ or exc
            if "pickle" in str(cause):  # numpy's advice to load it unsafely is not ours
                return None, stamp, "not a BM25 file (it holds pickled data: never loaded)"
            return None, stamp, f"damaged ({_first_line(cause)})"
        if stamp == generation and not np.array_equal(
            np.sort(lexical.chunk_ids), self._chunk_ids()
        ):
            return None, stamp, "out of step (its chunks differ from the database's)"
        return lexical, stamp, None

    def derived_problems(self) -> dict[str, str | None]:
        """What is wrong with each file derived from the database (None: sound or just
        stale), without repairing anything; `ragchat doctor` reports it."""
        from ragchat.index.lexical import FILE_NAME

        generation = self.generation
        _, faiss_problem = self._load_faiss(self.path / FAISS_FILE, generation)
        _, _, lexical_problem = self._load_lexical(self.path / LEXICAL_DIR, generation)
        _, manifest_problem = _read_manifest(self.path)
        return {
            MANIFEST: manifest_problem,
            FAISS_FILE: faiss_problem,
            f"{LEXICAL_DIR}/{FILE_NAME}": lexical_problem,
        }

    @contextlib.contextmanager
    def _persisting(self) -> Iterator[bool]:
        """Yield whether a rebuilt cache may be written: always for the writer; for a
        reader only while no writer is active, holding the lock just for the write."""
        if self._lock_fh is not None:
            yield True
            return
        try:
            fh = _open_lock_file(self.path, self.name)
        except RagchatError:  # a read-only folder: use the rebuilt cache in memory
            yield False
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            yield False
            return
        if not self._still_here(fh):  # the folder was swapped: this cache is not its
            fh.close()
            yield False
            return
        self._lock_fh = fh
        try:
            yield True
        finally:
            self.release_lock()

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, self.config.dim), dtype=np.float32)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return ids, vectors.reshape(len(rows), self.config.dim)

    def search_vectors(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Nearest chunks by inner product (= cosine: vectors are normalised)."""
        import faiss

        index = self.vector_index()
        if index.ntotal == 0:
            return []
        # One query: OpenMP threads cost more than they save (flat, 100k chunks: 6.4 ms on
        # one thread vs 14.8 ms on two; bench/retrieval_latency.py in docs/benchmarks.md).
        faiss.omp_set_num_threads(1)
        scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


# From this many chunks the FAISS cache is IVF (inverted lists over k-means cells, trained
# on the stored vectors) instead of exact flat search. Flat search on one thread grows
# linearly: ~6 ms at 100k chunks, ~60 ms at 1M; IVF stays at 1-3 ms with recall@10 >= 0.98
# (bench/retrieval_latency.py, docs/benchmarks.md) but costs k-means training at every
# rebuild of the cache, so small indexes stay exact.
IVF_THRESHOLD = 100_000


# Recall@10 (against flat) the probe count is tuned for when an IVF index is built: the
# bar is 0.98; the margin covers real questions being further from the chunks than the
# tuning queries.
IVF_TARGET_RECALL = 0.99


_NPROBES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def build_vector_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    dim: int,
    ivf_threshold: int | None = None,
    storage: str = "float32",
) -> faiss.Index:
    """The FAISS index over `vectors` (float32 (n, dim), L2-normalised) with chunk `ids`:
    exact IndexIDMap2(IndexFlatIP) below `ivf_threshold` chunks (default IVF_THRESHOLD),
    above it IVF with ~2·sqrt(n) cells trained on the vectors themselves and `nprobe` twice
    what reaches IVF_TARGET_RECALL on query-like vectors made from them. `storage` (IVF
    only): float32, float16 or int8 per component (1/2 and 1/4 of the RAM;
    bench/retrieval_latency.py measures their recall)."""
    import faiss

    threshold = IVF_THRESHOLD if ivf_threshold is None else ivf_threshold
    n = len(ids)
    if n < max(threshold, 1):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, ids)
        return index
    nlist = max(1, min(int(2 * np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    if storage == "float32":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        kinds = {"float16": faiss.ScalarQuantizer.QT_fp16, "int8": faiss.ScalarQuantizer.QT_8bit}
        if storage not in kinds:
            raise ValueError(f"storage must be float32, float16 or int8, not {storage!r}")
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, kinds[storage], faiss.METRIC_INNER_PRODUCT
        )
    rng = np.random.default_rng(0)
    # 40 points per cell (FAISS's floor is 39) and 10 k-means iterations bound training time
    # at 1M chunks (2,000 cells) to well under a minute; finer cells buy nothing measurable.
    sample = rng.choice(n, size=min(n, 40 * nlist), replace=False)
    index.cp.min_points_per_centroid = 1  # small test indexes: no warning spam
    index.cp.niter = 10
    index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    index.add_with_ids(vectors, ids)
    index.nprobe = _tune_nprobe(index, ids, vectors, rng)
    return index


def _tune_nprobe(
    index: faiss.Index, ids: np.ndarray, vectors: np.ndarray, rng: np.random.Generator
) -> int:
    """The smallest nprobe whose recall@10 against exact search reaches IVF_TARGET_RECALL
    on 256 query-like vectors (the normalised mean of two random stored chunks: a question
    sits between passages rather than on one)."""
    import faiss

    k = 10
    pairs = rng.integers(0, len(vectors), size=(256, 2))
    queries = vectors[pairs[:, 0]] + vectors[pairs[:, 1]]
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, rows = exact.search(queries, k)  # (256, k) row positions
    del exact
    truth = ids[rows]
    for nprobe in _NPROBES:
        index.nprobe = min(nprobe, index.nlist)
        _, found = index.search(queries, k)
        hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
        if hits / truth.size >= IVF_TARGET_RECALL or nprobe >= index.nlist:
            break
    # Real questions sit further from the chunks than these queries: on qa-public's 200
    # questions over 100k chunks the tuned nprobe gave recall@10 0.968, twice it 0.993.
    return int(min(index.nlist, 2 * index.nprobe))


# SQLite result codes (primary, code & 0xFF) that mean the file itself is bad.
_DAMAGE_CODES = {10: "disk I/O error", 11: "damaged", 26: "not a database"}


def _translate(file: Path, exc: sqlite3.Error) -> Exception:
    """A RagchatError for an SQLite error that is about the file, else `exc` itself (our
    own mistakes, such as a constraint violation, stay bugs)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return exc
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code in _DAMAGE_CODES or type(exc) is sqlite3.DatabaseError or "no such" in text:
        return IndexDamagedError(_damaged_message(file, text))
    if isinstance(exc, sqlite3.OperationalError):
        return RagchatError(f"the index database {file}: {text}")
    return exc


def _damaged_message(file: Path, why: str) -> str:
    name = file.parent.name
    return (
        f"the index database {file} is damaged ({why}). Run `ragchat doctor {name}` to see "
        f"what is readable and `ragchat doctor {name} --recover NEW_INDEX` to copy it into a "
        f"new index, or `ragchat delete {name}` and ingest the files again"
    )


class _GuardedCursor(sqlite3.Cursor):
    """A cursor whose SQLite errors about the file come out as IndexDamagedError."""

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except sqlite3.Error as exc:
            raise _translate(self.connection.file, exc) from exc  # type: ignore[attr-defined]

    def execute(self, *args: Any) -> Any:
        return self._guard(super().execute, *args)

    def executemany(self, *args: Any) -> Any:
        return self._guard(super().executemany, *args)

    def executescript(self, *args: Any) -> Any:
        return self._guard(super().executescript, *args)

    def fetchone(self) -> Any:
        return self._guard(super().fetchone)

    def fetchall(self) -> Any:
        return self._guard(super().fetchall)


class _GuardedConnection(sqlite3.Connection):
    """The index's connection: every statement runs on a _GuardedCursor, and a failed
    commit is translated the same way."""

    file: Path

    def cursor(self, factory: Any = _GuardedCursor) -> Any:
        return super().cursor(factory)

    def execute(self, *args: Any) -> Any:
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> Any:
        return self.cursor().executemany(*args)

    def executescript(self, *args: Any) -> Any:
        return self.cursor().executescript(*args)

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        except sqlite3.Error as err:
            raise _translate(self.file, err) from err


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(
            str(path), timeout=60, check_same_thread=False, factory=_GuardedConnection
        )
    except sqlite3.Error as exc:
        raise _translate(path, exc) from exc
    db.file = path
    try:
        # A shared index must not run code: no SQL functions with side effects from its
        # schema (views, triggers); extensions stay disabled (sqlite3's default).
        db.execute("PRAGMA trusted_schema = OFF")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _open_database(path: Path) -> sqlite3.Connection:
    """Connect to the index database at `path`, refusing (IndexDamagedError) a missing,
    empty, foreign or visibly truncated file instead of letting SQLite start a new one."""
    file = path / DATABASE
    if not file.exists():
        raise IndexDamagedError(
            f"the database {file} of index {path.name} is missing, and nothing else holds "
            f"the index's text: `ragchat delete {path.name}` and ingest the files again"
        )
    if file.is_dir():
        raise IndexDamagedError(_damaged_message(file, "a directory, not a file"))
    try:
        with open(file, "rb") as fh:
            header = fh.read(100)
        size = file.stat().st_size
    except OSError as exc:
        raise IndexDamagedError(_damaged_message(file, exc.strerror or str(exc))) from exc
    if not header:
        raise IndexDamagedError(_damaged_message(file, "empty"))
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        raise IndexDamagedError(_damaged_message(file, "not an SQLite file: wrong header"))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = pages and header[24:28] == header[92:96]
    wal = file.with_name(file.name + "-wal")
    # With a WAL file a checkpoint may be under way (header ahead of the file): no check.
    if header_valid and not wal.exists() and size < pages * page_size:
        raise IndexDamagedError(
            _damaged_message(file, f"truncated: {size} of {pages * page_size} bytes")
        )
    return _connect(file)


def _database_config(db: sqlite3.Connection, path: Path) -> IndexConfig:
    """The settings the database records (the source of truth for the manifest)."""
    file = path / DATABASE
    rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if "config" not in rows:
        raise IndexDamagedError(_damaged_message(file, "it records no index settings"))
    try:
        data = json.loads(rows["config"])
        version = int(data.get("format_version", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise IndexDamagedError(_damaged_message(file, f"unreadable settings: {exc}")) from exc
    _refuse_format(path, version, rows.get("made_by"))
    try:
        return IndexConfig(**data)
    except TypeError as exc:
        raise IndexDamagedError(_damaged_message(file, f"unreadable settings: {exc}")) from exc


def _refuse_format(path: Path, version: int, made_by: object) -> None:
    if version > FORMAT_VERSION:
        who = f"ragchat {made_by}" if isinstance(made_by, str) and made_by else "a ragchat"
        raise IndexMismatchError(
            f"index {path.name} was made by {who} or newer (index format {version}; this is "
            f"ragchat {__version__}, which reads format {FORMAT_VERSION}): upgrade ragchat "
            "to use it"
        )
    if version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"index {path.name} has format {version}, this ragchat reads "
            f"{FORMAT_VERSION}: run `ragchat rebuild {path.name}`"
        )


def _read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest as data, and what is wrong with it (None when it looks sound)."""
    file = path / MANIFEST
    if not file.exists():
        return None, "missing"
    if file.is_dir():
        return None, "a directory"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({_first_line(exc)})"
    if not isinstance(data, dict) or "config" not in data:
        return None, "not a ragchat manifest"
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        _refuse_format(path, version, data.get("ragchat_version"))
    return data, None


def _refuse_newer(path: Path, manifest: dict[str, Any] | None) -> None:
    if manifest is not None:
        version = manifest.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            _refuse_format(path, version, manifest.get("ragchat_version"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 80 else line[:77] + "..."


def is_index(path: Path) -> bool:
    """Whether `path` is an index folder: it has ragchat's marker, or (an index from before
    the marker) a manifest and a database that records ragchat's settings."""
    if not path.is_dir():
        return False
    if (path / MARKER).exists():
        return True
    if not ((path / MANIFEST).is_file() and (path / DATABASE).is_file()):
        return False
    try:
        # Read-only: a stranger's database must not be changed by looking at it.
        db = sqlite3.connect(f"file:{path / DATABASE}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        finally:
            db.close()
        return row is not None and "embedder" in json.loads(row[0])
    except (sqlite3.Error, ValueError, TypeError):
        return False


def _started(path: Path) -> bool:
    """Whether creation got past the marker (a database or a manifest exists)."""
    return (path / DATABASE).exists() or (path / MANIFEST).exists()


def _refuse_foreign(path: Path) -> None:
    """Refuse to make an index in an existing folder that ragchat did not make and that
    holds anything (`--index .` or `--index ~` must never turn a folder into an index)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not an index folder")
    if path.is_dir() and not is_index(path) and any(not _harmless(e.name) for e in path.iterdir()):
        raise UsageError(
            f"{path} is a folder that ragchat did not make (no {MARKER} in it) and it is "
            "not empty: refusing to turn it into an index. Give a new or empty folder, "
            "or an index name (--index NAME)."
        )


def _tmp_of(name: str) -> str | None:
    """The file a temporary file ".NAME.PID.tmp" (an atomic write under way) stands for."""
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0]
    return None


def _harmless(name: str) -> bool:
    """Entries that do not make a folder someone else's: the lock, and the marker (or its
    temporary file) of a creation under way in another process."""
    return name in (LOCK_FILE, MARKER) or _tmp_of(name) == MARKER


def _write_marker(path: Path) -> None:
    _clear_for_write(path / MARKER)
    _atomic_write_text(
        path / MARKER, f"ragchat index folder (made by ragchat {__version__}); see manifest.json\n"
    )


def _clear_for_write(target: Path, keep_dir: bool = False) -> None:
    """Remove what stands where one of the index's own files goes: a directory where a
    file belongs, or (`keep_dir`) a file where its folder belongs."""
    if target.is_symlink():
        target.unlink()
    elif keep_dir:
        if target.exists() and not target.is_dir():
            target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


def _open_lock_file(path: Path, name: str | None = None) -> Any:
    lock = path / LOCK_FILE
    if lock.is_dir() and not lock.is_symlink():
        shutil.rmtree(lock, ignore_errors=True)
        log.warning("%s of index %s was a directory: replaced", LOCK_FILE, name or path.name)
    try:
        return open(lock, "a+")
    except OSError as exc:
        raise RagchatError(
            f"cannot open the lock file {lock} ({exc.strerror or exc}): is the index "
            "folder writable?"
        ) from exc


def _same_file(fh: Any, path: Path) -> bool:
    """Whether the open file `fh` is still the file at `path` (not replaced or renamed)."""
    try:
        a, b = os.fstat(fh.fileno()), path.stat()
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".generation")


def _check_stamp(
    target: Path, generation: int, content: Path | None = None
) -> tuple[int, int | None, str | None]:
    """Read the generation stamp of a derived file: (generation, crc32 or None, problem).
    `problem` says why the file cannot be trusted (missing, damaged stamp, ahead of the
    database); a sound stamp older than `generation` is no problem, just stale."""
    content = content or target
    stamp = _stamp_path(target)
    if not content.exists() and not stamp.exists():
        return -1, None, None  # never written yet (or a crash before the first flush)
    if not content.exists():
        return -1, None, "missing"
    if content.is_dir():
        return -1, None, "a directory, not a file"
    if not stamp.is_file():
        state = "not a file" if stamp.exists() else "missing"
        return -1, None, f"without its stamp ({stamp.name} {state})"
    try:
        tokens = stamp.read_text(encoding="ascii").split()
        value = int(tokens[0])
        crc = int(tokens[1], 16) if len(tokens) > 1 else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return -1, None, f"without a readable stamp ({stamp.name} damaged)"
    if value > generation:
        return -1, None, f"ahead of the database (stamp {value}, database {generation})"
    return value, crc, None


def _write_stamp(target: Path, generation: int, crc: int | None = None) -> None:
    stamp = _stamp_path(target)
    _clear_for_write(stamp)
    _atomic_write_text(stamp, str(generation) if crc is None else f"{generation} {crc:08x}")


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _dump_array(value: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(value, dtype=np.float32)
    header = json.dumps(list(arr.shape)).encode() + b"\n"
    return header + arr.tobytes()


def _load_array(blob: bytes) -> np.ndarray:
    header, _, body = blob.partition(b"\n")
    shape = tuple(json.loads(header))
    return np.frombuffer(body, dtype=np.float32).reshape(shape).copy()


def list_indexes(index_dir: Path) -> list[Path]:
    """Index folders directly under `index_dir`."""
    if not index_dir.is_dir():
        return []
    return sorted(p for p in index_dir.iterdir() if is_index(p))


def delete_index(path: Path) -> list[str]:
    """Remove an index folder's own files, then the folder if nothing else is in it
    (refused while a writer holds it, and for any folder ragchat did not make). Returns
    the names of entries left behind because ragchat did not write them."""
    if not is_index(path):
        raise IndexNotFoundError(
            f"no index at {path} (see `ragchat list`); ragchat deletes only folders it made"
        )
    with _open_lock_file(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusyError(
                f"another ragchat process is writing to index {path.name}; wait for it to "
                "finish and try again"
            ) from None
        own = set(_OWN_FILES)
        left = []
        for entry in sorted(path.iterdir()):
            if entry.name in own or _tmp_of(entry.name) in own:
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            else:
                left.append(entry.name)
        (path / LOCK_FILE).unlink(missing_ok=True)
    if not left:
        path.rmdir()
    return left


@contextlib.contextmanager
def writing(store: IndexStore, on_wait: Any = None) -> Iterator[IndexStore]:
    """Hold the writer lock for the duration; flush derived files on the way out."""
    store.acquire_lock(wait=True, on_wait=on_wait)
    try:
        yield store
    finally:
        try:
            store.flush()
        finally:
            store.release_lock()


def _source_json(s: SourceRecord) -> dict[str, Any]:
    """A source as the manifest and `ragchat info --json` show it."""
    return {
        "path": s.path,
        "sha256": s.sha256,
        "size": s.size,
        "pages": s.page_count,
        "pages_with_text": s.pages_with_text,
        "chunks": s.chunks,
        "extractor": s.extractor,
        "indexed_at": s.indexed_at,
    }


def _latin_share(texts: Sequence[str]) -> float:
    """Share of letters that are Latin script (A-Z and Latin-1/Extended), over `texts`."""
    letters = latin = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                letters += 1
                if ord(ch) < 0x250:
                    latin += 1
    return latin / letters if letters else 1.0


def describe(store: IndexStore) -> dict[str, Any]:
    """What `ragchat info` shows: settings, sources, sizes and warnings, as plain data."""
    sources = store.sources()
    sample = store._db.execute("SELECT text FROM chunks ORDER BY RANDOM() LIMIT 400").fetchall()
    warnings = []
    share = _latin_share([row[0] for row in sample])
    if sample and share < 0.5 and store.config.embedder == "minilm":
        warnings.append(
            f"{100 * (1 - share):.0f}% of the text is non-Latin script, but the default "
            "embedder (all-MiniLM-L6-v2) is English-only: dense retrieval will be poor. "
            f"Consider `ragchat rebuild {store.name} --embedder <multilingual model>`; BM25 "
            "still works."
        )
    return {
        "name": store.name,
        "path": str(store.path),
        "config": asdict(store.config),
        "generation": store.generation,
        "sources": [_source_json(s) for s in sources],
        "pages": sum(s.page_count for s in sources),
        "chunks": sum(s.chunks for s in sources),
        "summaries": len(store.summaries()),
        "bytes": store.disk_bytes(),
        "latin_share": round(share, 3),
        "warnings": warnings,
    }
