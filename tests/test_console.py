"""The console as a user meets it: what loads at start-up, the thread choice, plain-text
files, deleted files, and the wording of reports and timing lines. Real components: the
sample PDF, pypdf, FAISS, the packaged MiniLM (numpy and transformers paths)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from ragchat import hardware
from ragchat.answer.citations import Citation, render_citations, source_label
from ragchat.cli.render import plural, print_report, speed
from ragchat.cli.repl import SlashCompleter
from ragchat.config import load_settings
from ragchat.ingest.pipeline import ingest
from ragchat.ingest.text import extract_text_document
from ragchat.records import FileOutcome, IngestReport
from ragchat.retrieval.retriever import open_retriever

REPO = Path(__file__).resolve().parents[1]


def run_ragchat(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -X importtime -m ragchat ARGS` in a child with the test's environment."""
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ragchat", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def imported(proc: subprocess.CompletedProcess, module: str) -> bool:
    return any(line.rstrip().endswith(f"| {module}") for line in proc.stderr.splitlines())


# ------------------------------------------------------------------ hardware


def test_compute_threads_gives_the_free_cores() -> None:
    cores = min(hardware.physical_cores(), len(hardware.usable_cpus()))
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert hardware.compute_threads(3) == 3  # an explicit setting wins
    assert hardware.compute_threads(busy=0.0) == cores
    assert hardware.compute_threads(busy=float(cores + 4)) == 1  # never below one
    assert hardware.compute_threads(busy=0.7) == max(1, cores - 1)
    assert hardware.busy_elsewhere(0.02) >= 0.0
    assert isinstance(hardware.cpu_has_native_bf16(), bool)


# ------------------------------------------------------------------ start-up


@pytest.mark.slow
def test_no_op_ingest_and_search_never_import_torch(tmp_path: Path, sample_pdf: Path) -> None:
    first = run_ragchat("ingest", str(sample_pdf), "--quiet")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_ragchat("ingest", str(sample_pdf), "--quiet")
    assert again.returncode == 0 and "1 unchanged" in again.stderr
    search = run_ragchat("search", "who built the lighthouse?", "-k", "2")
    assert search.returncode == 0 and "gull-point.pdf p." in search.stdout
    wrong_model = run_ragchat("ask", "who built it?", "--model", "no-such-model")
    assert wrong_model.returncode != 0 and "no-such-model" in wrong_model.stderr
    # The first ingest may import torch once: choosing the MiniLM runtime measures torch
    # against ONNX Runtime and remembers the winner (embedders._measured_runtime).
    for proc in (again, search, wrong_model):
        assert not imported(proc, "torch")
        assert not imported(proc, "transformers")


@pytest.mark.slow
def test_numpy_minilm_matches_the_transformers_model(model_cache: Path, bench_dir: Path) -> None:
    from ragchat.retrieval.bert_numpy import MiniLMEmbedder
    from ragchat.retrieval.embedders import _load_sentence_folder, minilm_folder

    settings = load_settings({"cache_dir": model_cache})
    full = _load_sentence_folder(minilm_folder(), "minilm", settings, "float32")
    fast = MiniLMEmbedder(minilm_folder(), "minilm", lambda: full)
    rows = [json.loads(line) for line in (bench_dir / "qa-public" / "questions.jsonl").open()]
    questions = [r["question"] for r in rows[:20]]
    passages = [r["gold_passage"] for r in rows[:8]]
    for texts, kind in ((questions, "query"), (passages, "passage")):
        a = fast.embed(texts, kind=kind)
        b = full.embed(texts, kind=kind)
        assert a.shape == b.shape == (len(texts), 384)
        assert float((a * b).sum(1).min()) > 0.9999
    assert fast.max_tokens == full.max_tokens
    text = "Margaret Alder built Gull Point Light in 1871."
    assert fast.token_spans(text) == full.token_spans(text)
    assert np.allclose(np.linalg.norm(fast.embed(["x"], kind="query"), axis=1), 1.0)


