"""The `Generator` protocol and what every engine shares: the greedy loop (stop sequences
held back, cancellation, continuation scoring), generation statistics and the CPU
device/dtype choice. The engines (hf.py, llamacpp.py) supply prefill, step, pick, decode
and score."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ragchat.errors import ConfigError, GenerationError, ModelUnavailableError
from ragchat.generation.formats import Message, PromptFormat
from ragchat.hardware import cpu_has_native_bf16

if TYPE_CHECKING:
    import torch


StopReason = Literal["eos", "stop", "max_tokens", "cancelled"]


# Prefill in slices so a cancel is noticed within a fraction of a second on CPU.
PREFILL_CHUNK = 256


@dataclass(frozen=True)
class GenerationStats:
    """Figures of one `stream()` call. Times are seconds from the call."""

    prompt_tokens: int
    gen_tokens: int
    prefill_s: float  # prompt processing
    first_token_s: float | None  # until the first text piece was ready
    total_s: float
    stop_reason: StopReason
    # Log-probability of each generated token (greedy choices), in order.
    answer_logprobs: tuple[float, ...] = ()
    # Per requested continuation (`stream(score=...)`): the log-probability of each of its
    # tokens right after the prompt, i.e. how readily the model would have said it instead.
    continuation_logprobs: tuple[tuple[float, ...], ...] = ()
    score_s: float = 0.0  # scoring those continuations, between prefill and decoding

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generation speed after the prompt was processed (and continuations scored)."""
        decode_s = self.total_s - self.prefill_s - self.score_s
        return self.gen_tokens / decode_s if decode_s > 0 else 0.0


class Generator(Protocol):
    """A loaded language model that streams greedy answers.

    Optional extension: a generator whose `scores_continuations` attribute is True also
    accepts `stream(..., score=("text", ...))` and then fills `last_stats.answer_logprobs`
    and `last_stats.continuation_logprobs` (see GreedyLoop.stream). Callers must
    check the attribute first; generators without it keep the plain signature."""

    name: str
    # The packaged preset this model is (by name, or a GGUF file with a preset's checksum),
    # None for any other model: abstention thresholds are calibrated per preset.
    preset: str | None
    context_window: int
    prompt_format: PromptFormat
    load_seconds: float
    last_stats: GenerationStats | None

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt (no special tokens added)."""
        ...

    def format_prompt(self, messages: Sequence[Message]) -> str:
        """The model's prompt text for `messages`, ending where the answer starts."""
        ...

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Text pieces as they are generated; never text at or after a stop sequence.
        Sets `last_stats` when the iterator finishes or is closed."""
        ...


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop sequence (or an
    unfinished multi-byte character) and must be held back for now."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    if text.endswith("\ufffd"):  # a UTF-8 character split across tokens
        hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
    return hold


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest stop sequence in `text[start:]`, or None."""
    found = [i for s in stops if s and (i := text.find(s, start)) >= 0]
    return min(found) if found else None


