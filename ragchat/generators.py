"""Text generation: the Generator protocol and its transformers backend.

The backend runs its own greedy token loop over a KV cache rather than `model.generate`:
it can check a cancel Event between tokens (and between prefill chunks), and it decides
itself what text is safe to emit, so text after a stop sequence is never shown even when
the stop string arrives split across tokens.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ragchat.config import Settings
from ragchat.errors import ConfigError, GenerationError, ModelUnavailableError
from ragchat.prompting import Message, PromptFormat, prompt_format_for

if TYPE_CHECKING:
    import torch

StopReason = Literal["eos", "stop", "max_tokens", "cancelled"]

# Prefill in slices so a cancel is noticed within a fraction of a second on CPU.
_PREFILL_CHUNK = 256


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

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generation speed after the prompt was processed."""
        decode_s = self.total_s - self.prefill_s
        return self.gen_tokens / decode_s if decode_s > 0 else 0.0


class Generator(Protocol):
    """A loaded language model that streams greedy answers.

    Optional extension: a generator whose `scores_continuations` attribute is True also
    accepts `stream(..., score=("text", ...))` and then fills `last_stats.answer_logprobs`
    and `last_stats.continuation_logprobs` (see TransformersGenerator.stream). Callers must
    check the attribute first; generators without it keep the plain signature."""

    name: str
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


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); bf16 is then
    1.4–2× faster than fp32 and needs half the memory. Elsewhere it is emulated and slow."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    return "cpu", torch.bfloat16 if cpu_supports_bf16() else torch.float32


class GreedyLoop:
    """The greedy token loop both backends share: prefill, then one token at a time until
    EOS, a stop sequence or the token limit; `cancel` is checked between prefill slices and
    between tokens; text that could still become a stop sequence (or is half a UTF-8
    character) is held back, and nothing at or after a stop is ever yielded, even when the
    stop string arrives split across tokens. Subclasses supply the engine steps below."""

    name: str
    context_window: int
    last_stats: GenerationStats | None

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
        stops = [s for s in stop if s]
        longest = max((len(s) for s in stops), default=0)
        generated: list[int] = []
        emitted = 0  # characters of the decoded answer already yielded
        text = ""
        reason: StopReason = "max_tokens"
        prefill_s = 0.0
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
                    cut = find_stop(text, stops, max(0, emitted - longest))
                    if cut is not None:
                        reason = "stop"
                        if cut > emitted:
                            first_token_s = first_token_s or time.perf_counter() - started
                            yield text[emitted:cut]
                        emitted = max(emitted, cut)
                        return
                    safe = len(text) - stop_holdback(text, stops)
                    if safe > emitted:
                        first_token_s = first_token_s or time.perf_counter() - started
                        yield text[emitted:safe]
                        emitted = safe
                    if len(generated) < max_new_tokens:
                        logits = self._step(next_id)
            except (RuntimeError, ValueError) as exc:
                raise GenerationError(f"{self.name} failed while generating: {exc}") from exc
            # Ended by EOS or the token limit: what was held back was not a stop after all.
            tail = text[emitted:].rstrip("\ufffd")
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
            )


