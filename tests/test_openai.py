"""The openai backend and the openai:NAME embedder against real servers: the session starts
llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`, the `server`
extra that the README's test command installs) on 127.0.0.1, serving the packaged SmolLM2
GGUF for chat and a second one in embedding mode, and stops them at the end. `ask`,
`chat`, `eval` and `ingest` run through them. Failures the real server can't be made to
show (a stall, 503s, the API key header) come from tiny socket servers of the test's own."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ragchat.answer.qa import answer
from ragchat.cli.main import main
from ragchat.config import Settings, load_settings
from ragchat.errors import IndexMismatchError, UsageError
from ragchat.generation.formats import Message
from ragchat.ingest.pipeline import ingest
from ragchat.retrieval.retriever import open_retriever

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install -e '.[llama,server]'"
)
pytest.importorskip(
    "uvicorn", reason="llama-cpp-python's server extra is missing: pip install -e '.[server]'"
)

from ragchat.generation.llamacpp import LlamaCppGenerator
from ragchat.generation.loading import load_generator
from ragchat.generation.openai import OpenAIGenerator, parse_messages
from ragchat.openai_api import OpenAIClient, ServerUnavailableError, endpoint_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PDF = REPO / "docs" / "sample" / "gull-point.pdf"
DEMO_QUESTIONS = (
    "Who built the lighthouse?",
    "How far away could the light be seen?",
    "Who won the 1998 football world cup?",
)
QUESTION = [
    Message(
        "user",
        "Passage: The lighthouse was built by Margaret Alder in 1871.\n"
        "Question: Who built the lighthouse?",
    )
]


# `python -m llama_cpp.server`, loading its model as ragchat's in-process engine does (on
# an AMX CPU without the AMX kernels, llamacpp._without_amx_kernels), so that the two
# compute the same answers.
_SERVE = (
    "import pathlib, runpy, sys\n"
    "from ragchat.generation.llamacpp import _without_amx_kernels\n"
    "with _without_amx_kernels(pathlib.Path(sys.argv[sys.argv.index('--model') + 1])):\n"
    "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(gguf: Path, alias: str, log: Path, *extra: str) -> Iterator[str]:
    """`python -m llama_cpp.server` on 127.0.0.1 serving `gguf` as `alias`; yields its
    base URL (…/v1) once /v1/models answers, stops it afterwards."""
    port = free_port()
    args = [
        sys.executable, "-c", _SERVE, "--model", str(gguf), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", *extra,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-2000:]
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}): {tail}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                client = OpenAIClient(endpoint_for(Settings(), url, "test"))
                with contextlib.suppress(Exception):
                    client.models()
                    client.close()
                    break
                client.close()
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def smol_gguf(model_cache: Path) -> Path:
    from ragchat.weights import resolve_gguf

    gguf = resolve_gguf("smollm2", Settings(cache_dir=model_cache))
    assert gguf is not None
    return gguf


@pytest.fixture(scope="session")
def chat_server(smol_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chat server: SmolLM2 with the context and batch of the in-process engine, so its
    greedy tokens are the same."""
    log = tmp_path_factory.mktemp("server") / "chat.log"
    with llama_server(smol_gguf, "smollm2", log, "--n_ctx", "4096", "--n_batch", "256") as url:
        yield url


