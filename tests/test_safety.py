"""ragchat never harms what it does not own, and an index folder cannot run code: writers
and `delete` touch only folders ragchat made; `rebuild` beside an ingest loses nothing;
a bad stdin line is one error line; chat history is private and bounded; passwords stay
out of argv, output and the index; a pickle payload in an index is inert. Real PDFs,
real pypdf, the packaged MiniLM, real SQLite/FAISS in tmp_path."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from pdfmaker import make_pdf

from ragchat.cli.common import LazyLines, passwords_from, settings_from
from ragchat.cli.main import build_parser, main
from ragchat.cli.repl import _history
from ragchat.config import Settings, load_settings
from ragchat.errors import IndexNotFoundError, UsageError
from ragchat.index.store import DATABASE, MANIFEST, MARKER, IndexStore, delete_index
from ragchat.ingest.pipeline import IngestProgress, ingest, rebuild

REPO = Path(__file__).resolve().parents[1]

LIGHTHOUSE = (
    "The lighthouse at Gull Point was built by the engineer Margaret Alder.\n"
    "Work began in 1869 and the light was first lit in October 1871."
)
BAKERY = "The village bakery sells rye bread and cinnamon buns every morning."


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {"index_dir": tmp_path / "indexes", "chunk_tokens": 32, "chunk_overlap": 4}
    )


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A fake home folder with the user's own files in it."""
    folder = tmp_path / "home"
    (folder / "Documents").mkdir(parents=True)
    (folder / "Documents" / "taxes.txt").write_text("mine")
    make_pdf([LIGHTHOUSE], folder / "light.pdf")
    return folder


# ------------------------------------------------------------------ only ragchat's folders


def test_an_existing_folder_is_never_turned_into_an_index(home: Path, settings: Settings) -> None:
    report = None
    with pytest.raises(UsageError, match="did not make"):
        report = ingest([home / "light.pdf"], home, settings)
    assert report is None
    assert sorted(p.name for p in home.iterdir()) == ["Documents", "light.pdf"]


def test_delete_refuses_a_folder_ragchat_did_not_make(home: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="only folders it made"):
        delete_index(home)
    assert (home / "Documents" / "taxes.txt").read_text() == "mine"
    # the CLI says so too, exit 1, no traceback
    assert main(["delete", str(home), "--yes"]) == 1
    assert (home / "light.pdf").is_file()