@pytest.mark.slow
def test_an_ingest_of_many_small_files_embeds_on_the_bulk_model(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file alone is small enough for the numpy path, the ingest as a whole is not: the
    torch model is loaded before the first file is embedded (ja-public: 54 s in numpy, 7 s
    on torch). A single small file stays on numpy, without loading torch."""
    from ragchat.retrieval import embedders
    from ragchat.retrieval.bert_numpy import NUMPY_MAX_TEXTS, MiniLMEmbedder

    # The branch under test is MiniLM on torch, which `auto` picks where ONNX is slower.
    monkeypatch.setattr(embedders, "_measured_runtime", lambda *_: "torch")
    used: list[MiniLMEmbedder] = []
    real_embed = MiniLMEmbedder.embed

    def watched(self: MiniLMEmbedder, texts: list[str], **kw: object) -> np.ndarray:
        used.append(self)
        return real_embed(self, texts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(MiniLMEmbedder, "embed", watched)
    settings = load_settings({"cache_dir": model_cache, "embedder_runtime": "auto"})
    docs = tmp_path / "docs"
    docs.mkdir()
    words = " ".join(f"word{i}" for i in range(300))
    for i in range(12):
        (docs / f"note{i:02}.txt").write_text(f"Note {i}. {words}\n")

    one = ingest([docs / "note00.txt"], tmp_path / "one", settings)
    per_file = one.files[0].chunks
    assert 0 < per_file <= NUMPY_MAX_TEXTS < 12 * per_file
    assert used and used[-1]._full is None

    many = ingest([docs], tmp_path / "many", settings)
    assert [f.status for f in many.files].count("indexed") == 12
    assert used[-1]._full is not None


@pytest.mark.slow
def test_a_mid_size_ingest_takes_the_exported_onnx_model_a_big_one_torch(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where torch embeds faster (auto chose it), a few hundred passages still finish first
    on an already-exported ONNX model: no ~5 s torch import. Same vectors either way."""
    from ragchat.retrieval import embedders, onnxembed
    from ragchat.retrieval.bert_numpy import LIGHT_MAX_TEXTS

    monkeypatch.setattr(embedders, "_measured_runtime", lambda *_: "torch")
    settings = load_settings({"cache_dir": model_cache, "embedder_runtime": "auto"})
    onnxembed.ensure_exported(
        embedders.minilm_folder(), settings, embedders.MINILM_SHA256, int8=False
    )
    mid = embedders.load_embedder("minilm", settings)
    big = embedders.load_embedder("minilm", settings)
    mid.expect(LIGHT_MAX_TEXTS // 2)
    big.expect(LIGHT_MAX_TEXTS + 1)
    assert mid._full.runtime == "onnx"  # type: ignore[attr-defined]
    assert big._full.runtime == "torch"  # type: ignore[attr-defined]
    texts = ["Margaret Alder built Gull Point Light in 1871.", "The fog signal was a siren."]
    a = mid.embed(texts, kind="passage")
    b = big.embed(texts, kind="passage")
    assert float((a * b).sum(1).min()) > 0.999


# ------------------------------------------------------------------ text files


def test_text_sections_are_pages(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"\xef\xbb\xbfFirst part.\r\n\x0c\x0cThird part: caf\xc3\xa9.\n")
    doc = extract_text_document(notes)
    assert [(p.number, p.text) for p in doc.pages] == [(1, "First part."), (3, "Third part: café.")]
    assert doc.page_count == 3 and doc.extractor == "text"
    latin = tmp_path / "old.md"
    latin.write_bytes(b"Caf\xe9 notes")
    assert extract_text_document(latin).pages[0].text == "Café notes"
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\x0c\n")
    with pytest.raises(Exception, match="no text"):
        extract_text_document(empty)


def test_citation_labels_for_text_files() -> None:
    assert source_label("a.pdf", 3, 3) == "a.pdf p.3"
    assert source_label("notes.txt", 1, 1) == "notes.txt"
    assert source_label("notes.txt", 2, 2) == "notes.txt §2"
    assert source_label("plan.MD", 2, 3) == "plan.MD §2–3"
    assert Citation(1, "notes.txt", 2, 2).label == "notes.txt §2"


@pytest.mark.slow
def test_text_files_beside_pdfs_are_indexed_searched_and_cited(
    tmp_path: Path, sample_pdf: Path, model_cache: Path
) -> None:
    from ragchat.records import Passage

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "gull-point.pdf").write_bytes(sample_pdf.read_bytes())
    (docs / "crane.txt").write_text("The harbour crane was repaired by Ada Quill in March.\n")
    (docs / "budget.md").write_text("# Intro\nNothing here.\n\fThe budget was 4,000 pounds.\n")
    (docs / "ignored.csv").write_text("a,b\n")
    settings = load_settings({"cache_dir": model_cache})
    index = tmp_path / "idx"
    report = ingest([docs], index, settings)
    statuses = {Path(f.path).name: f.status for f in report.files}
    assert statuses == {"budget.md": "indexed", "crane.txt": "indexed", "gull-point.pdf": "indexed"}
    retriever = open_retriever(index, settings)
    best = retriever.search("Who repaired the harbour crane?", 1)[0]
    budget = retriever.search("How much was the budget?", 3)
    retriever.close()
    assert best.doc == "crane.txt" and best.page == 1
    hit = next(p for p in budget if p.doc == "budget.md")
    passage = Passage(1, hit.doc, hit.path, hit.page, hit.page_end, 1.0, hit.text)
    text, _ = render_citations("4,000 pounds [1]", [passage])
    assert "budget.md" in text and "p." not in text


# ------------------------------------------------------------------ deleted files


@pytest.mark.slow
def test_a_deleted_file_is_reported_missing_and_pruned_on_request(
    tmp_path: Path, model_cache: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha notes about the lighthouse keeper.\n")
    (docs / "b.txt").write_text("Beta notes about the fog signal.\n")
    # Unrouted: "fog signal" would keep to b.txt, the one file that names it, and the
    # check is that both files' chunks are still searchable until pruned.
    settings = load_settings({"cache_dir": model_cache, "route_documents": False})
    index = tmp_path / "idx"
    ingest([docs], index, settings)
    (docs / "b.txt").unlink()
    report = ingest([docs], index, settings)
    assert [(Path(f.path).name, f.status) for f in report.files if f.status == "missing"] == [
        ("b.txt", "missing")
    ]
    retriever = open_retriever(index, settings)
    assert {p.doc for p in retriever.search("fog signal", 5)} == {"a.txt", "b.txt"}
    retriever.close()
    pruned = ingest([docs], index, settings, prune=True)
    assert [f.status for f in pruned.files if Path(f.path).name == "b.txt"] == ["removed"]
    retriever = open_retriever(index, settings)
    assert {p.doc for p in retriever.search("fog signal", 5)} == {"a.txt"}
    retriever.close()


# ------------------------------------------------------------------ wording


def test_report_wording() -> None:
    assert speed(3, 3.5) == "1.2 s/page"  # below one page a second: s/page, not "0 pages/s"
    assert speed(60, 50) == "1.2 pages/s"
    assert speed(300, 10) == "30 pages/s"
    assert plural(1, "passage") == "1 passage" and plural(2, "chunk") == "2 chunks"
    report = IngestReport(
        index="default",
        files=[
            FileOutcome("/d/scan.pdf", "skipped", "scan.pdf: no extractable text"),
            FileOutcome("/d/odd.pdf", "indexed", "pypdf: cannot read; used pdfium", 30, 40),
            FileOutcome("/d/gone.pdf", "missing", "deleted from disk"),
        ],
        seconds=40.0,
    )
    out = io.StringIO()
    print_report(report, out)
    text = out.getvalue()
    assert "  skipped  /d/scan.pdf: no extractable text" in text  # the name once
    assert "read with PDFium instead (pypdf: cannot read)" in text
    assert "1 missing" in text and "30 pages, 40 chunks" in text
    assert "1.3 s/page" in text


def test_timing_line_says_what_was_waited_for() -> None:
    from ragchat.answer.qa import Answer, Timings
    from ragchat.cli.repl import timing_line

    timings = Timings(2.5, 0.01, 0.4, 3.0, 100, 5, 10.0)
    one = Answer("q", "a", False, (), (), timings)
    assert timing_line(one, ["the index"]).startswith("0 passages")
    assert "waited 2.5s for the index" in timing_line(one, ["the index"])
    assert "waited 2.5s for the index and the model" in timing_line(one, ["the index", "the model"])
    assert "waited" not in timing_line(one, [])


def test_ask_timing_line_of_an_abstention_before_the_model() -> None:
    from ragchat.answer.qa import Answer, Timings
    from ragchat.cli.render import timing_line

    timings = Timings(0.0, 0.01, None, 0.01, 0, 0, 0.0)
    early = Answer("q", "The documents don't say.", True, (), (), timings, decided_by="coverage")
    line = timing_line(early)
    assert line.startswith("retrieve 0.01s · none of the question's words occur")
    assert "0 tokens" not in line and "0 passages" not in line
    named = dataclasses.replace(early, decided_by="unknown_names")
    assert timing_line(named).startswith("retrieve 0.01s · the documents never mention")
    answered = Answer("q", "a", False, (), (), Timings(0.0, 0.01, 0.4, 3.0, 100, 5, 10.0))
    assert "5 tokens at 10.0 tok/s" in timing_line(answered)
    # a yes/no verdict: scored, nothing generated
    verdict = Answer("q", "Yes — ...", False, (), (), Timings(0.0, 0.01, None, 2.0, 90, 0, 0.0))
    assert timing_line(verdict) == "0 passages · retrieve 0.01s, total 2.0s"


def test_tab_completes_a_command_then_index_names() -> None:
    completer = SlashCompleter(lambda: ["default", "papers"], lambda: ["qwen0.5b"])

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("/ind") == ["/index "]  # with its space: the next Tab lists names
    assert complete("/index ") == ["default", "papers"]
    assert complete("/index pa") == ["papers"]
    assert complete("/he") == ["/help"]


@pytest.mark.slow
def test_mismatch_hint_names_an_index_opened_by_path(tmp_path: Path, model_cache: Path) -> None:
    from ragchat.errors import IndexMismatchError

    (tmp_path / "n.txt").write_text("Some notes about the fog signal.\n")
    settings = load_settings({"cache_dir": model_cache})
    index = tmp_path / "elsewhere"  # not under the index dir (tmp_path / "indexes")
    ingest([tmp_path / "n.txt"], index, settings)
    with pytest.raises(IndexMismatchError, match=f"ragchat rebuild {index} --embedder lm:x"):
        open_retriever(index, settings, "lm:x")
    named = settings.index_dir / "notes"
    ingest([tmp_path / "n.txt"], named, settings)
    with pytest.raises(IndexMismatchError, match="ragchat rebuild notes --embedder lm:x"):
        open_retriever(named, settings, "lm:x")
