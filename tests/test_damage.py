"""A damaged index never crashes ragchat: every file of a small real index (SQLite, FAISS,
BM25, their stamps, manifest, marker, lock) is damaged one way at a time, and the exact
outcome is asserted: the same search results as before with one warning naming the file
(everything the database regenerates), or a clear IndexDamagedError (the database).

The index is built once per module through the store API with made-up unit vectors (no
embedder, no LM); each case works on a copy. The table in docs/robustness.md is this one.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragchat.cli.main import main
from ragchat.errors import IndexDamagedError, IndexMismatchError
from ragchat.index.doctor import check_index, recover_index
from ragchat.index.lexical import LexicalIndex
from ragchat.index.store import (
    DATABASE,
    FAISS_FILE,
    LOCK_FILE,
    MANIFEST,
    MARKER,
    IndexConfig,
    IndexStore,
    _file_crc,
    _write_stamp,
)
from ragchat.records import Chunk, Page

DIM = 8
WORDS = [
    "harbour",
    "lantern",
    "granite",
    "keeper",
    "storm",
    "beacon",
    "ferry",
    "tide",
    "cliff",
    "gull",
    "rope",
    "anchor",
]

FAISS_STAMP = FAISS_FILE + ".generation"
LEXICAL_FILE = "lexical/lexical.npz"
LEXICAL_STAMP = "lexical.generation"


def _unit(rows: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _build(path: Path) -> None:
    """Three sources of six one-page chunks each; long texts so the database spans pages."""
    with IndexStore.create(path, IndexConfig("test-embedder", DIM, 100, 20)) as store:
        rng = np.random.default_rng(7)
        for s in range(3):
            texts = [
                " ".join(rng.choice(WORDS, size=120)) + f" source{s} chunk{c}" for c in range(6)
            ]
            store.add_source(
                path=f"/docs/file{s}.pdf",
                sha256=f"sha{s}",
                size=100,
                page_count=6,
                extractor="pypdf",
                pages=[Page(i + 1, t) for i, t in enumerate(texts)],
                chunks=[Chunk(t, i + 1, i + 1, 0, len(t), 120) for i, t in enumerate(texts)],
                vectors=_unit(6, seed=s),
            )
        store.flush()


QUERIES = [_unit(1, seed=100 + i)[0] for i in range(4)]
TEXTS = ["harbour keeper", "storm beacon tide", "source1 chunk3", "gull"]


def _results(path: Path) -> list[object]:
    """Dense and BM25 results with their passages, for every probe query."""
    with IndexStore.open(path) as store:
        dense = [store.passages(store.search_vectors(q, 5)) for q in QUERIES]
        lexical = [store.passages(store.lexical_index().search(t, 5)) for t in TEXTS]
    return [[(p.chunk_id, round(p.score, 5), p.text) for p in ps] for ps in dense + lexical]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[object]]:
    path = tmp_path_factory.mktemp("damage") / "idx"
    _build(path)
    return path, _results(path)


# ------------------------------------------------------------------ damage kinds


def _noise(n: int, seed: int = 3) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _garble(data: bytes) -> bytes:
    """Random bytes over the middle third."""
    start, end = len(data) // 3, max(len(data) // 3 + 1, 2 * len(data) // 3)
    return data[:start] + _noise(end - start) + data[end:]


def _garble_database(file: Path, _index: Path) -> None:
    """Random bytes over the middle leaf page of the chunks table (SQLite's dbstat)."""
    db = sqlite3.connect(file)
    leaves = [
        r[0]
        for r in db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'chunks' AND pagetype = 'leaf' ORDER BY pageno"
        )
    ]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = file.read_bytes()
    start = (leaves[len(leaves) // 2] - 1) * page_size
    file.write_bytes(data[:start] + _noise(page_size) + data[start + page_size :])


def _wrong_header(data: bytes) -> bytes:
    return b"NOTMAGIC" + data[8:] if len(data) > 8 else b"generation"


def _rewrite(fn: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    def damage(file: Path, _index: Path) -> None:
        file.write_bytes(fn(file.read_bytes()))

    return damage


def _missing(file: Path, _index: Path) -> None:
    file.unlink()


def _directory(file: Path, _index: Path) -> None:
    file.unlink()
    file.mkdir()
    (file / "inside.txt").write_text("not ours to read")


def _wrong_count(name: str) -> Callable[[Path, Path], None]:
    """A well-formed file whose contents disagree with the database in number."""

    def damage(file: Path, index: Path) -> None:
        db = sqlite3.connect(index / DATABASE)
        generation = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        rows = db.execute("SELECT id, text, vector FROM chunks ORDER BY id").fetchall()
        db.close()
        if name == MANIFEST:
            data = json.loads(file.read_text())
            data["chunks"] -= 1
            file.write_text(json.dumps(data))
        elif name == DATABASE:  # the header claims more pages than the file has
            data = bytearray(file.read_bytes())
            pages = int.from_bytes(data[28:32], "big")
            data[28:32] = (pages + 5).to_bytes(4, "big")
            file.write_bytes(bytes(data))
        elif name == FAISS_FILE:  # a sound FAISS file, stamped current, one vector short
            import faiss

            index_ = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
            vecs = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows[:-1]])
            index_.add_with_ids(vecs, np.array([r[0] for r in rows[:-1]], dtype=np.int64))
            faiss.write_index(index_, str(file))
            _write_stamp(file, generation, _file_crc(file))
        elif name == LEXICAL_FILE:  # a sound BM25 index, stamped current, one chunk short
            LexicalIndex.build([r[0] for r in rows[:-1]], [r[1] for r in rows[:-1]]).save(
                file.parent
            )
        else:  # a stamp ahead of the database
            tokens = file.read_text().split()
            file.write_text(" ".join([str(generation + 7), *tokens[1:]]))

    return damage


KINDS: dict[str, Callable[[str], Callable[[Path, Path], None]]] = {
    "missing": lambda name: _missing,
    "empty": lambda name: _rewrite(lambda d: b""),
    "truncated": lambda name: _rewrite(lambda d: d[: len(d) // 2]),
    "garbled": lambda name: _garble_database if name == DATABASE else _rewrite(_garble),
    "wrong header": lambda name: _rewrite(_wrong_header),
    "wrong count": _wrong_count,
    "directory": lambda name: _directory,
}


# ------------------------------------------------------------------ expected outcomes

DERIVED = [MANIFEST, FAISS_FILE, FAISS_STAMP, LEXICAL_FILE, LEXICAL_STAMP]

# the file each warning names (a stamp's problem is its file's)
WARNED_AS = {
    MANIFEST: MANIFEST,
    FAISS_FILE: FAISS_FILE,
    FAISS_STAMP: FAISS_FILE,
    LEXICAL_FILE: LEXICAL_FILE,
    LEXICAL_STAMP: LEXICAL_FILE,
    LOCK_FILE: LOCK_FILE,
}

# (file, kind) -> the words the IndexDamagedError must hold, for the database
DATABASE_ERRORS = {
    "missing": "missing",
    "empty": "empty",
    "truncated": "truncated",
    "garbled": "malformed",
    "wrong header": "wrong header",
    "wrong count": "truncated",
    "directory": "a directory",
}

CASES = (
    [(name, kind) for name in DERIVED for kind in KINDS]
    + [(DATABASE, kind) for kind in KINDS]
    # The lock's and the marker's contents are never read: only missing, empty, garbled,
    # or a directory in their place make sense.
    + [(name, kind) for name in (LOCK_FILE, MARKER) for kind in ("missing", "empty", "garbled")]
    + [(LOCK_FILE, "directory"), (MARKER, "directory")]
)


def _damaged_copy(pristine: Path, tmp_path: Path, name: str, kind: str) -> Path:
    path = tmp_path / "idx"
    shutil.copytree(pristine, path)
    file = path / name
    if kind in ("empty", "garbled") and not file.exists():
        file.touch()
    KINDS[kind](name)(file, path)
    return path


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}:{k}" for n, k in CASES])
def test_damaged_index_file(
    pristine: tuple[Path, list[object]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    kind: str,
) -> None:
    source, before = pristine
    path = _damaged_copy(source, tmp_path, name, kind)
    caplog.set_level(logging.WARNING, logger="ragchat")

    if name == DATABASE:
        with pytest.raises(IndexDamagedError) as info:
            _results(path)
        message = str(info.value)
        assert str(path / DATABASE) in message
        assert DATABASE_ERRORS[kind] in message
        assert "ragchat delete" in message
        if kind not in ("missing",):
            assert "ragchat doctor" in message
        assert not check_index(path).healthy
        return

    if name == LOCK_FILE:
        # Only writers open the lock: take it as a writer would.
        with IndexStore.open(path) as store:
            store.acquire_lock(wait=False)
            store.write_manifest()
            store.release_lock()
    assert _results(path) == before
    warnings = [r.getMessage() for r in caplog.records]
    if name == MARKER or (name == LOCK_FILE and kind != "directory"):
        assert warnings == []  # nothing was wrong that a user needs to hear about
    else:
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"{WARNED_AS[name]} of index idx was ")
        assert warnings[0].endswith(
            ": rebuilt from chunks.sqlite" if name != LOCK_FILE else "replaced"
        )
    # The repair was written: the next open is clean and still gives the same results.
    caplog.clear()
    assert _results(path) == before
    assert caplog.records == []
    assert check_index(path).healthy
    assert (path / MARKER).is_file()


def test_case_count() -> None:
    # the 7 kinds for 6 files, plus 4 each for the lock and the marker
    assert len(CASES) == 7 * 6 + 4 * 2


@pytest.mark.parametrize("where", ["manifest", "database"])
def test_newer_format_is_refused_with_upgrade(
    pristine: tuple[Path, list[object]], tmp_path: Path, where: str
) -> None:
    path = tmp_path / "idx"
    shutil.copytree(pristine[0], path)
    if where == "manifest":
        data = json.loads((path / MANIFEST).read_text())
        data.update(format_version=99, ragchat_version="9.9")
        (path / MANIFEST).write_text(json.dumps(data))
    else:
        db = sqlite3.connect(path / DATABASE)
        config = json.loads(db.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        config["format_version"] = 99
        with db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('made_by', '9.9')")
        db.close()
    with pytest.raises(IndexMismatchError, match=r"made by ragchat 9\.9 or newer.*upgrade"):
        IndexStore.open(path)


def test_recover_copies_every_readable_row(
    pristine: tuple[Path, list[object]], tmp_path: Path
) -> None:
    path = _damaged_copy(pristine[0], tmp_path, DATABASE, "garbled")
    report = check_index(path)
    assert not report.healthy
    recovered = recover_index(path, tmp_path / "new")
    # Every chunk the damaged file still yields, looked up one by one, is in the new index.
    db = sqlite3.connect(f"file:{path / DATABASE}?mode=ro", uri=True)
    readable = {}
    for cid in range(1, 19):
        try:
            row = db.execute("SELECT text FROM chunks WHERE id = ?", (cid,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row:
            readable[cid] = row[0]
    db.close()
    with IndexStore.open(tmp_path / "new") as store:
        ids, texts = store.iter_chunk_texts()
        assert dict(zip(ids, texts, strict=True)) == readable
        assert store.vector_index().ntotal == len(ids) == recovered.copied["chunks"]
        assert 0 < len(ids) <= 18
    assert check_index(tmp_path / "new").healthy


def test_cli_damage_is_one_line_never_a_traceback(
    pristine: tuple[Path, list[object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _damaged_copy(pristine[0], tmp_path, MANIFEST, "truncated")
    assert main(["info", "--index", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json of index idx was unreadable" in err

    path = tmp_path / "db-damaged"
    shutil.copytree(pristine[0], path)
    (path / DATABASE).write_bytes(b"\0" * 4096)
    assert main(["info", "--index", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ragchat: the index database") and "Traceback" not in err
    assert main(["doctor", str(path)]) == 3
    out = capsys.readouterr().out
    assert "BAD" in out and "damaged" in out
