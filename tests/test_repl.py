"""The chat console driven through prompt_toolkit's pipe input, over a real index of the sample
PDF and the real smollm2 model (a few greedy tokens)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from ragchat.cli.repl import ChatConsole, SlashCompleter, run_repl
from ragchat.config import Settings, load_settings
from ragchat.errors import IndexNotFoundError
from ragchat.ingest.pipeline import ingest

SAMPLE_PDF = Path(__file__).resolve().parents[1] / "docs" / "sample" / "gull-point.pdf"


class CaptureOutput(DummyOutput):
    """A prompt_toolkit Output that keeps what is written (no terminal needed) and counts
    the writes made while `streaming` is set."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.streaming: threading.Event | None = None
        self.streamed_writes = 0

    def write(self, data: str) -> None:
        self.parts.append(data)
        if self.streaming is not None and self.streaming.is_set():
            self.streamed_writes += 1

    def write_raw(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.parts).replace("\r", "")


@pytest.fixture(scope="module")
def chat_settings(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Settings:
    """Settings for a small, fast console: smollm2, 3 passages, short answers, a fresh index
    dir holding the sample PDF as `default`."""
    root = tmp_path_factory.mktemp("chat")
    settings = load_settings(
        {
            "index_dir": root / "indexes",
            "cache_dir": model_cache,
            "model": "smollm2",
            "k": 3,
            "max_new_tokens": 16,
            # Fixed: the default follows the machine's load, and smollm2's greedy answer
            # changes with the thread count (the Ctrl-C test needs a long one).
            "threads": 2,
        },
        env={},
        config_file=root / "no-config.toml",
    )
    report = ingest([SAMPLE_PDF], settings.index_dir / "default", settings)
    assert report.count("indexed") == 1
    return settings


@contextlib.contextmanager
def console_with(
    settings: Settings, lines: list[str], close: bool = True
) -> Iterator[tuple[ChatConsole, CaptureOutput]]:
    """A console over the `default` index, typed `lines` (then EOF when `close`); not run."""
    out = CaptureOutput()
    with create_pipe_input() as pipe:
        pipe.send_text("".join(line + "\r" for line in lines))
        if close:
            pipe.close()
        console = ChatConsole(
            settings, settings.index_dir / "default", pt_input=pipe, pt_output=out
        )
        out.streaming = console.streaming
        yield console, out


def test_question_follow_up_sources_and_commands(chat_settings: Settings) -> None:
    lines = [
        "When was the lighthouse first lit?",
        "/sources",
        "and who was its first keeper?",
        "/k 2",
        "/kk",
        "/help",
        "/clear",
    ]
    with console_with(chat_settings, lines) as (console, out):
        assert console.run() == 0  # EOF on the pipe is Ctrl-D
    text = out.text
    first, second = console.answers
    # Streamed: the answer arrived as several writes while streaming, then a timing line.
    assert first.timings.gen_tokens > 0 and not first.cancelled
    assert out.streamed_writes >= 2
    assert first.text.split()[0] in text
    assert text.count("tok/s") == 2 and "first token" in text
    # /sources lists the passages behind the answer.
    sources = text.split("> /sources", 1)[1]
    assert "1. gull-point.pdf p." in sources and "score" in sources
    # The follow-up went through the condense step with the first turn as history.
    assert second.question == "and who was its first keeper?"
    assert second.standalone_question and second.standalone_question != second.question
    assert f"→ {second.standalone_question}" in text
    # Commands.
    assert console.k == 2 and "each question retrieves 2 passages" in text
    assert "unknown command /kk — did you mean /k?" in text
    assert "/sources" in text.split("> /help", 1)[1]
    assert console.history == [] and "conversation forgotten" in text


def test_ctrl_c_stops_the_answer_and_keeps_the_session(chat_settings: Settings) -> None:
    settings = chat_settings.replace(max_new_tokens=200)
    lines = ["Tell me everything about the history of Gull Point lighthouse.", "/k 4", "/quit"]
    with console_with(settings, [*lines, "/k 1"], close=False) as (console, out):

        def press_ctrl_c() -> None:
            # A real SIGINT to the main thread, as the terminal sends for Ctrl-C.
            if console.streaming.wait(timeout=300):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c, daemon=True)
        presser.start()
        assert console.run() == 0  # by /quit: the "/k 1" after it is never read
        presser.join()
    (stopped,) = console.answers
    assert stopped.cancelled
    assert 0 < stopped.timings.gen_tokens < 200
    assert "[stopped]" in out.text
    assert console.history == []  # a stopped answer is not part of the conversation
    assert console.k == 4


def test_model_failure_is_shown_and_the_loop_goes_on(chat_settings: Settings) -> None:
    settings = chat_settings.replace(model="./no-such-model")
    lines = ["Who built the lighthouse?", "/k 7", "/index missing", "/index", "/sources"]
    with console_with(settings, lines) as (console, out):
        assert console.run() == 0
    text = out.text
    assert "error: model './no-such-model' is neither a preset" in text
    assert "/model NAME loads another model" in text
    assert console.k == 7 and console.answers == []
    assert "error: no index at" in text and "ragchat ingest" in text
    assert "indexes: default" in text
    assert "no answer yet" in text


def test_missing_index_fails_before_the_loop(chat_settings: Settings) -> None:
    with create_pipe_input() as pipe, pytest.raises(IndexNotFoundError, match="ragchat ingest"):
        run_repl(
            chat_settings, chat_settings.index_dir / "nope", pt_input=pipe, pt_output=DummyOutput()
        )


def test_completion_of_commands_indexes_and_presets() -> None:
    completer = SlashCompleter(lambda: ["default", "papers"], lambda: ["qwen0.5b", "smollm2"])

    def complete(text: str) -> list[str]:
        doc = Document(text, len(text))
        return [c.text for c in completer.get_completions(doc, CompleteEvent())]

    assert complete("/s") == ["/sources"]
    assert complete("/index ") == ["default", "papers"]
    assert complete("/index pa") == ["papers"]
    assert complete("/model sm") == ["smollm2"]
    assert complete("what is") == []