@pytest.fixture(scope="session")
def embed_server(smol_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "embed.log"
    with llama_server(smol_gguf, "smol-embed", log, "--embedding", "true") as url:
        yield url


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the developer's environment must not reach these servers."""
    for var in ("OPENAI_API_KEY", "RAGCHAT_OPENAI_API_KEY", "RAGCHAT_OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    settings = Settings(cache_dir=model_cache)
    path = tmp_path_factory.mktemp("indexes") / "sample"
    assert ingest([SAMPLE_PDF], path, settings).count("indexed") == 1
    return path


@pytest.fixture(scope="module")
def in_process(model_cache: Path) -> LlamaCppGenerator:
    gen = load_generator("smollm2", Settings(cache_dir=model_cache, backend="llamacpp", threads=2))
    assert isinstance(gen, LlamaCppGenerator)
    return gen


def remote_settings(url: str, model_cache: Path, **changes: Any) -> Settings:
    base = Settings(cache_dir=model_cache, backend="openai", model="smollm2", openai_base_url=url)
    return base.replace(**changes)


@pytest.fixture(scope="module")
def remote(chat_server: str, model_cache: Path) -> OpenAIGenerator:
    gen = load_generator("smollm2", remote_settings(chat_server, model_cache, openai_logprobs=True))
    assert isinstance(gen, OpenAIGenerator)
    return gen


# -- the generator ------------------------------------------------------------------------


def test_streams_the_in_process_greedy_answer_with_its_logprobs(
    remote: OpenAIGenerator, in_process: LlamaCppGenerator
) -> None:
    prompt = remote.format_prompt(QUESTION)
    assert parse_messages(prompt) == QUESTION  # the messages travel as they are
    pieces = list(remote.stream(prompt, max_new_tokens=24))
    local = "".join(in_process.stream(in_process.format_prompt(QUESTION), max_new_tokens=24))
    assert "".join(pieces) == local
    assert len(pieces) >= 3  # streamed, not one block at the end
    stats, local_stats = remote.last_stats, in_process.last_stats
    assert stats is not None and local_stats is not None
    assert stats.stop_reason == local_stats.stop_reason
    assert stats.gen_tokens == local_stats.gen_tokens
    # The signal the in-process abstention rule uses: the greedy tokens' log-probabilities.
    assert stats.answer_logprobs == pytest.approx(local_stats.answer_logprobs, abs=0.05)
    assert stats.first_token_s is not None and stats.prompt_tokens > 20


def test_stop_sequences_end_the_answer_where_in_process_does(
    remote: OpenAIGenerator, in_process: LlamaCppGenerator
) -> None:
    full = remote.generate(remote.format_prompt(QUESTION), max_new_tokens=24)
    words = full.split()
    assert len(words) >= 3
    stop = (" " + words[2],)
    cut = "".join(remote.stream(remote.format_prompt(QUESTION), max_new_tokens=24, stop=stop))
    assert cut == full[: full.index(stop[0])]
    assert remote.last_stats is not None and remote.last_stats.stop_reason in ("stop", "eos")
    local = in_process.generate(in_process.format_prompt(QUESTION), max_new_tokens=24, stop=stop)
    assert cut == local


def test_cancel_closes_the_request_and_the_server_serves_the_next(
    remote: OpenAIGenerator,
) -> None:
    cancel = threading.Event()
    essay = [Message("user", "Write a long story about a lighthouse keeper.")]
    pieces = []
    for piece in remote.stream(remote.format_prompt(essay), max_new_tokens=300, cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert remote.last_stats is not None
    assert remote.last_stats.stop_reason == "cancelled"
    assert len(pieces) == 1
    # The server is free again: the next request is answered in full.
    assert remote.generate(remote.format_prompt(QUESTION), max_new_tokens=8)


def test_token_counts_come_from_the_server_tokenizer(
    remote: OpenAIGenerator, in_process: LlamaCppGenerator
) -> None:
    text = "The lighthouse at Gull Point was first lit in 1871."
    assert remote.count_tokens(text) == pytest.approx(in_process.count_tokens(text), abs=1)
    # A rendered prompt: contents plus ChatML's markup, close to the real template's count.
    # (With a system message: SmolLM2's and Qwen's templates add a default one otherwise.)
    messages = [Message("system", "Answer from the passage."), *QUESTION]
    rendered = in_process.count_tokens(in_process.format_prompt(messages))
    assert remote.count_tokens(remote.format_prompt(messages)) == pytest.approx(rendered, abs=3)


def test_answers_match_in_process_llamacpp(
    remote: OpenAIGenerator, in_process: LlamaCppGenerator, sample_index: Path, model_cache: Path
) -> None:
    retriever = open_retriever(sample_index, Settings(cache_dir=model_cache))
    try:
        for question in DEMO_QUESTIONS:
            ours = answer(question, retriever, remote, k=3, max_new_tokens=24)
            theirs = answer(question, retriever, in_process, k=3, max_new_tokens=24)
            assert ours.raw_text == theirs.raw_text, question
            assert [p.chunk_id for p in ours.passages] == [p.chunk_id for p in theirs.passages]
    finally:
        retriever.close()


# -- the commands ---------------------------------------------------------------------------


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(argv)
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_through_the_server_gives_the_in_process_answers(
    chat_server: str, sample_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["ask", "-", "--index", str(sample_index), "--json", "--max-new-tokens", "24"]
    stdin = "\n".join(DEMO_QUESTIONS) + "\n"
    code, out, err = run_main(
        [*common, "--backend", "openai", "--base-url", chat_server, "--model", "smollm2"],
        capsys,
        stdin,
    )
    assert code == 0, err
    ours = [json.loads(line) for line in out.splitlines()]
    local = [*common, "--backend", "llamacpp", "--model", "smollm2"]
    code, out, err = run_main(local, capsys, stdin)
    assert code == 0, err
    theirs = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in ours] == list(DEMO_QUESTIONS)
    # The in-process engine may overrule a guess with its no-answer score, which the
    # server can't give (docs/models.md); where it didn't, the answers are the same.
    for mine, local in zip(ours, theirs, strict=True):
        if not local["abstained"] or mine["abstained"]:
            assert mine["answer_cited"] == local["answer_cited"]
    assert ours[2]["abstained"]  # off-topic: abstained before the model, on both


def test_chat_streams_rewrites_follow_ups_and_stops_on_ctrl_c(
    chat_server: str, sample_index: Path, model_cache: Path
) -> None:
    from prompt_toolkit.input import create_pipe_input
    from test_repl import CaptureOutput

    from ragchat.cli.repl import ChatConsole

    settings = remote_settings(chat_server, model_cache, k=3, max_new_tokens=200)
    lines = [
        "When was the lighthouse first lit?",
        "and who was its first keeper?",
        # An explanation: streamed as it is made (a lookup is shown once decided).
        "Describe the history of Gull Point lighthouse in detail.",
        "/quit",
    ]
    out = CaptureOutput()
    with create_pipe_input() as pipe:
        pipe.send_text("".join(line + "\r" for line in lines))
        console = ChatConsole(settings, sample_index, pt_input=pipe, pt_output=out)
        out.streaming = console.streaming

        def press_ctrl_c() -> None:
            # Ctrl-C (a real SIGINT to the main thread) during the third answer.
            while len(console.answers) < 2:
                time.sleep(0.05)
            if console.streaming.wait(timeout=300):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c, daemon=True)
        presser.start()
        assert console.run() == 0
        presser.join()
    first, second, third = console.answers
    assert first.timings.gen_tokens > 0 and not first.cancelled
    assert out.streamed_writes >= 2
    # The follow-up was rewritten by the served model, with the first turn as history.
    assert second.standalone_question and second.standalone_question != second.question
    assert third.cancelled and "[stopped]" in out.text
    assert len(console.history) == 2


def test_eval_through_the_server(
    chat_server: str, sample_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"id": "1", "question": DEMO_QUESTIONS[0], "answers": ["Margaret Alder"],
         "doc": "gull-point.pdf", "page": 1},
        {"id": "2", "question": DEMO_QUESTIONS[2], "answers": [], "doc": "gull-point.pdf",
         "page": 1},
    ]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run_main(
        ["eval", str(questions), "--index", str(sample_index), "--json", "--backend", "openai",
         "--base-url", chat_server, "--model", "smollm2", "--max-new-tokens", "24"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["model"] == "smollm2"
    assert summary["answers"]["n_unanswerable"] == 1
    assert summary["answers"]["abstain_unanswerable"] == 1.0


def test_ingest_and_search_with_the_server_embedder(
    embed_server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAGCHAT_OPENAI_EMBED_BASE_URL", embed_server)
    index = str(tmp_path / "remote")
    code, out, err = run_main(
        ["ingest", str(SAMPLE_PDF), "--index", index, "--embedder", "openai:smol-embed",
         "--json", "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["files"][0]["status"] == "indexed"
    code, out, err = run_main(["info", index, "--json"], capsys)
    assert code == 0 and "openai:smol-embed" in out
    code, out, err = run_main(
        ["search", "Who built the lighthouse?", "--index", index, "--method", "dense", "--json"],
        capsys,
    )
    assert code == 0, err
    results = json.loads(out)["results"]
    assert results and all(r["doc"] == "gull-point.pdf" for r in results)
    # Another embedder on this index is refused, as for any embedder.
    with pytest.raises(IndexMismatchError, match="openai:smol-embed"):
        ingest([SAMPLE_PDF], Path(index), load_settings(), embedder_spec="minilm")


def test_server_embedder_batches_match_single_requests(embed_server: str) -> None:
    from ragchat.retrieval.embedders import load_embedder

    settings = Settings(openai_embed_base_url=embed_server)
    embedder = load_embedder("openai:smol-embed", settings)
    assert embedder.id == "openai:smol-embed" and embedder.dim == 576
    texts = ["The lighthouse was lit in 1871.", "Margaret Alder built it.", "Gulls nest here."]
    together = embedder.embed(texts, kind="passage", batch_size=3)
    one_by_one = [embedder.embed([t], kind="passage")[0] for t in texts]
    assert together.shape == (3, 576)
    for row, single in zip(together, one_by_one, strict=True):
        assert float(row @ single) == pytest.approx(1.0, abs=1e-4)
    assert float(together[0] @ together[0]) == pytest.approx(1.0, abs=1e-5)


# -- failures ------------------------------------------------------------------------------


def test_server_down_is_one_clear_line_and_a_nonzero_exit(
    sample_index: Path, model_cache: Path
) -> None:
    """What the user sees, in a real process: no traceback."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {**os.environ, "RAGCHAT_CACHE_DIR": str(model_cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "ragchat", "ask", "Who built the lighthouse?", "--index",
         str(sample_index), "--backend", "openai", "--base-url", url, "--model", "smollm2"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ragchat: cannot reach the server at {url}")
    assert "Traceback" not in proc.stderr and not proc.stdout.strip()


def test_unknown_model_lists_what_the_server_offers(chat_server: str, model_cache: Path) -> None:
    with pytest.raises(UsageError, match=r"has no model 'qwen9b'; it offers: smollm2\."):
        load_generator("qwen9b", remote_settings(chat_server, model_cache))


def test_missing_base_url_says_how_to_give_it(model_cache: Path) -> None:
    with pytest.raises(UsageError, match="--base-url"):
        load_generator("smollm2", remote_settings("", model_cache))


def test_a_silent_server_is_a_read_timeout(
    sample_index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts the connection and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        monkeypatch.setenv("RAGCHAT_OPENAI_READ_TIMEOUT_S", "1")
        code, _, err = run_main(
            ["ask", "Who built the lighthouse?", "--index", str(sample_index), "--backend",
             "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "smollm2"],
            capsys,
        )  # fmt: skip
    assert code == 1
    assert err.strip().splitlines() == [
        f"ragchat: the server at http://127.0.0.1:{port}/v1 stopped answering: nothing for "
        "1 s (read timeout); check that it is not stuck or overloaded, or raise "
        "openai_read_timeout_s."
    ]


class ScriptedServer(ThreadingHTTPServer):
    """An OpenAI-style server that answers /v1/models, fails the first `fail` chat requests
    with 503, then streams one piece and goes silent for `stall_s`. Records the
    Authorization headers it got."""

    def __init__(self, fail: int = 0, stall_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.fail = fail
        self.stall_s = stall_s
        self.chat_requests = 0
        self.authorization: list[str] = []
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.authorization.append(self.headers.get("Authorization", ""))
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.authorization.append(self.headers.get("Authorization", ""))
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        self.server.chat_requests += 1
        if self.server.chat_requests <= self.server.fail:
            self._json(503, {"error": {"message": "loading model"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Margaret", " Alder"):
            event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            if self.server.stall_s:
                self.server.released.wait(self.server.stall_s)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())


@contextlib.contextmanager
def scripted(fail: int = 0, stall_s: float = 0.0) -> Iterator[ScriptedServer]:
    server = ScriptedServer(fail, stall_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


def test_a_stall_mid_answer_is_a_clear_error(model_cache: Path) -> None:
    with scripted(stall_s=30) as server:
        settings = remote_settings(server.url, model_cache, model="m", openai_read_timeout_s=1)
        gen = load_generator("m", settings)
        pieces: list[str] = []
        with pytest.raises(ServerUnavailableError, match="stopped answering: nothing for 1 s"):
            pieces.extend(gen.stream(gen.format_prompt(QUESTION), max_new_tokens=8))
        assert pieces == ["Margaret"]


def test_503_is_retried_with_backoff_and_the_key_is_sent_not_shown(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('openai_api_key = "from-config"\n', encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "generic-key")
    # ragchat's own variable first, then config.toml, then the generic OPENAI_API_KEY.
    assert load_settings(config_file=config).openai_api_key == "from-config"
    assert load_settings().openai_api_key == "generic-key"
    monkeypatch.setenv("RAGCHAT_OPENAI_API_KEY", "sk-test-123")
    settings = load_settings(config_file=config)
    assert settings.openai_api_key == "sk-test-123"
    assert "sk-test-123" not in repr(settings)
    with scripted(fail=2) as server:
        settings = settings.replace(openai_base_url=server.url, backend="openai", model="m")
        gen = load_generator("m", settings)
        assert gen.generate(gen.format_prompt(QUESTION), max_new_tokens=8) == "Margaret Alder"
        assert server.chat_requests == 3  # two 503s, then the answer
        assert set(server.authorization) == {"Bearer sk-test-123"}
        with pytest.raises(UsageError) as failure:
            load_generator("other", settings)
    assert "sk-test-123" not in str(failure.value)


def test_help_does_not_import_the_http_client() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from ragchat.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['ask', '--help'], ['chat', '--help']):\n"
        "        with contextlib.suppress(SystemExit):\n"
        "            main(argv)\n"
        "print('httpx2' in sys.modules, 'ragchat.openai_api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