def test_delete_removes_only_ragchats_own_files(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    ingest([home / "light.pdf"], index, settings)
    (index / "notes.txt").write_text("the user put this here")
    assert delete_index(index) == ["notes.txt"]
    assert sorted(p.name for p in index.iterdir()) == ["notes.txt"]
    (index / "notes.txt").unlink()
    ingest([home / "light.pdf"], index, settings)
    assert delete_index(index) == [] and not index.exists()


def test_an_index_from_before_the_marker_is_recognised_and_marked(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    ingest([home / "light.pdf"], index, settings)
    (index / MARKER).unlink()
    with IndexStore.open(index) as store:
        assert store.chunk_count() > 0
    assert (index / MARKER).is_file()
    # ... but a manifest and database of someone else's are not an index
    other = tmp_path / "other"
    other.mkdir()
    (other / MANIFEST).write_text('{"config": {}}')
    (other / DATABASE).write_bytes(b"")
    with pytest.raises(IndexNotFoundError):
        IndexStore.open(other)
    assert (other / DATABASE).read_bytes() == b""  # looked at, not changed


# ------------------------------------------------------------------ rebuild beside ingest


def test_rebuild_beside_an_ingest_loses_nothing(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    make_pdf([BAKERY], tmp_path / "bakery.pdf")
    ingest([home / "light.pdf"], index, settings)
    waiting = threading.Event()
    outcome: list[object] = []

    def late_ingest() -> None:
        def progress(event: IngestProgress) -> None:
            if event.stage == "wait":
                waiting.set()

        outcome.append(ingest([tmp_path / "bakery.pdf"], index, settings, progress=progress))

    thread = threading.Thread(target=late_ingest)

    def rebuild_progress(event: IngestProgress) -> None:
        # Rebuild holds the lock from its start: an ingest started now must wait for it.
        if event.stage == "start":
            thread.start()
            assert waiting.wait(60), "the ingest did not wait for rebuild"

    rebuild(index, settings, chunk_tokens=24, progress=rebuild_progress)
    thread.join(120)
    report = outcome[0]
    assert [f.status for f in report.files] == ["indexed"]  # type: ignore[attr-defined]
    with IndexStore.open(index) as store:
        names = sorted(s.name for s in store.sources())
        assert names == ["bakery.pdf", "light.pdf"]
        assert store.config.chunk_tokens == 24  # the rebuilt settings, not the old ones
        assert store.vector_index().ntotal == store.chunk_count()
        assert len(store.lexical_index()) == store.chunk_count()
    manifest = json.loads((index / MANIFEST).read_text())
    assert manifest["config"]["chunk_tokens"] == 24 and len(manifest["sources"]) == 2


# ------------------------------------------------------------------ stdin


def test_a_non_utf8_stdin_line_is_one_error_and_the_batch_goes_on(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    ingest([home / "light.pdf"], index, settings)
    lines = b"who built the lighthouse?\n\xff\xfe bad \xc3\n\nwhen was it first lit?\n"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragchat",
            "search",
            "--json",
            "-k",
            "1",
            "--index",
            str(index),
            "-",
        ],
        input=lines,
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert b"Traceback" not in run.stderr, run.stderr.decode()
    rows = [json.loads(line) for line in run.stdout.decode().splitlines()]
    assert [r["query"] for r in rows] == [
        "who built the lighthouse?",
        "\ufffd\ufffd bad \ufffd",
        "when was it first lit?",
    ]
    assert "results" in rows[0] and "results" in rows[2]
    assert "line 2 of stdin is not valid UTF-8" in rows[1]["error"]
    assert run.returncode == 1


def test_lazy_lines_reads_text_streams_too() -> None:
    assert list(LazyLines(io.StringIO("a\n\n b \n"))) == ["a", "b"]


# ------------------------------------------------------------------ chat history


def test_chat_history_is_private_bounded_and_can_be_off(tmp_path: Path) -> None:
    settings = load_settings({"cache_dir": tmp_path / "cache", "chat_history_size": 3})
    path = settings.cache_dir / "chat-history"
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"\n# 2026-01-0{i}\n+question {i}\n" for i in range(1, 7)))
    path.chmod(0o644)
    history = _history(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(history.load_history_strings()) == ["question 6", "question 5", "question 4"]
    history.store_string("question 7")
    assert "question 7" in path.read_text()

    off = settings.replace(chat_history=False)
    path.unlink()
    in_memory = _history(off)
    in_memory.store_string("secret question")
    assert not path.exists()


def test_a_new_history_file_is_private(tmp_path: Path) -> None:
    settings = load_settings({"cache_dir": tmp_path / "cache"})
    _history(settings)
    assert stat.S_IMODE((settings.cache_dir / "chat-history").stat().st_mode) == 0o600


# ------------------------------------------------------------------ passwords


def _encrypted(src: Path, dst: Path, password: str) -> Path:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(src))
    writer.encrypt(user_password=password, owner_password="owner-" + password, algorithm="AES-128")
    with open(dst, "wb") as fh:
        writer.write(fh)
    return dst


def test_passwords_come_from_flags_file_and_environment(tmp_path: Path) -> None:
    file = tmp_path / "P"
    file.write_text("from-file-1\n\n  spaced  \nfrom-file-2\n", encoding="utf-8")
    args = build_parser().parse_args(
        ["ingest", "x.pdf", "--password", "a", "--password", "b", "--password-file", str(file)]
    )
    settings = settings_from(args, env={"RAGCHAT_PASSWORD": "from-env"})
    assert passwords_from(args, settings) == [
        "a",
        "b",
        "from-env",
        "from-file-1",
        "  spaced  ",
        "from-file-2",
    ]
    assert "from-env" not in repr(settings)
    args = build_parser().parse_args(["ingest", "x.pdf"])
    settings = settings_from(args, env={"RAGCHAT_PASSWORD_FILE": str(tmp_path / "nope")})
    with pytest.raises(UsageError, match="cannot read the password file"):
        passwords_from(args, settings)


def test_each_password_is_tried_and_none_is_shown_or_stored(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    plain = tmp_path / "plain.pdf"
    make_pdf([LIGHTHOUSE], plain)
    _encrypted(plain, docs / "one.pdf", "first-Secret")
    make_pdf([BAKERY], plain)
    _encrypted(plain, docs / "two.pdf", "second-Secret")
    make_pdf(["A third file about tidal clocks and brass gears."], plain)
    _encrypted(plain, docs / "three.pdf", "unknown-Secret")
    file = tmp_path / "P"
    file.write_text("first-Secret\nsecond-Secret\n", encoding="utf-8")
    index = tmp_path / "idx"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragchat",
            "ingest",
            str(docs),
            "--index",
            str(index),
            "--password-file",
            str(file),
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAGCHAT_PASSWORD": "env-Secret"},
        timeout=300,
    )
    report = json.loads(run.stdout)
    got = {Path(f["path"]).name: (f["status"], f["reason"]) for f in report["files"]}
    assert got["one.pdf"][0] == "indexed" and got["two.pdf"][0] == "indexed"
    assert got["three.pdf"] == (
        "failed",
        "three.pdf: encrypted: none of the 3 passwords given (--password, --password-file) "
        "opens it",
    )
    everything = run.stdout + run.stderr
    for folder in (index,):
        for f in folder.rglob("*"):
            if f.is_file():
                everything += f.read_bytes().decode("latin-1")
    for secret in ("first-Secret", "second-Secret", "env-Secret"):
        assert secret not in everything


# ------------------------------------------------------------------ an index runs no code


class _Payload:
    """Unpickling this writes a file: proof that a pickle was executed."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (self.target, "pwned"))


def test_a_pickle_payload_in_an_index_is_inert(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    ingest([home / "light.pdf"], index, settings)
    proof = tmp_path / "pwned.txt"
    payload = pickle.dumps(_Payload(proof))
    # 1. the BM25 file as an npz holding an object array (np.save pickles those) ...
    with open(index / "lexical" / "lexical.npz", "wb") as fh:
        np.savez(fh, meta=np.array([_Payload(proof)], dtype=object))
    # 2. ... and as a bare pickle; 3. the embedder state in SQLite as a pickle
    import sqlite3

    db = sqlite3.connect(index / DATABASE)
    with db:
        db.execute("INSERT OR REPLACE INTO embedder_state VALUES ('mean', ?)", (payload,))
    db.close()
    with IndexStore.open(index) as store:
        hits = store.lexical_index().search("lighthouse", 3)
        assert hits  # rebuilt from SQLite, the payload ignored
        with pytest.raises(ValueError):  # raw bytes, never unpickled
            store.embedder_state()
    (index / "lexical" / "lexical.npz").write_bytes(payload)
    with IndexStore.open(index) as store:
        store._lexical = None
        assert store.lexical_index().search("lighthouse", 3)
    assert not proof.exists()


def test_nothing_in_ragchat_unpickles() -> None:
    """Every np.load says allow_pickle=False; no pickle, torch.load or eval on index data."""
    for path in (REPO / "ragchat").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "cPickle", "dill", "joblib"} & set(names), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else ""
                if (owner_name, node.func.attr) == ("np", "load"):
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("allow_pickle")
                    assert isinstance(value, ast.Constant) and value.value is False, path
                assert (owner_name, node.func.attr) != ("torch", "load"), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), path


def test_index_folders_hold_only_known_kinds_of_files(
    home: Path, settings: Settings, tmp_path: Path
) -> None:
    """What docs/security.md lists is what an index folder holds."""
    index = tmp_path / "idx"
    ingest([home / "light.pdf"], index, settings)
    names = sorted(str(p.relative_to(index)) for p in index.rglob("*") if p.is_file())
    assert names == sorted(
        [
            ".lock",
            MARKER,
            DATABASE,
            MANIFEST,
            "lexical.generation",
            "lexical/lexical.npz",
            "vectors.faiss",
            "vectors.faiss.generation",
        ]
    )
    shutil.rmtree(index)
