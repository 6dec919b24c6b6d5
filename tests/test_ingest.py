"""Ingest end to end: real PDFs (made here or from the bench), real pypdf, the packaged
MiniLM, real FAISS and SQLite in tmp_path."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pdfmaker import make_pdf

from ragchat.config import Settings, load_settings
from ragchat.errors import IndexMismatchError
from ragchat.index.store import IndexStore
from ragchat.ingest.pipeline import ingest, rebuild, remove
from ragchat.retrieval.retriever import open_retriever

LIGHTHOUSE = (
    "The lighthouse at Gull Point was built by the engineer Margaret Alder.\n"
    "Work began in 1869 and the light was first lit in October 1871.\n\n"
    "The first keeper was Tobias Wren, a former ship's carpenter."
)
BAKERY = (
    "The village bakery sells rye bread and cinnamon buns every morning.\n"
    "Its oven was installed in 1923 and still burns wood."
)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {"index_dir": tmp_path / "indexes", "chunk_tokens": 32, "chunk_overlap": 4}
    )


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    make_pdf([LIGHTHOUSE, "More about the lamp: it burned colza oil."], folder / "light.pdf")
    make_pdf([BAKERY], folder / "bakery.pdf")
    return folder


def statuses(report) -> dict[str, str]:
    return {Path(f.path).name: f.status for f in report.files}


def test_ingest_then_search_finds_the_right_page(docs: Path, settings: Settings) -> None:
    index = settings.index_dir / "default"
    report = ingest([docs], index, settings)
    assert statuses(report) == {"bakery.pdf": "indexed", "light.pdf": "indexed"}
    light = next(f for f in report.files if f.path.endswith("light.pdf"))
    assert light.pages == 2 and light.chunks >= 2
    for method in ("dense", "bm25", "hybrid"):
        retriever = open_retriever(index, settings.replace(retrieval=method))
        top = retriever.search("Who built the lighthouse?", 2)[0]
        retriever.close()
        assert top.doc == "light.pdf", method
        assert top.page == 1 and "Margaret Alder" in top.text


def test_rerun_is_unchanged_and_changed_file_is_reindexed(docs: Path, settings: Settings) -> None:
    index = settings.index_dir / "default"
    ingest([docs], index, settings)
    again = ingest([docs], index, settings)
    assert set(statuses(again).values()) == {"unchanged"}
    make_pdf([BAKERY + "\nNew: sourdough on Fridays."], docs / "bakery.pdf")
    changed = ingest([docs], index, settings)
    assert statuses(changed) == {"bakery.pdf": "indexed", "light.pdf": "unchanged"}
    with IndexStore.open(index) as store:
        assert len(store.sources()) == 2


def test_every_status_and_no_file_stops_the_run(
    tmp_path: Path, docs: Path, settings: Settings
) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.pdf").write_text("this is not a PDF at all")
    (odd / "truncated.pdf").write_bytes((docs / "light.pdf").read_bytes()[:300])
    make_pdf(["", ""], odd / "scan.pdf")  # pages without any text
    report = ingest(
        [docs / "light.pdf", odd, tmp_path / "missing.pdf"],
        settings.index_dir / "default",
        settings,
    )
    got = statuses(report)
    assert got["light.pdf"] == "indexed"
    assert got["notes.pdf"] == "skipped"
    assert got["scan.pdf"] == "skipped"
    assert got["truncated.pdf"] in ("failed", "skipped")
    assert got["missing.pdf"] == "failed"
    reasons = {Path(f.path).name: f.reason for f in report.files}
    assert "OCR" in reasons["scan.pdf"]
    assert all(r for name, r in reasons.items() if name != "light.pdf")


def test_encrypted_pdf_needs_password(tmp_path: Path, docs: Path, settings: Settings) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(docs / "light.pdf"))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as fh:
        writer.write(fh)
    index = settings.index_dir / "default"
    first = ingest([locked], index, settings)
    assert first.files[0].status == "failed" and "--password" in (first.files[0].reason or "")
    second = ingest([locked], index, settings, password="s3cret")
    assert second.files[0].status == "indexed"


def test_duplicate_content_under_another_name_is_unchanged(
    tmp_path: Path, docs: Path, settings: Settings
) -> None:
    index = settings.index_dir / "default"
    ingest([docs / "light.pdf"], index, settings)
    copy = tmp_path / "copy.pdf"
    copy.write_bytes((docs / "light.pdf").read_bytes())
    report = ingest([copy], index, settings)
    assert report.files[0].status == "unchanged"
    assert "same content" in (report.files[0].reason or "")


def test_prune_remove_and_rebuild(docs: Path, settings: Settings) -> None:
    index = settings.index_dir / "default"
    ingest([docs], index, settings)
    assert remove(index, ["bakery.pdf"]) == [str((docs / "bakery.pdf").resolve())]
    ingest([docs], index, settings)  # back in
    (docs / "bakery.pdf").unlink()
    pruned = ingest([docs], index, settings, prune=True)
    assert "removed" in statuses(pruned).values()
    with IndexStore.open(index) as store:
        before = store.chunk_count()
    report = rebuild(index, settings, chunk_tokens=16, chunk_overlap=2)
    assert statuses(report) == {"light.pdf": "indexed"}
    with IndexStore.open(index) as store:
        assert store.config.chunk_tokens == 16
        assert store.chunk_count() > before
    retriever = open_retriever(index, settings)
    assert retriever.search("Tobias Wren keeper", 1)[0].doc == "light.pdf"
    retriever.close()


def test_conflicting_embedder_or_chunking_is_refused(docs: Path, settings: Settings) -> None:
    index = settings.index_dir / "default"
    ingest([docs / "light.pdf"], index, settings)
    with pytest.raises(IndexMismatchError, match="ragchat rebuild default --embedder lm:x"):
        ingest([docs / "bakery.pdf"], index, settings, embedder_spec="lm:x")
    with pytest.raises(IndexMismatchError, match="--chunk-tokens"):
        ingest([docs / "bakery.pdf"], index, settings, chunk_tokens=100)
    with pytest.raises(IndexMismatchError, match="ragchat rebuild"):
        open_retriever(index, settings, embedder_spec="lm:other")


@pytest.mark.slow
def test_chunk_size_above_the_embedders_cap_is_compared_as_capped(
    docs: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """MiniLM reads at most ~254 tokens a chunk: --chunk-tokens 300 creates the index with
    the cap, and the same flag again is not a mismatch (it used to raise and leave an empty
    index behind)."""
    from ragchat.cli.main import main

    index = settings.index_dir / "big"
    argv = ["ingest", str(docs), "--index", str(index), "--chunk-tokens", "300", "--quiet"]
    assert main(argv) == 0
    with IndexStore.open(index) as store:
        capped = store.config.chunk_tokens
        assert capped < 300 and len(store.sources()) == 2
    assert main(argv) == 0
    assert "2 unchanged" in capsys.readouterr().err
    assert main([*argv[:-2], str(capped + 1)]) == 0  # capped to the same size: no mismatch
    assert main([*argv[:-2], str(capped - 10)]) != 0  # a real change still is one


def test_kill_9_mid_ingest_keeps_committed_files_and_rerun_completes(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        make_pdf(
            [f"Document {i} talks about topic number {i}.\n" + BAKERY * 30] * 3,
            folder / f"doc{i:02}.pdf",
        )
    index = tmp_path / "indexes" / "killed"
    cmd = [
        sys.executable,
        "-m",
        "ragchat.cli",
        "ingest",
        str(folder),
        "--index",
        str(index),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        db = index / "chunks.sqlite"
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    committed = con.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
            except sqlite3.Error:
                continue
            if committed >= 3:
                break
    assert proc.poll() is None, "ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    settings = load_settings()
    with IndexStore.open(index) as store:
        kept = len(store.sources())
        assert kept >= 3
        assert store.chunk_count() > 0
    retriever = open_retriever(index, settings)
    hits = retriever.search("topic number 1", 3)
    retriever.close()
    assert hits and all(h.doc.startswith("doc") for h in hits)

    from ragchat.ingest.pipeline import ingest as run_ingest

    report = run_ingest([folder], index, settings)
    counts = {s: report.count(s) for s in ("indexed", "unchanged")}
    assert counts["unchanged"] == kept
    assert counts["indexed"] == 40 - kept


def test_lm_embedder_mean_is_fixed_by_ingest_and_recomputed_by_rebuild(
    tmp_path: Path, docs: Path, settings: Settings
) -> None:
    import numpy as np
    from tinymodels import make_tiny_phi

    model = make_tiny_phi(tmp_path / "tiny-phi")
    spec = f"lm:{model}"
    index = settings.index_dir / "lm"
    first = ingest([docs / "light.pdf"], index, settings, embedder_spec=spec)
    assert first.files[0].status == "indexed"
    with IndexStore.open(index) as store:
        assert store.config.embedder.startswith("lm:")
        mean = store.embedder_state()["mean"]
    ingest([docs / "bakery.pdf"], index, settings)  # the index's own embedder is used
    with IndexStore.open(index) as store:
        np.testing.assert_array_equal(store.embedder_state()["mean"], mean)
        assert len(store.sources()) == 2
    retriever = open_retriever(index, settings)
    hits = retriever.search("bakery rye bread", 2)
    retriever.close()
    assert hits[0].doc == "bakery.pdf"  # BM25 half of hybrid; the tiny LM's vectors are noise
    rebuild(index, settings)
    with IndexStore.open(index) as store:
        assert not np.array_equal(store.embedder_state()["mean"], mean)


@pytest.mark.slow
def test_two_ingests_into_one_index_wait_for_each_other(tmp_path: Path) -> None:
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(12):
            make_pdf(
                [f"Folder {name} document {i} about topic {name}{i}.\n" + BAKERY * 20] * 2,
                folder / f"{name}{i:02}.pdf",
            )
        folders.append(folder)
    index = tmp_path / "indexes" / "shared"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ragchat.cli",
                "ingest",
                str(folder),
                "--index",
                str(index),
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with IndexStore.open(index) as store:
        assert len(store.sources()) == 24
        assert store.vector_index().ntotal == store.chunk_count()

    # A writer holding the index: a new ingest says it waits, then completes.
    extra = tmp_path / "extra.pdf"
    make_pdf([LIGHTHOUSE], extra)
    holder = IndexStore.open(index)
    holder.acquire_lock()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragchat.cli",
            "ingest",
            str(extra),
            "--index",
            str(index),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # warnings may come first; the wait notice must come
        seen.append(line)
        if "waiting for another ingest" in line or len(seen) > 50:
            break
    assert "waiting for another ingest" in seen[-1], seen
    assert proc.poll() is None
    holder.release_lock()
    holder.close()
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 0, rest
    with IndexStore.open(index) as store:
        assert len(store.sources()) == 25
