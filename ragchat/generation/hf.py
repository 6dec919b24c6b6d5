"""The transformers engine: a Hugging Face causal LM (folder, hub id, or a GGUF converted
once) run greedily with a KV cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ragchat.config import Settings
from ragchat.errors import ModelUnavailableError
from ragchat.generation.base import PREFILL_CHUNK, GenerationStats, GreedyLoop, pick_device_dtype
from ragchat.generation.formats import PromptFormat, prompt_format_for

if TYPE_CHECKING:
    import torch


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
        super().__init__()
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

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a full prompt: chat templates already write the BOS token, other
        prompts get the tokenizer's usual special tokens."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and prompt.startswith(bos))
        return list(self.tokenizer.encode(prompt, add_special_tokens=add_special))

    def _after_call(self) -> None:
        self._past = None  # the KV cache of a finished answer is not reused

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> Any | None:
        import torch

        self._past = None
        logits: Any = None
        for start in range(0, len(ids), PREFILL_CHUNK):
            if cancel is not None and cancel.is_set():
                return None
            chunk = torch.tensor([ids[start : start + PREFILL_CHUNK]], device=self.device)
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
    from ragchat.weights import resolve_model_dir

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
