"""The interactive console (`ragchat chat`): a prompt_toolkit session over one index.

The model loads in a background thread from the moment the console opens, so the user types
the first question while it loads. Each answer runs in a worker thread that streams text
through a queue; the main thread prints it and turns Ctrl-C into the answer's cancel Event,
so a stopped answer never ends the session.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from ragchat.answer.citations import source_label
from ragchat.answer.prompts import Turn
from ragchat.answer.story import is_summary
from ragchat.cli.common import silence_library_bars
from ragchat.cli.render import before_the_model
from ragchat.config import Settings
from ragchat.errors import RagchatError
from ragchat.retrieval.retriever import Retriever

if TYPE_CHECKING:
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from ragchat.answer.qa import Answer
    from ragchat.generation.base import Generator


# name -> (argument, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "this list"),
    "/sources": ("", "the passages behind the last answer (* = cited)"),
    "/k": ("N", "retrieve N passages per question"),
    "/index": ("NAME", "switch to another index (no NAME: list them)"),
    "/model": ("NAME", "load another model in the background (no NAME: list presets)"),
    "/clear": ("", "forget the conversation (follow-ups start afresh)"),
    "/quit": ("", "leave (Ctrl-D does too)"),
}


ALIASES = {"/exit": "/quit", "/q": "/quit", "/?": "/help"}


MAX_K = 50


SNIPPET_CHARS = 300


# Ctrl-C gives the prompt back after at most this long, whatever the worker is doing.
STOP_WAIT_S = 0.5


# Leaving the console waits this long for a stopped answer that is still ending.
STOP_COLLECT_S = 10.0


STYLE = Style.from_dict(
    {
        "note": "#8a8a8a",
        "query": "#8a8a8a italic",
        "error": "ansired",
        "prompt": "bold",
        "cited": "ansigreen",
        "bottom-toolbar": "noreverse #8a8a8a bg:default",
    }
)


Event = tuple[str, Any]


T = TypeVar("T")


ProgressCallback = Callable[[int, int], None]


# transformers switches torch's process-wide default dtype while it builds a model, so two
# models loading at once (the embedder and the LM) corrupt each other's weights: loads take
# turns under this lock.
_LOAD_LOCK = threading.Lock()


class Loading(Generic[T]):
    """Runs `load(on_progress)` in a daemon thread, under the process's load lock, after
    `after` has finished. The thread cannot be stopped: a replaced loading finishes in the
    background and its result is dropped."""

    def __init__(
        self,
        what: str,
        load: Callable[[ProgressCallback], T],
        after: Loading[Any] | None = None,
        exclusive: bool = True,
    ) -> None:
        self.what = what
        self.exclusive = exclusive  # takes the load lock (it may build a torch model)
        self.started = time.perf_counter()
        self.seconds: float | None = None  # loading time, once done
        self.progress: tuple[int, int] | None = None  # bytes assembled/verified, of total
        self.value: T | None = None
        self.error: BaseException | None = None
        self.reported = False  # the failure was shown to the user
        self._load = load
        self._after = after
        self._done = threading.Event()
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load {what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._after is not None:
                self._after.wait()
            with _LOAD_LOCK if self.exclusive else contextlib.nullcontext():
                self._running.set()
                self.started = time.perf_counter()
                self.value = self._load(self._on_progress)
        except BaseException as exc:  # shown by the console, which keeps going
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - self.started
            self._done.set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress = (done, total)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once loading has finished (either way)."""
        return self._done.wait(timeout)

    def result(self) -> T:
        """The loaded value (waits for it); raises the error loading raised."""
        self._done.wait()
        if self.error is not None:
            # A RagchatError is the user's to read; anything else is a bug and keeps its
            # traceback.
            raise self.error
        assert self.value is not None  # set whenever error is None
        return self.value

    def status(self) -> str:
        """A few words for the toolbar: waiting, loading (with progress), ready or failed."""
        if self.done:
            return "failed" if self.error is not None else "ready"
        if not self._running.is_set():
            return "waiting"
        text = f"loading {time.perf_counter() - self.started:.0f}s"
        if self.progress and self.progress[0] < self.progress[1]:
            done, total = self.progress
            text += f", preparing {100 * done / max(total, 1):.0f}%"
        return text