class StopGate:
    """What of a growing answer may be shown: never text at or after a stop sequence, even
    one that arrives split across tokens, and nothing yet that could still become one (or
    is half a UTF-8 character). Every engine's loop feeds it the whole text so far."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stops = [s for s in stop if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self.emitted = 0  # characters of the text already released

    def feed(self, text: str) -> tuple[str, bool]:
        """The newly releasable text, and whether a stop sequence was reached."""
        cut = find_stop(text, self.stops, max(0, self.emitted - self._longest))
        if cut is not None:
            piece = text[self.emitted : cut] if cut > self.emitted else ""
            self.emitted = max(self.emitted, cut)
            return piece, True
        safe = len(text) - stop_holdback(text, self.stops)
        if safe > self.emitted:
            piece, self.emitted = text[self.emitted : safe], safe
            return piece, False
        return "", False

    def rest(self, text: str) -> str:
        """What was held back, once the text has ended without a stop."""
        return text[self.emitted :].rstrip("\ufffd")


def pick_device_dtype(device_setting: str) -> tuple[str, torch.dtype]:
    """("cpu"|"cuda", dtype) for settings.device: bf16 on CUDA that has it (fp16 otherwise),
    bf16 on CPUs with native bf16, fp32 on other CPUs."""
    import torch

    if device_setting not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device = {device_setting!r}: use auto, cpu or cuda")
    if device_setting == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(
            "device = cuda but torch sees no CUDA GPU here; use --device cpu (or auto)."
        )
    if device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available()):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cuda", dtype
    return "cpu", torch.bfloat16 if cpu_has_native_bf16() else torch.float32


class GreedyLoop:
    """The greedy token loop both backends share: prefill, then one token at a time until
    EOS, a stop sequence or the token limit; `cancel` is checked between prefill slices and
    between tokens; text that could still become a stop sequence (or is half a UTF-8
    character) is held back, and nothing at or after a stop is ever yielded, even when the
    stop string arrives split across tokens. Subclasses supply the engine steps below."""

    name: str
    preset: str | None = None
    context_window: int
    prompt_format: PromptFormat
    last_stats: GenerationStats | None

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one sequence, one KV cache: one call at a time

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return self.prompt_format.render(messages)

    def generate(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        """The whole answer at once (see stream)."""
        return "".join(self.stream(prompt, max_new_tokens=max_new_tokens, stop=stop))

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        score: Sequence[str] = (),
    ) -> Iterator[str]:
        """Greedy text pieces (see Generator.stream). `score`: continuations whose token
        log-probabilities after the prompt go to `last_stats.continuation_logprobs`; they are
        scored after the prefill on the same KV cache (a few tokens each, no second
        prefill), and the cache is rolled back, so the answer is the same as without them."""
        with self._lock:
            try:
                yield from self._greedy(prompt, max_new_tokens, stop, cancel, score)
            finally:
                self._after_call()

    def _after_call(self) -> None:
        """Run when a `stream` call ends, however it ends."""
        return

    def encode_prompt(self, prompt: str) -> list[int]:
        raise NotImplementedError

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> Any | None:
        """Read the prompt; the last position's logits, or None when cancelled."""
        raise NotImplementedError

    def _step(self, token: int) -> Any:
        """Append one token; the logits after it."""
        raise NotImplementedError

    def _pick(self, logits: Any) -> tuple[int, float]:
        """The greedy token and its log-probability."""
        raise NotImplementedError

    def _is_end(self, token: int) -> bool:
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _score_continuation(self, text: str, logits: Any, n_prompt: int) -> tuple[float, ...]:
        """Log-probabilities of `text`'s tokens right after the prompt, leaving the state
        as it was."""
        raise NotImplementedError

    def _greedy(
        self,
        prompt: str,
        max_new_tokens: int,
        stop: Sequence[str],
        cancel: threading.Event | None,
        score: Sequence[str],
    ) -> Iterator[str]:
        started = time.perf_counter()
        ids = self.encode_prompt(prompt)
        if not ids:
            raise GenerationError("empty prompt")
        if len(ids) >= self.context_window:
            raise GenerationError(
                f"the prompt has {len(ids)} tokens but {self.name} reads at most "
                f"{self.context_window}; use fewer or shorter passages (-k)."
            )
        max_new_tokens = max(0, min(max_new_tokens, self.context_window - len(ids)))
        gate = StopGate(stop)
        generated: list[int] = []
        text = ""
        reason: StopReason = "max_tokens"
        prefill_s = score_s = 0.0
        first_token_s: float | None = None
        answer_lps: list[float] = []
        scored: list[tuple[float, ...]] = []
        try:
            try:
                logits = self._prefill(ids, cancel)
                if logits is None:
                    reason = "cancelled"
                    return
                prefill_s = time.perf_counter() - started
                for continuation in score:
                    scored.append(self._score_continuation(continuation, logits, len(ids)))
                if score:
                    score_s = time.perf_counter() - started - prefill_s
                for _ in range(max_new_tokens):
                    if cancel is not None and cancel.is_set():
                        reason = "cancelled"
                        return
                    next_id, logprob = self._pick(logits)
                    answer_lps.append(logprob)
                    if self._is_end(next_id):
                        reason = "eos"
                        break
                    generated.append(next_id)
                    text = self._decode(generated)
                    piece, stopped = gate.feed(text)
                    if piece:
                        first_token_s = first_token_s or time.perf_counter() - started
                        yield piece
                    if stopped:
                        reason = "stop"
                        return
                    if len(generated) < max_new_tokens:
                        logits = self._step(next_id)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"{self.name} failed while generating: {exc}") from exc
            # Ended by EOS or the token limit: what was held back was not a stop after all.
            tail = gate.rest(text)
            if tail:
                first_token_s = first_token_s or time.perf_counter() - started
                yield tail
        finally:
            self.last_stats = GenerationStats(
                prompt_tokens=len(ids),
                gen_tokens=len(generated),
                prefill_s=prefill_s,
                first_token_s=first_token_s,
                total_s=time.perf_counter() - started,
                stop_reason=reason,
                answer_logprobs=tuple(answer_lps[: len(generated)]),
                continuation_logprobs=tuple(scored),
                score_s=score_s,
            )
