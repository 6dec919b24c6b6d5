"""The on-disk index: chunk records, vectors and page texts in SQLite, a FAISS index and a
BM25 index derived from them, and a JSON manifest.

Layout of `indexes/NAME/`:

    manifest.json    embedder id and dimension, chunking settings, format version, sources
    chunks.sqlite    sources, pages, chunks (text + float32 vector), embedder state
    vectors.faiss    IndexIDMap2(IndexFlatIP) over the normalised vectors, ids = chunk ids
    lexical/         BM25 over the chunk texts
    .lock            held (flock) by the one process writing

SQLite is the source of truth and every commit is one SQLite transaction, so a crash,
kill -9 or Ctrl-C keeps everything committed before it and never leaves half a file in.
The FAISS and BM25 files are caches stamped with the generation they were built from;
a reader that finds them older than the database rebuilds them from SQLite (seconds),
so they may be written lazily (at the end of an ingest, or every few files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragchat.errors import (
    IndexBusyError,
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
        self._lock_fh: Any = None

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: Path) -> IndexStore:
        """Open an existing index; IndexNotFoundError if there is none at `path`."""
        manifest = path / MANIFEST
        if not manifest.is_file() or not (path / DATABASE).is_file():
            raise IndexNotFoundError(
                f"no index at {path}. Create one with `ragchat ingest FILE.pdf --index "
                f"{path.name}`, or see `ragchat list`."
            )
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            config = IndexConfig(**data["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexMismatchError(
                f"the manifest of {path} is unreadable ({exc}); "
                f"delete the index with `ragchat delete {path.name}` and ingest again"
            ) from exc
        if config.format_version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"index {path.name} has format {config.format_version}, this ragchat reads "
                f"{FORMAT_VERSION}: run `ragchat rebuild {path.name}`"
            )
        return cls(path, _connect(path / DATABASE), config)

    @classmethod
    def create(cls, path: Path, config: IndexConfig) -> IndexStore:
        """Create an empty index at `path` (which must not hold one)."""
        path.mkdir(parents=True, exist_ok=True)
        if (path / MANIFEST).exists():
            raise UsageError(f"an index already exists at {path}")
        db = _connect(path / DATABASE)
        with db:
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('config', ?)", (json.dumps(asdict(config)),)
            )
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
        store = cls(path, db, config)
        store.write_manifest()
        return store

    @classmethod
    def create_or_open(cls, path: Path, config: IndexConfig) -> tuple[IndexStore, bool]:
        """Create the index unless another process has just done so (creation is
        serialised on the lock file); returns the store and whether it was created here."""
        path.mkdir(parents=True, exist_ok=True)
        with open(path / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if (path / MANIFEST).is_file():
                    return cls.open(path), False
                return cls.create(path, config), True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
        (calling `on_wait()` once first), else raise IndexBusyError."""
        if self._lock_fh is not None:
            return
        fh = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held open as the lock
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
            fcntl.flock(fh, fcntl.LOCK_EX)
        self._lock_fh = fh

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
            "name": self.name,
            "config": asdict(self.config),
            "generation": self.generation,
            "chunks": sum(s.chunks for s in sources),
            "updated": time.time(),
            "sources": [_source_json(s) for s in sources],
        }
        _atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False))

    def flush(self) -> None:
        """Write the derived FAISS and BM25 files for the committed state, then the manifest."""
        self.vector_index()
        self.lexical_index()
        self.write_manifest()

    # ---------------------------------------------------------------- derived indexes

    def vector_index(self) -> faiss.Index:
        """The FAISS index for the committed state, loaded from disk or rebuilt from SQLite."""
        import faiss

        generation = self.generation
        if self._faiss is not None and self._faiss_generation == generation:
            return self._faiss
        file = self.path / FAISS_FILE
        stamp = _read_stamp(file)
        if stamp == generation:
            index = faiss.read_index(str(file))
        else:
            ids, vectors = self._all_vectors()
            index = build_vector_index(ids, vectors, self.config.dim, self.ivf_threshold)
            del vectors
            with self._persisting() as allowed:
                if allowed:
                    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
                    faiss.write_index(index, str(tmp))
                    os.replace(tmp, file)
                    _write_stamp(file, generation)
        self._faiss, self._faiss_generation = index, generation
        return index

    def lexical_index(self) -> LexicalIndex:
        """The BM25 index for the committed state, loaded from disk or rebuilt from SQLite."""
        from ragchat.index.lexical import LexicalIndex

        generation = self.generation
        if self._lexical is not None and self._lexical_generation == generation:
            return self._lexical
        folder = self.path / LEXICAL_DIR
        stamp = _read_stamp(folder)
        previous = self._lexical
        lexical = None
        if stamp >= 0:
            try:
                lexical = LexicalIndex.load(folder)
            except RagchatError:
                lexical = None  # damaged or from an older format: rebuild below
        if lexical is None or stamp != generation:
            # Chunks whose id and text are unchanged keep their postings (`reuse`).
            ids, texts = self.iter_chunk_texts()
            lexical = LexicalIndex.build(ids, texts, reuse=previous or lexical)
            with self._persisting() as allowed:
                if allowed:
                    lexical.save(folder)
                    _write_stamp(folder, generation)
        self._lexical, self._lexical_generation = lexical, generation
        return lexical

    @contextlib.contextmanager
    def _persisting(self) -> Iterator[bool]:
        """Yield whether a rebuilt cache may be written: always for the writer; for a
        reader only while no writer is active, holding the lock just for the write."""
        if self._lock_fh is not None:
            yield True
            return
        try:
            self.acquire_lock(wait=False)
        except IndexBusyError:
            yield False
            return
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
    # questions over 100k chunks the tuned nprobe gave recall@10 0.973, twice it 0.99+.
    return int(min(index.nlist, 2 * index.nprobe))


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(_SCHEMA)
    return db


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".generation")


def _read_stamp(target: Path) -> int:
    try:
        return int(_stamp_path(target).read_text().strip()) if target.exists() else -1
    except (OSError, ValueError):
        return -1


def _write_stamp(target: Path, generation: int) -> None:
    _atomic_write_text(_stamp_path(target), str(generation))


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
    return sorted(p for p in index_dir.iterdir() if (p / MANIFEST).is_file())


def delete_index(path: Path) -> None:
    """Remove an index folder (refused while a writer holds it)."""
    if not (path / MANIFEST).is_file():
        raise IndexNotFoundError(f"no index at {path} (see `ragchat list`)")
    with IndexStore.open(path) as store:
        store.acquire_lock(wait=False)
        shutil.rmtree(path)


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
        "bytes": store.disk_bytes(),
        "latin_share": round(share, 3),
        "warnings": warnings,
    }
