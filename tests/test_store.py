"""The on-disk index: real SQLite and FAISS in tmp_path, vectors made up (no embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragchat.errors import IndexBusyError, IndexNotFoundError, UsageError
from ragchat.index.store import (
    FAISS_FILE,
    MANIFEST,
    IndexConfig,
    IndexStore,
    delete_index,
    describe,
    list_indexes,
    resolve_index_path,
)
from ragchat.records import Chunk, Page

DIM = 8


def unit(rows: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(store: IndexStore, path: str, texts: list[str], seed: int) -> np.ndarray:
    pages = [Page(i + 1, t) for i, t in enumerate(texts)]
    chunks = [Chunk(t, i + 1, i + 1, 0, len(t), len(t.split())) for i, t in enumerate(texts)]
    vectors = unit(len(texts), seed)
    store.add_source(
        path=path,
        sha256=f"sha-{path}",
        size=10,
        page_count=len(texts),
        extractor="pypdf",
        pages=pages,
        chunks=chunks,
        vectors=vectors,
    )
    return vectors


@pytest.fixture()
def store(tmp_path: Path) -> IndexStore:
    s = IndexStore.create(tmp_path / "idx", IndexConfig("test-embedder", DIM, 100, 20))
    yield s
    s.close()


def test_resolve_index_path(tmp_path: Path) -> None:
    assert resolve_index_path("papers", tmp_path) == tmp_path / "papers"
    assert resolve_index_path("./here", tmp_path) == Path("here").resolve()
    assert resolve_index_path("a/b", tmp_path) == Path("a/b").resolve()
    assert resolve_index_path("~/x", tmp_path) == Path("~/x").expanduser().resolve()
    with pytest.raises(UsageError):
        resolve_index_path("", tmp_path)


def test_add_search_and_passages(store: IndexStore) -> None:
    vectors = add(store, "/docs/a.pdf", ["alpha text", "beta text", "gamma text"], seed=1)
    hits = store.search_vectors(vectors[1], 2)
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    passages = store.passages(hits)
    assert passages[0].text == "beta text"
    assert passages[0].doc == "a.pdf" and passages[0].page == 2
    assert store.chunk_count() == 3
    assert [p.number for p in store.pages(store.sources()[0].id)] == [1, 2, 3]


def test_replacing_a_source_drops_its_old_chunks(store: IndexStore) -> None:
    add(store, "/docs/a.pdf", ["one", "two"], seed=1)
    add(store, "/docs/a.pdf", ["three"], seed=2)
    assert store.chunk_count() == 1
    assert [s.chunks for s in store.sources()] == [1]


def test_stale_faiss_file_is_rebuilt_from_sqlite(store: IndexStore) -> None:
    vectors = add(store, "/docs/a.pdf", ["one", "two"], seed=1)
    store.flush()
    assert store.vector_index().ntotal == 2
    add(store, "/docs/b.pdf", ["three"], seed=3)
    # A new reader sees the database ahead of the FAISS file and rebuilds it.
    with IndexStore.open(store.path) as reader:
        assert reader.vector_index().ntotal == 3
        assert reader.search_vectors(vectors[0], 1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_manifest_lists_sources(store: IndexStore) -> None:
    add(store, "/docs/a.pdf", ["one"], seed=1)
    store.flush()
    data = json.loads((store.path / MANIFEST).read_text())
    assert data["config"]["embedder"] == "test-embedder"
    assert data["config"]["dim"] == DIM
    assert data["sources"][0]["path"] == "/docs/a.pdf"
    assert data["sources"][0]["sha256"] == "sha-/docs/a.pdf"
    assert (store.path / FAISS_FILE).is_file()


def test_remove_sources(store: IndexStore) -> None:
    add(store, "/docs/a.pdf", ["one"], seed=1)
    add(store, "/docs/b.pdf", ["two"], seed=2)
    assert store.remove_sources(["/docs/a.pdf", "/docs/none.pdf"]) == ["/docs/a.pdf"]
    assert [s.path for s in store.sources()] == ["/docs/b.pdf"]
    assert store.vector_index().ntotal == 1


def test_second_writer_is_refused_or_waits(store: IndexStore) -> None:
    store.acquire_lock()
    with IndexStore.open(store.path) as other, pytest.raises(IndexBusyError):
        other.acquire_lock(wait=False)
    store.release_lock()
    with IndexStore.open(store.path) as other:
        other.acquire_lock(wait=False)


def test_embedder_state_round_trip(store: IndexStore) -> None:
    mean = np.arange(DIM, dtype=np.float32)
    store.set_embedder_state({"mean": mean})
    with IndexStore.open(store.path) as reader:
        np.testing.assert_array_equal(reader.embedder_state()["mean"], mean)


def test_open_missing_index_says_how_to_create(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="ragchat ingest"):
        IndexStore.open(tmp_path / "nothing")


def test_list_describe_and_delete(store: IndexStore, tmp_path: Path) -> None:
    add(store, "/docs/a.pdf", ["Un texte en français."], seed=1)
    store.flush()
    assert list_indexes(tmp_path) == [store.path]
    info = describe(store)
    assert info["chunks"] == 1 and info["sources"][0]["pages"] == 1
    assert info["latin_share"] == 1.0 and info["warnings"] == []
    delete_index(store.path)
    assert not store.path.exists()


def test_describe_warns_about_non_latin_text_with_minilm(tmp_path: Path) -> None:
    with IndexStore.create(tmp_path / "ja", IndexConfig("minilm", DIM, 100, 20)) as s:
        add(s, "/docs/ja.pdf", ["吾輩は猫である。名前はまだ無い。"], seed=1)
        assert "English-only" in describe(s)["warnings"][0]
