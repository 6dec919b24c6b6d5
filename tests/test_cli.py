"""The command line: contracts scripts depend on (JSON shapes, exit codes), --help cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pdfmaker import make_pdf

from ragchat.cli.main import main

HEAVY = ("torch", "transformers", "faiss", "sentence_transformers")


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from ragchat.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['ingest', '--help'], ['search', '--help']):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search"]) == 2
    assert "usage" in capsys.readouterr().err


def test_ingest_json_search_json_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample_pdf: Path
) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_text("not a pdf")
    assert main(["ingest", str(bad), "--json", "--quiet"]) == 4
    capsys.readouterr()

    assert main(["ingest", str(sample_pdf), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    (entry,) = out["files"]
    assert entry["status"] == "indexed" and entry["reason"] is None
    assert entry["pages"] == 3 and entry["chunks"] > 0
    assert set(entry) >= {"path", "status", "reason", "pages", "chunks"}

    assert main(["ingest", str(sample_pdf), str(bad), "--json", "--quiet"]) == 3
    got = {Path(f["path"]).name: f["status"] for f in json.loads(capsys.readouterr().out)["files"]}
    assert got == {"gull-point.pdf": "unchanged", "bad.pdf": "skipped"}


def test_search_json_reads_stdin(tmp_path: Path, sample_pdf: Path) -> None:
    env = {**_env(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "ragchat.cli", "ingest", str(sample_pdf), "--quiet"],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ragchat.cli", "search", "--json", "-k", "2", "-"],
        input="Who built the lighthouse?\n\nWhen was the light automated?\n",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["query"] for x in lines] == [
        "Who built the lighthouse?",
        "When was the light automated?",
    ]
    first = lines[0]["results"]
    assert len(first) == 2
    assert set(first[0]) >= {"doc", "path", "page", "page_end", "score", "text"}
    assert first[0]["doc"] == "gull-point.pdf" and first[0]["page"] == 1
    assert "Margaret Alder" in first[0]["text"]
    assert any("1962" in r["text"] for r in lines[1]["results"])


def test_list_info_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample_pdf: Path
) -> None:
    docs = tmp_path / "d"
    docs.mkdir()
    make_pdf(["Alpha beta gamma. Delta epsilon."], docs / "a.pdf")
    assert main(["ingest", str(docs), "--index", "notes", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["indexes"]
    assert [i["name"] for i in listed] == ["notes"]
    assert main(["info", "notes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chunks"] == 1 and info["config"]["embedder"] == "minilm"
    assert main(["delete", "notes", "--yes"]) == 0
    assert main(["info", "notes"]) == 1
    assert "ragchat ingest" in capsys.readouterr().err


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "RAGCHAT_INDEX_DIR": str(tmp_path / "indexes")}


@pytest.mark.slow
def test_eval_scores_retrieval_and_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample_pdf: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {
            "id": "1",
            "question": "Who designed and built the Gull Point lighthouse?",
            "answers": ["Margaret Alder"],
            "doc": "gull-point.pdf",
            "page": 1,
            "pages": [1, 1],
        },
        {
            "id": "2",
            "question": "In which year was the light automated?",
            "answers": ["1962"],
            "doc": "gull-point.pdf",
            "page": 3,
            "pages": [3, 3],
        },
        {
            "id": "3",
            "question": "Who painted the lighthouse red?",
            "answers": [],
            "doc": "gull-point.pdf",
            "page": 1,
            "pages": [1, 1],
            "answerable": False,
        },
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            ["eval", str(questions), "--docs", str(sample_pdf.parent), "--retrieval-only", "--json"]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["retrieval"]["n"] == 2
    assert summary["retrieval"]["hit@5"] == 1.0
    assert summary["answers"] is None

    report = tmp_path / "rows.jsonl"
    assert (
        main(
            [
                "eval",
                str(questions),
                "--model",
                "smollm2",
                "--max-new-tokens",
                "12",
                "-k",
                "2",
                "--report",
                str(report),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    answers = summary["answers"]
    assert answers["n_answerable"] == 2 and answers["n_unanswerable"] == 1
    # time to first token and generation speed, per model (what docs/benchmarks.md reports)
    assert summary["latency"]["first_token_s"]["p50"] > 0
    speed = summary["latency"].get("tokens_per_s")
    assert speed is None or speed["p50"] > 0  # None: every answer abstained before the model
    per_question = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["id"] for r in per_question] == ["1", "2", "3"]
    assert all("answer" in r and "abstained" in r for r in per_question)
    # The summary is the mean of the per-question scores (an abstention scores 0).
    f1s = [r["f1"] for r in per_question if r["answerable"]]
    assert answers["f1"] == pytest.approx(sum(f1s) / len(f1s), abs=1e-3)