def open_index(index_path: Path, settings: Settings) -> Loading[Retriever]:
    """Start opening the index at `index_path` (its embedder loads) in the background."""

    def load(on_progress: ProgressCallback) -> Retriever:
        from ragchat.retrieval.retriever import open_retriever

        _quiet_libraries(settings)
        return open_retriever(index_path, settings)

    # The packaged MiniLM runs in numpy (no torch): it may load beside the model.
    return Loading(
        f"index {index_path.name}", load, exclusive=_index_embedder(index_path) != "minilm"
    )


def _index_embedder(index_path: Path) -> str:
    """The embedder id the index's manifest records ("" when it cannot be read)."""
    from ragchat.index.store import IndexStore

    try:
        with IndexStore.open(index_path) as store:
            return store.config.embedder
    except RagchatError:
        return ""


def load_model(spec: str, settings: Settings, after: Loading[Any] | None) -> Loading[Generator]:
    """Start loading the language model `spec` in the background."""

    def load(on_progress: ProgressCallback) -> Generator:
        from ragchat.generation.loading import load_generator

        _quiet_libraries(settings)
        return load_generator(spec, settings.replace(model=spec), on_progress)

    return Loading(f"model {spec}", load, after)


class SlashCompleter(Completer):
    """Completes slash commands, index names after /index and presets after /model."""

    def __init__(
        self, index_names: Callable[[], Iterable[str]], model_names: Callable[[], Iterable[str]]
    ) -> None:
        self._choices = {"/index": index_names, "/model": model_names}

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        if " " not in text:
            for name, (argument, meta) in COMMANDS.items():
                if name.startswith(text):
                    # "/index " with its space, so the next Tab lists the index names.
                    shown = f"{name} " if argument and name in self._choices else name
                    yield Completion(shown, -len(text), display=name, display_meta=meta)
            return
        command, _, arg = text.partition(" ")
        names = self._choices.get(ALIASES.get(command, command))
        if names is None:
            return
        arg = arg.lstrip()
        for name in names():
            if name.startswith(arg):
                yield Completion(name, -len(arg))


