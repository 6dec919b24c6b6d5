"""The openai backend: generation by an OpenAI-compatible server (llama.cpp's llama-server,
llama-cpp-python's server, vLLM, Ollama's /v1, LM Studio) over /v1/chat/completions,
streamed (server-sent events) into the same `stream()` contract as the in-process engines:
text pieces as they arrive, never text at or after a stop sequence, `cancel` seen within
50 ms (the request is closed), `last_stats` set when the iterator ends.

Messages, not a pre-rendered prompt: the server applies the model's own chat template.
qa.py, prompts.py and followup.py build prompts as `generator.prompt_format.render(
messages)` and pass the result to `stream()`; this backend's format (`MessagesFormat`)
renders the message list losslessly as JSON behind a marker, and `stream()` sends it as
the request's `messages` (it also takes a list of `Message` directly). A plain-text prompt
goes to /v1/completions as it is.

What is approximate or missing next to in-process llama.cpp (docs/models.md):

- Token counts for the prompt budget: the server's tokenizer where it offers one
  (llama-cpp-python's /extras/tokenize/count, llama-server's and vLLM's /tokenize), plus
  ChatML's 5 tokens of markup per message and 3 for the reply header; chars/4 when the
  server has no tokenizer endpoint.
- The no-answer signal (abstention.answer_signals) needs the log-probability of "The
  documents don't say." right after the prompt; the chat API has no way to score a given
  continuation, so `scores_continuations` is False and qa.py falls back to the
  retrieval-level gate and the model's own abstention. With `openai_logprobs` the
  answer tokens' log-probabilities are asked for and kept in `last_stats.answer_logprobs`
  (llama.cpp servers and vLLM return them).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ragchat.config import Settings
from ragchat.errors import RagchatError
from ragchat.generation.base import GenerationStats, StopGate, StopReason
from ragchat.generation.formats import Message, PromptFormat
from ragchat.openai_api import OpenAIClient, endpoint_for

# A rendered MessagesFormat prompt: this marker, then the messages as a JSON list.
MESSAGES_MARKER = "<ragchat:messages>"


# Template markup per message ("<|im_start|>role\n" … "<|im_end|>\n") and for the reply
# header ("<|im_start|>assistant\n") in ChatML, which Qwen and SmolLM use; other templates
# differ by a few tokens.
MESSAGE_OVERHEAD_TOKENS = 5


REPLY_OVERHEAD_TOKENS = 3


# When the server doesn't say how long its context is (llama-cpp-python doesn't):
# llama-cpp-python's and Ollama's default n_ctx.
DEFAULT_CONTEXT = 2048


class MessagesFormat(PromptFormat):
    """The prompt "rendered" for a server that applies its own chat template: the messages
    themselves, as JSON behind MESSAGES_MARKER (lossless; `parse_messages` reads it back).
    Stop sequences are those of the in-process chat-template format, so answers end in the
    same place."""

    name = "server-chat-template"

    def render(self, messages: Sequence[Message]) -> str:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        return MESSAGES_MARKER + json.dumps(turns, ensure_ascii=False)


def parse_messages(prompt: str) -> list[Message] | None:
    """The messages of a MessagesFormat prompt; None for a plain-text prompt."""
    if not prompt.startswith(MESSAGES_MARKER):
        return None
    turns = json.loads(prompt[len(MESSAGES_MARKER) :])
    return [Message(t["role"], t["content"]) for t in turns]


class OpenAIGenerator:
    """A model served by an OpenAI-compatible server, greedy decoding (temperature 0)."""

    def __init__(
        self,
        client: OpenAIClient,
        model: str,
        *,
        context_window: int,
        logprobs: bool = False,
        load_seconds: float = 0.0,
    ) -> None:
        self.client = client
        self.name = model
        # Abstention thresholds are calibrated per preset on the model's continuation
        # scores, which this backend can't give: none apply, whatever the server's name.
        self.preset: str | None = None
        self.context_window = context_window
        self.prompt_format: PromptFormat = MessagesFormat()
        self.load_seconds = load_seconds
        self.last_stats: GenerationStats | None = None
        self.scores_continuations = False  # see the module docstring
        self.logprobs = logprobs
        self._count_text = self._find_token_counter()
        self._counts: dict[str, int] = {}

    @property
    def stop(self) -> tuple[str, ...]:
        return self.prompt_format.stop

    # -- token counting ------------------------------------------------------------------

    def _find_token_counter(self) -> Callable[[str], int | None]:
        """The first tokenizer endpoint the server answers, as text -> count (None when it
        stops answering); chars/4 when there is none."""
        probes: list[tuple[str, Callable[[str], dict[str, Any]], Callable[[Any], int]]] = [
            # llama-cpp-python
            ("//extras/tokenize/count", lambda t: {"input": t, "model": self.name}, _count_key),
            # llama-server ({"tokens": [...]}) and vLLM ({"count": n, "tokens": [...]})
            ("//tokenize", lambda t: {"content": t, "prompt": t, "model": self.name}, _tokens),
        ]
        for path, body, read in probes:
            answer = self.client.try_post_json(path, body("Hello world"))
            try:
                read(answer)
            except (TypeError, KeyError, ValueError):
                continue

            def count(text: str, path: str = path, body: Any = body, read: Any = read) -> int:
                return read(self.client.post_json(path, body(text)))

            return count
        return lambda text: max(1, round(len(text) / 4))

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt: the server's tokenizer where it has one (see the
        module docstring), chat markup estimated for a MessagesFormat prompt."""
        messages = parse_messages(text)
        if messages is None:
            return self._count(text)
        return REPLY_OVERHEAD_TOKENS + sum(
            MESSAGE_OVERHEAD_TOKENS + self._count(m.content) for m in messages
        )

    def _count(self, text: str) -> int:
        if not text:
            return 0
        if text not in self._counts:
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[text] = int(self._count_text(text) or 0)
        return self._counts[text]

    def _count_quietly(self, prompt: str) -> int:
        """count_tokens, or chars/4 when the server can't be asked (it just failed)."""
        try:
            return self.count_tokens(prompt)
        except RagchatError:
            return max(1, round(len(prompt) / 4))

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return self.prompt_format.render(messages)

    # -- generation ----------------------------------------------------------------------

    def generate(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        return "".join(self.stream(prompt, max_new_tokens=max_new_tokens, stop=stop))

    def request_body(
        self, prompt: str | Sequence[Message], max_new_tokens: int, stop: Sequence[str]
    ) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the streaming request for `prompt`."""
        messages = parse_messages(prompt) if isinstance(prompt, str) else list(prompt)
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            # llama.cpp servers penalise repeats by default (llama-cpp-python: 1.1), which
            # would make "greedy" answers differ from in-process ones; others ignore it.
            "repeat_penalty": 1.0,
            "stream": True,
        }
        if stop:
            body["stop"] = list(stop)
        if messages is None:
            body["prompt"] = prompt
            if self.logprobs:
                body["logprobs"] = 1
            return "/completions", body
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 1  # llama-cpp-python returns none without it
        return "/chat/completions", body

    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Greedy text pieces as the server sends them (generators.Generator.stream). Stop
        sequences are sent to the server and enforced here as well, held back until they
        can't match, so a server that ignores or caps `stop` changes nothing."""
        started = time.perf_counter()
        gate = StopGate(stop)
        stops = gate.stops
        text = ""
        pieces = 0
        reason: StopReason = "max_tokens"
        first_token_s: float | None = None
        logprobs: list[float] = []
        usage: dict[str, Any] = {}
        prompt_text = prompt if isinstance(prompt, str) else self.format_prompt(prompt)
        try:
            if max_new_tokens <= 0:  # servers read max_tokens <= 0 as "no limit"
                return
            path, body = self.request_body(prompt, max_new_tokens, stops)
            events = self.client.stream_events(path, body, cancel)
            try:
                for event in events:
                    usage = event.get("usage") or usage
                    choices = event.get("choices") or []
                    if not choices:
                        continue
                    choice = choices[0]
                    delta = choice.get("delta")
                    piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    logprobs.extend(_logprobs_of(choice))
                    finish = choice.get("finish_reason")
                    if piece:
                        pieces += 1
                        text += piece
                        released, stopped = gate.feed(text)
                        if released:
                            first_token_s = first_token_s or time.perf_counter() - started
                            yield released
                        if stopped:
                            reason = "stop"
                            return
                    if finish:
                        # The server can't tell an end-of-turn token from a stop string.
                        reason = "max_tokens" if finish == "length" else "eos"
                if cancel is not None and cancel.is_set() and reason != "eos":
                    reason = "cancelled"
                    return
            finally:
                events.close()
            tail = gate.rest(text)
            if tail:
                first_token_s = first_token_s or time.perf_counter() - started
                yield tail
        finally:
            prompt_tokens = usage.get("prompt_tokens") or self._count_quietly(prompt_text)
            gen_tokens = usage.get("completion_tokens")
            self.last_stats = GenerationStats(
                prompt_tokens=int(prompt_tokens),
                gen_tokens=int(gen_tokens or len(logprobs) or pieces),
                # The server reads the prompt before the first piece arrives: the best
                # measure of prefill a client has.
                prefill_s=first_token_s or 0.0,
                first_token_s=first_token_s,
                total_s=time.perf_counter() - started,
                stop_reason=reason,
                answer_logprobs=tuple(logprobs),
            )


def _logprobs_of(choice: dict[str, Any]) -> list[float]:
    """The log-probabilities of the tokens in one streamed choice: chat ({"content":
    [{"logprob"}, ...]}) or completions ({"token_logprobs": [...]})."""
    found = choice.get("logprobs")
    if not isinstance(found, dict):
        return []
    if isinstance(found.get("content"), list):
        return [float(t["logprob"]) for t in found["content"] if t.get("logprob") is not None]
    return [float(v) for v in found.get("token_logprobs") or [] if v is not None]


def _count_key(answer: Any) -> int:
    return int(answer["count"])


def _tokens(answer: Any) -> int:
    if "count" in answer:
        return int(answer["count"])
    return len(answer["tokens"])


def _context_window(client: OpenAIClient, entry: dict[str, Any]) -> int:
    """The model's context length as the server states it: vLLM's `max_model_len` in
    /models, llama-server's n_ctx in /props; DEFAULT_CONTEXT otherwise."""
    if isinstance(entry.get("max_model_len"), int):
        return int(entry["max_model_len"])
    try:
        answer = client.get_json("//props")
        return int(answer["default_generation_settings"]["n_ctx"])
    except (RagchatError, KeyError, TypeError, ValueError):  # no /props (404): not an error
        return DEFAULT_CONTEXT


def load_openai(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> OpenAIGenerator:
    """The model `spec` (a name from the server's /models) on the server at
    settings.openai_base_url; checks that the server answers and has that model."""
    started = time.perf_counter()
    client = OpenAIClient(endpoint_for(settings, settings.openai_base_url, "--backend openai"))
    entry = client.find_model(spec, "--model")
    return OpenAIGenerator(
        client,
        spec,
        context_window=_context_window(client, entry),
        logprobs=settings.openai_logprobs,
        load_seconds=time.perf_counter() - started,
    )