class TransformersGenerator(GreedyLoop):
    """A causal LM run with transformers (AutoModelForCausalLM), greedy decoding."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str,
        load_seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.load_seconds = load_seconds
        self.last_stats: GenerationStats | None = None
        self.prompt_format: PromptFormat = prompt_format_for(tokenizer)
        self.context_window = _context_window(model.config, tokenizer)
        self._end_ids = _end_token_ids(model, tokenizer)
        self._past: Any = None  # the KV cache while an answer is generated
        self.scores_continuations = True

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop sequences of this model's prompt format."""
        return self.prompt_format.stop

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return self.prompt_format.render(messages)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a full prompt: chat templates already write the BOS token, other
        prompts get the tokenizer's usual special tokens."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and prompt.startswith(bos))
        return list(self.tokenizer.encode(prompt, add_special_tokens=add_special))

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
        scored after the prefill on the same KV cache (a few tokens each, no second prefill),
        and the cache is rolled back, so the answer is the same as without them."""
        try:
            yield from self._greedy(prompt, max_new_tokens, stop, cancel, score)
        finally:
            self._past = None  # the KV cache of a finished answer is not reused

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> Any | None:
        import torch

        self._past = None
        logits: Any = None
        for start in range(0, len(ids), _PREFILL_CHUNK):
            if cancel is not None and cancel.is_set():
                return None
            chunk = torch.tensor([ids[start : start + _PREFILL_CHUNK]], device=self.device)
            logits, self._past = self._forward(chunk, self._past)
        return logits

    def _step(self, token: int) -> Any:
        import torch

        logits, self._past = self._forward(torch.tensor([[token]], device=self.device), self._past)
        return logits

    def _pick(self, logits: Any) -> tuple[int, float]:
        import torch

        last = logits[0, -1]
        token = int(last.argmax())
        return token, float(torch.log_softmax(last.float(), -1)[token])

    def _is_end(self, token: int) -> bool:
        return token in self._end_ids

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _score_continuation(self, text: str, logits: Any, n_prompt: int) -> tuple[float, ...]:
        """Log-probabilities of `text`'s tokens following the prefilled prompt (`logits`:
        the prompt's last-position logits; the cache is left as it was)."""
        import copy

        import torch

        past = self._past
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            return ()
        first = torch.log_softmax(logits[0, -1].float(), -1)[ids[0]]
        if len(ids) == 1:
            return (float(first),)
        # Roll back by cropping where the cache allows it; otherwise work on a copy.
        croppable = bool(getattr(past, "is_croppable", False))
        cache = past if croppable else copy.deepcopy(past)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([ids[:-1]], device=self.device),
                past_key_values=cache,
                use_cache=True,
            )
        if croppable:
            past.crop(-(len(ids) - 1))  # negative: remove that many tokens (v4 and v5)
        rest = torch.log_softmax(out.logits[0].float(), -1)
        lps = rest[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        return (float(first), *(float(x) for x in lps))

    def _forward(self, input_ids: torch.Tensor, past: Any) -> tuple[torch.Tensor, Any]:
        """One forward pass over new tokens; returns (logits of the last position, cache)."""
        import torch

        # inference_mode per call, not around the generator: a mode held across `yield`
        # would leak into the caller's code.
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
        return out.logits[:, -1:, :], out.past_key_values


def _context_window(config: Any, tokenizer: Any) -> int:
    """Tokens the model attends over: max_position_embeddings (or n_positions), capped by
    the tokenizer's model_max_length when that is a real number."""
    window = 2048
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            window = value
            break
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        window = min(window, limit)
    return window


def _end_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Token ids that end an answer: the EOS ids of the generation config, model config and
    tokenizer, and every other special token (an instruct model that emits <|im_start|> or
    <|user|> has finished its turn)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    # Tokenizers converted from GGUF list <|im_start|> & co. only as special added tokens.
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return frozenset(ids)


def load_transformers(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> TransformersGenerator:
    """Load `spec` (preset, GGUF path, local folder or hub id) with transformers on the
    device and dtype chosen by `pick_device_dtype`."""
    from ragchat.hub import configure_hub
    from ragchat.models import resolve_model_dir

    configure_hub(settings.allow_download)
    started = time.perf_counter()
    folder = resolve_model_dir(spec, settings, on_progress)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    device, dtype = pick_device_dtype(settings.device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=settings.trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, trust_remote_code=settings.trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        hint = (
            " It may need custom code: allow it with --trust-remote-code if you trust it."
            if "trust_remote_code" in str(exc)
            else ""
        )
        raise ModelUnavailableError(
            f"cannot load model {spec!r} from {folder}: {exc}.{hint}"
        ) from exc
    model.to(device)
    model.eval()
    return TransformersGenerator(
        model,
        tokenizer,
        name=spec,
        device=device,
        load_seconds=time.perf_counter() - started,
    )


def load_llamacpp(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> Generator:
    """The llama.cpp backend (ragchat/llamacpp.py), imported only when asked for."""
    from ragchat.llamacpp import load_llamacpp as load

    return load(spec, settings, on_progress)


BACKENDS: dict[str, Callable[..., Generator]] = {
    "transformers": load_transformers,
    "llamacpp": load_llamacpp,
}


def auto_backend(spec: str, device: str = "auto") -> str:
    """The backend "auto" picks for `spec`: llama.cpp for GGUF models (presets with GGUF
    weights, .gguf files) when llama-cpp-python is installed — ~5× faster on a CPU —, else
    transformers (also whenever --device cuda asks for the GPU: the extra is a CPU build)."""
    if device == "cuda":
        return "transformers"
    from ragchat.llamacpp import available
    from ragchat.models import PRESETS

    preset = PRESETS.get(spec)
    gguf = preset.is_gguf if preset is not None else spec.lower().endswith(".gguf")
    return "llamacpp" if gguf and available() else "transformers"


def load_generator(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> Generator:
    """Load the language model `spec` with settings.backend ("auto": see auto_backend)."""
    backend = (
        auto_backend(spec, settings.device) if settings.backend == "auto" else settings.backend
    )
    loader = BACKENDS.get(backend)
    if loader is None:
        raise ConfigError(
            f"backend = {settings.backend!r} is not available; choose one of: auto, "
            + ", ".join(BACKENDS)
        )
    return loader(spec, settings, on_progress)