class ChatConsole:
    """The chat loop. `history` holds this session's turns, `answers` every answer given
    (cancelled ones too); `streaming` is set while answer text is arriving."""

    def __init__(
        self,
        settings: Settings,
        index_path: Path,
        *,
        pt_input: Input | None = None,
        pt_output: Output | None = None,
    ) -> None:
        self.settings = settings
        self.k = settings.k
        self.history: list[Turn] = []
        self.answers: list[Answer] = []
        self.streaming = threading.Event()
        self.waited_for: list[str] = []  # what the last answer waited for: "the index"…
        self._stopping: tuple[threading.Thread, queue.Queue[Event]] | None = None
        # A missing index fails here, before the loop (cheap: no embedder yet). The embedder
        # and the model then load in the background while the user types.
        self.index_path = index_path
        self.index_summary = _index_summary(index_path)
        self.index = open_index(index_path, settings)
        after = self.index if self.index.exclusive else None
        self.model = load_model(settings.model, settings, after=after)
        self.session: PromptSession[str] = PromptSession(
            history=_history(settings),
            completer=SlashCompleter(self._index_names, _preset_names),
            bottom_toolbar=self._toolbar,
            refresh_interval=0.5,
            style=STYLE,
            input=pt_input,
            output=pt_output,
            key_bindings=_tab_bindings(),
        )
        self.out: Output = self.session.output

    # ------------------------------------------------------------------ output

    def _print(self, *parts: tuple[str, str] | str, end: str = "\n") -> None:
        fragments = FormattedText([("", p) if isinstance(p, str) else p for p in parts])
        print_formatted_text(fragments, end=end, style=STYLE, output=self.out)

    def _note(self, text: str) -> None:
        self._print(("class:note", text))

    def _error(self, text: str) -> None:
        self._print(("class:error", f"error: {text}"))

    def _redraw_line(self, text: str) -> None:
        """Overwrite the current line (for the loading note that counts up)."""
        self.out.write_raw("\r")
        self.out.erase_end_of_line()
        self._print(("class:note", text), end="")

    def _toolbar(self) -> FormattedText:
        index = self.index_path.name
        if not self.index.done or self.index.error is not None:
            index += f" ({self.index.status()})"
        text = (
            f" index {index} · {self.model.what} ({self.model.status()}) · k={self.k}"
            " · /help lists commands"
        )
        return FormattedText([("class:bottom-toolbar", text)])

    def _index_names(self) -> list[str]:
        from ragchat.index.store import list_indexes

        return [p.name for p in list_indexes(self.settings.index_dir)]

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Read questions and commands until /quit or Ctrl-D; returns the exit status (0)."""
        self._print(
            ("class:prompt", "ragchat chat"),
            f" — {self.index_summary} · {self.model.what} (loading in the background)",
        )
        self._note(
            "Ask a question about your documents; follow-ups use the conversation. "
            "/help lists commands; Ctrl-C stops an answer, Ctrl-D quits."
        )
        try:
            while True:
                self._report_failures()
                try:
                    line = self.session.prompt(FormattedText([("class:prompt", "> ")]))
                except KeyboardInterrupt:  # Ctrl-C at the prompt: clear the line
                    continue
                except EOFError:
                    return 0
                line = line.strip()
                if not line:
                    continue
                try:
                    if line.startswith("/"):
                        if self._command(line) == "quit":
                            return 0
                    else:
                        self.ask(line)
                except RagchatError as exc:
                    self._error(str(exc))
                    if exc is self.model.error:
                        self._note("/model NAME loads another model")
                except KeyboardInterrupt:  # during a command (/index waiting for a load)
                    self._note("[stopped]")
        finally:
            self._collect_stopped(timeout=STOP_COLLECT_S)
            self._close_index(self.index)

    def _report_failures(self) -> None:
        """Show a background load that failed since the last prompt, once."""
        for loading in (self.index, self.model):
            if loading.done and loading.error is not None and not loading.reported:
                loading.reported = True
                try:
                    loading.result()
                except RagchatError as exc:
                    self._error(str(exc))
                    if loading is self.model:
                        self._note("/model NAME loads another model")

    @staticmethod
    def _close_index(index: Loading[Retriever]) -> None:
        """Close a retriever once it has opened (a load still running is left to finish)."""
        if index.done and index.value is not None:
            index.value.close()

    # ------------------------------------------------------------------ answering

    def ask(self, question: str) -> Answer | None:
        """Answer one question, streaming it; Ctrl-C (KeyboardInterrupt) stops it. Returns
        the answer (cancelled ones too), or None when stopped before generation began."""
        self._collect_stopped()
        cancel = threading.Event()
        events: queue.Queue[Event] = queue.Queue()
        worker = threading.Thread(
            target=self._work,
            args=(question, tuple(self.history), self.k, cancel, events),
            name="answer",
            daemon=True,
        )
        worker.start()
        try:
            result = self._consume(question, events)
        except KeyboardInterrupt:
            cancel.set()
            # Generation stops at its next token, but a prefill chunk or the follow-up
            # rewrite can take seconds: the prompt comes back within STOP_WAIT_S and a
            # worker still running finishes on its own (the next answer waits for the
            # model's lock, not the user).
            deadline = time.perf_counter() + STOP_WAIT_S
            while worker.is_alive() and time.perf_counter() < deadline:
                with contextlib.suppress(KeyboardInterrupt):  # pressed again: stopping anyway
                    worker.join(0.05)
            result = _final(events)
            if result is None and worker.is_alive():
                self._stopping = (worker, events)  # its answer is kept once it ends
            self._print(("class:note", " [stopped]"))
        finally:
            self.streaming.clear()
        if result is None:
            return None
        self.answers.append(result)
        if not result.cancelled:
            # The standalone form, so later follow-ups are condensed from explicit questions.
            self.history.append(Turn(result.standalone_question or question, result.text))
        return result

    def _collect_stopped(self, timeout: float | None = None) -> None:
        """Keep the answer of a worker stopped by Ctrl-C that was still ending when the
        prompt came back (waits for it up to `timeout`; None: until it ends)."""
        if self._stopping is None:
            return
        worker, events = self._stopping
        worker.join(timeout)
        if worker.is_alive():
            return
        self._stopping = None
        result = _final(events)
        if result is not None:
            self.answers.append(result)

    def _work(
        self,
        question: str,
        history: Sequence[Turn],
        k: int,
        cancel: threading.Event,
        events: queue.Queue[Event],
    ) -> None:
        """Worker thread: wait for the index and model if needed, then run qa.answer. Every
        outcome ends with one ("done", Answer | None) or ("error", exception) event."""
        from ragchat.answer.qa import answer, policy_for

        try:
            waited = 0.0
            self.waited_for = []
            for loading in (self.index, self.model):
                if loading.done:
                    continue
                started = time.perf_counter()
                events.put(("loading", loading))
                while not loading.wait(0.1):
                    if cancel.is_set():
                        events.put(("done", None))
                        return
                waited += time.perf_counter() - started
                self.waited_for.append("the index" if loading is self.index else "the model")
                events.put(("loaded", loading))
            retriever = self.index.result()
            generator = self.model.result()
            result = answer(
                question,
                retriever,
                generator,
                k=k,
                max_new_tokens=self.settings.max_new_tokens,
                history=history,
                on_query=lambda query: events.put(("query", query)),
                on_text=lambda text: events.put(("text", text)),
                cancel=cancel,
                load_s=waited,
                policy=policy_for(self.settings, generator),
            )
            events.put(("done", result))
        except BaseException as exc:  # handed to the main thread, which decides
            events.put(("error", exc))

    def _consume(self, question: str, events: queue.Queue[Event]) -> Answer | None:
        """Print the worker's events until it is done; returns its answer."""
        loading: Loading[Any] | None = None
        at_line_start = True
        last_redraw = 0.0
        while True:
            try:
                kind, value = events.get(timeout=0.1)
            except queue.Empty:
                if loading is not None and time.perf_counter() - last_redraw > 0.5:
                    self._redraw_line(f"{loading.what}: {loading.status()}…")
                    last_redraw = time.perf_counter()
                continue
            if kind == "loading":
                loading = value
                self._redraw_line(f"{value.what}: {value.status()}…")
                last_redraw = time.perf_counter()
                at_line_start = False
            elif kind == "loaded":
                loading = None
                verdict = "failed" if value.error is not None else "ready"
                self._redraw_line(f"{value.what}: {verdict} ({value.seconds:.1f}s)")
                self._print("")
                value.reported = True  # its error, if any, is raised just below
                at_line_start = True
            elif kind == "query":
                if " ".join(value.split()).lower() != " ".join(question.split()).lower():
                    self._print(("class:query", f"→ {value}"))
            elif kind == "text":
                if at_line_start:
                    value = value.lstrip()
                if value:
                    self.streaming.set()
                    self._print(value, end="")
                    at_line_start = value.endswith("\n")
            elif kind == "error":
                if not at_line_start:
                    self._print("")
                raise value
            elif kind == "done":
                if not at_line_start:
                    self._print("")
                if value is not None:
                    self._after_answer(value)
                return value  # type: ignore[no-any-return]

    def _after_answer(self, result: Answer) -> None:
        if result.abstained and result.passages:
            self._note("(the retrieved passages don't answer this; /sources shows them)")
        self._note(timing_line(result, self.waited_for))

    # ------------------------------------------------------------------ commands

    def _command(self, line: str) -> str | None:
        """Run a slash command; returns "quit" to leave."""
        name, _, arg = line.partition(" ")
        name = ALIASES.get(name.lower(), name.lower())
        arg = arg.strip()
        if name == "/quit":
            return "quit"
        if name == "/help":
            for command, (argument, text) in COMMANDS.items():
                self._print(("class:prompt", f"{command} {argument}".ljust(14)), text)
            self._note("Anything else is a question. Ctrl-C stops an answer; Ctrl-D quits.")
        elif name == "/sources":
            self._sources()
        elif name == "/k":
            self._set_k(arg)
        elif name == "/index":
            self._switch_index(arg)
        elif name == "/model":
            self._switch_model(arg)
        elif name == "/clear":
            self.history.clear()
            self._note("conversation forgotten; the next question starts afresh")
        else:
            close = difflib.get_close_matches(name, [*COMMANDS, *ALIASES], n=1)
            hint = f" — did you mean {close[0]}?" if close else ""
            self._print(("class:error", f"unknown command {name}{hint}"))
            self._note("/help lists the commands; a line not starting with / is a question")
        return None

    def _sources(self) -> None:
        self._collect_stopped(timeout=1.0)
        if not self.answers:
            self._note("no answer yet: ask a question first")
            return
        last = self.answers[-1]
        # The summaries of a script's sections the model read (answer/story.py), first.
        story = [p for p in last.passages if is_summary(p)]
        shown = [*story, *(last.retrieved or [p for p in last.passages if not is_summary(p)])]
        if not shown:
            self._note("the last answer had no passages (the index found nothing)")
            return
        given = {p.chunk_id for p in last.passages}
        cited = {
            last.passages[c.number - 1].chunk_id
            for c in last.citations
            if 0 < c.number <= len(last.passages)
        }
        for rank, p in enumerate(shown, 1):
            mark = ("class:cited", "  * cited") if p.chunk_id in cited else ""
            # Passages go in as their best sentences (qa.FOCUS_SENTENCES) under a token budget.
            extra = "" if p.chunk_id in given else "  (not given to the model: less relevant)"
            self._print(
                ("class:prompt", f"{rank}. {source_label(p.doc, p.page, p.page_end)}"),
                ("class:note", "  summary" if is_summary(p) else ""),
                ("class:note", f"  score {p.score:.3f}{extra}"),
                mark,
            )
            text = " ".join(p.text.split())
            if len(text) > SNIPPET_CHARS:
                text = text[:SNIPPET_CHARS] + "…"
            self._print(f"   {text}")

    def _set_k(self, arg: str) -> None:
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if not 1 <= k <= MAX_K:
            self._print(
                ("class:error", f"usage: /k N with N from 1 to {MAX_K}"), f" (now k={self.k})"
            )
            return
        self.k = k
        self._note(f"k = {k}: each question retrieves {k} passages")

    def _switch_index(self, arg: str) -> None:
        from ragchat.index.store import resolve_index_path

        if not arg:
            names = self._index_names()
            listed = ", ".join(names) if names else f"none in {self.settings.index_dir}"
            self._note(f"current: {self.index_path.name}; indexes: {listed}")
            return
        path = resolve_index_path(arg, self.settings.index_dir)
        summary = _index_summary(path)  # a missing index fails here; the old one stays
        old = self.index
        self.index = open_index(path, self.settings)
        self.index_path, self.index_summary = path, summary
        self._close_index(old)
        self._note(f"now searching {summary}; the conversation is kept (/clear forgets it)")

    def _switch_model(self, arg: str) -> None:
        if not arg:
            self._note(f"current: {self.model.what} ({self.model.status()})")
            self._note("presets: " + ", ".join(_preset_names()) + "; or a folder, .gguf or hub id")
            return
        self.model = load_model(arg, self.settings, after=None)
        self._note(f"loading model {arg} in the background; the next question waits for it")


