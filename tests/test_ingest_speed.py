"""Issue 11: the ONNX embedder runtime, runtime mixing, and the IVF switch — on the real
packaged MiniLM, real PDFs and real FAISS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragchat.config import load_settings
from ragchat.errors import IndexMismatchError
from ragchat.index.store import IndexStore, build_vector_index
from ragchat.ingest.chunking import chunk_pages
from ragchat.ingest.pdf import extract_document
from ragchat.ingest.pipeline import ingest
from ragchat.retrieval.embedders import load_embedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qa_chunks(bench_dir: Path) -> list[str]:
    """The chunk texts of two real qa-public articles, as ingest cuts them."""
    settings = load_settings()
    embedder = load_embedder("minilm", settings, runtime="onnx")
    texts: list[str] = []
    for name in ("Black_Death.pdf", "Kenya.pdf"):
        document = extract_document(bench_dir / "qa-public" / "docs" / name)
        texts += [c.text for c in chunk_pages(document.pages, embedder.token_spans, 160, 32)]
    return texts[:48]


def test_onnx_vectors_match_torch_fp32(qa_chunks: list[str]) -> None:
    settings = load_settings()
    torch_embedder = load_embedder("minilm", settings, runtime="torch", dtype="float32")
    onnx_embedder = load_embedder("minilm", settings, runtime="onnx")
    assert onnx_embedder.runtime == "onnx" and torch_embedder.runtime == "torch"
    assert onnx_embedder.max_tokens == torch_embedder.max_tokens
    for text in qa_chunks[:5]:
        assert onnx_embedder.token_spans(text) == torch_embedder.token_spans(text)
    reference = torch_embedder.embed(qa_chunks, kind="passage")
    vectors = onnx_embedder.embed(qa_chunks, kind="passage", batch_size=7)
    cosine = (reference * vectors).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    question = ["How many people did the Black Death kill?"]
    q_cos = float(
        (
            torch_embedder.embed(question, kind="query")
            * onnx_embedder.embed(question, kind="query")
        ).sum()
    )
    assert q_cos >= 0.999
    # int8: faster, measurably different, still the same neighbourhood
    int8 = load_embedder("minilm", settings, runtime="onnx-int8").embed(qa_chunks, kind="passage")
    assert 0.95 <= float((reference * int8).sum(axis=1).mean()) < 0.9999


def test_mixing_runtimes(tmp_path: Path, sample_pdf: Path) -> None:
    """float32 runtimes share an index (same vectors); int8 is refused on a float32 index
    and the other way round, and "auto" follows what the index holds."""
    index = tmp_path / "mixed"
    settings = load_settings()
    report = ingest([sample_pdf], index, settings.replace(embedder_runtime="onnx-int8"))
    assert report.files[0].status == "indexed"
    with IndexStore.open(index) as store:
        assert store.config.embedder_runtime == "onnx-int8"
    with pytest.raises(IndexMismatchError, match="rebuild"):
        ingest([sample_pdf], index, settings.replace(embedder_runtime="torch"))
    # auto on an int8 index embeds with int8: an unchanged rerun, no error
    again = ingest([sample_pdf], index, settings.replace(embedder_runtime="auto"))
    assert again.files[0].status == "unchanged"

    flat = tmp_path / "float"
    ingest([sample_pdf], flat, settings.replace(embedder_runtime="torch"))
    with pytest.raises(IndexMismatchError, match="onnx-int8"):
        ingest([sample_pdf], flat, settings.replace(embedder_runtime="onnx-int8"))
    from ragchat.retrieval.retriever import open_retriever

    retriever = open_retriever(flat, settings.replace(embedder_runtime="onnx"))
    try:
        assert retriever.embedder.runtime == "onnx"
        assert retriever.search("gull point", 3)
    finally:
        retriever.close()


def test_ivf_past_threshold_matches_flat(tmp_path: Path, bench_dir: Path) -> None:
    """Past a (lowered) threshold the FAISS cache is IVF; on real chunk vectors its top 10
    for real questions agrees with exact search."""
    import faiss

    settings = load_settings()
    index = tmp_path / "qa"
    docs = sorted((bench_dir / "qa-public" / "docs").glob("*.pdf"))[:4]
    ingest(docs, index, settings.replace(embedder_runtime="onnx"))
    store = IndexStore.open(index)
    try:
        flat = store.vector_index()
        assert isinstance(faiss.downcast_index(flat), faiss.IndexIDMap2)
        n = flat.ntotal
        assert n > 100
        store.ivf_threshold = n  # IVF from exactly this many chunks
        store._faiss = None
        (store.path / "vectors.faiss.generation").unlink()
        ivf = faiss.downcast_index(store.vector_index())
        assert isinstance(ivf, faiss.IndexIVF) and ivf.ntotal == n and ivf.nprobe >= 1
        # the cache on disk is the IVF one and is reused as it is
        reread = faiss.downcast_index(faiss.read_index(str(store.path / "vectors.faiss")))
        assert isinstance(reread, faiss.IndexIVF) and reread.nprobe == ivf.nprobe
        embedder = load_embedder("minilm", settings, runtime="onnx")
        questions = [
            "When did the Black Death reach Europe?",
            "What is the capital of Kenya?",
            "Which rivers flow into the sea?",
            "How was the plague spread?",
        ]
        queries = embedder.embed(questions, kind="query")
        ids, vectors = store._all_vectors()
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, rows = exact.search(queries, 10)
        recall = []
        for q, truth in zip(queries, rows, strict=True):
            found = {cid for cid, _ in store.search_vectors(q, 10)}
            recall.append(len(found & set(ids[truth].tolist())) / 10)
        assert np.mean(recall) >= 0.9, recall
    finally:
        store.close()


def test_build_vector_index_storage_kinds() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 2010, dtype=np.int64)
    assert build_vector_index(ids, vectors, 32, ivf_threshold=5000).ntotal == 2000  # flat
    for storage in ("float32", "float16", "int8"):
        index = build_vector_index(ids, vectors, 32, ivf_threshold=1000, storage=storage)
        _, found = index.search(vectors[:5], 1)
        assert found[:, 0].tolist() == ids[:5].tolist()
    with pytest.raises(ValueError):
        build_vector_index(ids, vectors, 32, ivf_threshold=1000, storage="int4")