def timing_line(result: Answer, waited_for: Sequence[str] = ("the model",)) -> str:
    """`3 passages (1 cited) · retrieve 0.05s · first token 1.2s · total 4.1s · 20 tokens at
    15.3 tok/s` (+ the wait for the index and/or model when there was one)."""
    t = result.timings
    if early := before_the_model(result):
        return f"retrieve {t.retrieve_s:.2f}s · {early}"
    n = len(result.passages)
    parts = [f"{n} passage{'' if n == 1 else 's'} ({len(result.citations)} cited)"]
    if t.load_s > 0.05 and waited_for:
        parts.append(f"waited {t.load_s:.1f}s for {' and '.join(waited_for)}")
    parts.append(f"retrieve {t.retrieve_s:.2f}s")
    if t.first_token_s is not None:
        parts.append(f"first token {t.first_token_s:.2f}s")
    parts.append(f"total {t.total_s:.1f}s")
    if t.gen_tokens:  # a yes/no verdict is scored, not written
        parts.append(f"{t.gen_tokens} tokens at {t.tok_per_s:.1f} tok/s")
    return " · ".join(parts)


def _final(events: queue.Queue[Event]) -> Answer | None:
    """The answer of a stopped worker (its last "done" event), ignoring unprinted text."""
    result: Answer | None = None
    while True:
        try:
            kind, value = events.get_nowait()
        except queue.Empty:
            return result
        if kind == "done":
            result = value
        elif kind == "error" and not isinstance(value, RagchatError):
            raise value


def _tab_bindings() -> KeyBindings:
    """Tab on a single completion takes it and goes on completing: "/ind" Tab gives
    "/index ", and Tab again lists the index names (prompt_toolkit's own Tab would only
    cycle between "/index " and "/ind" while the completion menu is open)."""
    bindings = KeyBindings()

    @bindings.add("tab")
    def _(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and len(state.completions) == 1:
            buffer.apply_completion(state.completions[0])
            buffer.start_completion(select_first=False)
        elif state is not None:
            buffer.complete_next()
        else:
            buffer.start_completion(insert_common_part=True)

    return bindings


def _history(settings: Settings) -> History:
    """Questions remembered across sessions in cache_dir/chat-history: readable by the user
    alone (0600), cut to the last `chat_history_size` at each start; in memory only when
    `chat_history` is off or the cache folder cannot be written."""
    if not settings.chat_history or settings.chat_history_size <= 0:
        return InMemoryHistory()
    path = settings.cache_dir / "chat-history"
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
        path.chmod(0o600)  # an older file may have been made 0644
        # FileHistory's format: "# <time>" then one "+<line>" per line of each entry.
        entries: list[list[str]] = []
        current: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("+"):
                current.append(line)
            elif current and current[-1].startswith("+"):
                entries.append(current)
                current = [line] if line.startswith("#") else []
            elif line.startswith("#"):
                current = [line]
        if current and current[-1].startswith("+"):
            entries.append(current)
        if len(entries) > settings.chat_history_size:
            kept = entries[-settings.chat_history_size :]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("".join("\n" + "\n".join(e) + "\n" for e in kept))
            os.replace(tmp, path)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()


def _index_summary(index_path: Path) -> str:
    """`index NAME (2 files, 40 chunks)`; IndexNotFoundError when there is none."""
    from ragchat.index.store import IndexStore

    with IndexStore.open(index_path) as store:
        sources = store.sources()
    chunks = sum(s.chunks for s in sources)
    files = "file" if len(sources) == 1 else "files"
    return f"index {index_path.name} ({len(sources)} {files}, {chunks} chunks)"


def _quiet_libraries(settings: Settings) -> None:
    """Turn off transformers' progress bars and warnings: written from the loading thread
    they would tear through the prompt; the toolbar shows loading progress instead."""
    from ragchat.hub import configure_hub

    configure_hub(settings.allow_download)
    silence_library_bars()
    # Read when transformers is first imported; importing it here would cost seconds
    # (torch) that the numpy embedder and llama.cpp never need.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
        logging.set_verbosity_error()


def _preset_names() -> list[str]:
    from ragchat.weights import PRESETS

    return list(PRESETS)


def run_repl(
    settings: Settings,
    index_path: Path,
    *,
    pt_input: Input | None = None,
    pt_output: Output | None = None,
) -> int:
    """The `ragchat chat` console over the index at `index_path`; returns the exit status.
    `pt_input`/`pt_output` are prompt_toolkit Input/Output (tests pass a pipe input);
    None means the terminal. Raises IndexNotFoundError etc. before the loop starts."""
    return ChatConsole(settings, index_path, pt_input=pt_input, pt_output=pt_output).run()
