"""The llama.cpp backend (llama-cpp-python, the optional extra `ragchat[llama]`).

It runs GGUF files as they are, quantised, with llama.cpp's CPU kernels: on the 2-core
project machine Qwen2.5-Coder-0.5B generates ~5× faster than transformers in bf16 and
loads in well under a second (docs/benchmarks.md). `load_generator` picks it by default
for GGUF models when llama_cpp is importable.

It runs the same greedy loop as TransformersGenerator (generators.GreedyLoop: cancel
between tokens and prefill slices, stop sequences held back until they can't match,
continuation scoring for the abstention signals), so both backends behave the same to
qa.py. Two things are its own:

- The KV cache is kept between calls and only the part of a new prompt after the longest
  common token prefix is evaluated: the system prompt and worked example of every RAG
  prompt (~200 tokens) are read once per session, not once per question.
- The prompt format comes from the chat template stored in the GGUF metadata, rendered
  with jinja2 the way transformers renders it (`GGUFChatTemplate`).

llama-cpp-python's high-level API keeps no logits unless `logits_all=True`, which would
allocate n_ctx × vocabulary floats (1.2 GB for Qwen at 2k tokens); the last position's
logits are read straight from the context instead (`Llama._ctx`, pinned version).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ragchat.config import Settings
from ragchat.errors import ModelUnavailableError
from ragchat.generation.base import PREFILL_CHUNK, GenerationStats, GreedyLoop
from ragchat.generation.formats import PromptFormat, prompt_format_for

# Prompts are capped far below this (qa.MAX_PROMPT_TOKENS); the KV cache of a 32k window
# would cost hundreds of MB for nothing.
MAX_CONTEXT = 4096


# The KV state of the last few prompts is kept (about 28 KB a token for qwen1.5b, a few
# MB a prompt) so that a prompt of another shape — a lookup after an explanation, the
# follow-up rewrite, the verification pass — restores the one it shares the longest prefix
# with instead of prefilling the system prompt and worked example again (on a 2-core CPU
# 150–200 tokens are 4–5 s). A state is restored only when it saves this many tokens.
KEPT_PROMPTS = 4
MIN_SAVING = 32


INSTALL_HINT = (
    "the llama.cpp backend needs llama-cpp-python, which compiles from source (6–13 min): "
    "pip install 'ragchat[llama]' (or use --backend transformers)."
)


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens `a` and `b` share, at most `limit`."""
    n = 0
    for x, y in zip(a[:limit], b[:limit], strict=False):
        if x != y:
            break
        n += 1
    return n


def available() -> bool:
    """Whether llama_cpp can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class GGUFChatTemplate:
    """The GGUF's `tokenizer.chat_template`, rendered like transformers'
    `apply_chat_template(..., tokenize=False)`: a sandboxed jinja2 environment with
    trim_blocks/lstrip_blocks, `raise_exception` and `strftime_now`, and the special tokens
    as variables."""

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.chat_template = template
        self._template = env.from_string(template)
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}

    def apply_chat_template(
        self,
        conversation: Sequence[dict[str, str]],
        *,
        tokenize: bool = False,
        add_generation_prompt: bool = True,
        **_: Any,
    ) -> str:
        if tokenize:
            raise ValueError("GGUFChatTemplate renders text only (tokenize=False)")
        return self._template.render(
            messages=list(conversation),
            add_generation_prompt=add_generation_prompt,
            **self._specials,
        )


class LlamaCppGenerator(GreedyLoop):
    """A GGUF model run by llama.cpp, greedy decoding (see the module docstring)."""

    def __init__(self, llm: Any, *, name: str, load_seconds: float = 0.0, threads: int = 0) -> None:
        import llama_cpp

        super().__init__()
        self._llama_cpp = llama_cpp
        self.llm = llm
        self.name = name
        self.load_seconds = load_seconds
        self.last_stats: GenerationStats | None = None
        # A model trained on a shorter context than MAX_CONTEXT reads no further than that.
        self.context_window = min(int(llm.n_ctx()), int(llm._model.n_ctx_train()) or MAX_CONTEXT)
        self._n_vocab = int(llm.n_vocab())
        self._bos_text = self._special_text(llm.token_bos())
        eos_text = self._special_text(llm.token_eos())
        template = llm.metadata.get("tokenizer.chat_template")
        tokenizer = (
            GGUFChatTemplate(template, bos_token=self._bos_text, eos_token=eos_text)
            if template
            else None
        )
        self.prompt_format: PromptFormat = prompt_format_for(tokenizer)
        self.scores_continuations = True
        self.threads_setting = threads  # 0: chosen from the free cores at every call
        self.threads = int(llm.context_params.n_threads)
        # (prompt token ids, KV state of sequence 0 after them), most recent last.
        self._kept: list[tuple[tuple[int, ...], Any]] = []
        self.reused_tokens = 0  # of the last prompt, taken from the cache (not prefilled)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.prompt_format.stop

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a full prompt; BOS is added (when the model uses one) unless the
        chat template already wrote it."""
        add_bos = not (self._bos_text and prompt.startswith(self._bos_text))
        return list(self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    def _pick_threads(self) -> None:
        """Use the cores free right now (hardware.compute_threads): llama.cpp's threads
        spin-wait for each other, so one more than the free cores stalls every step."""
        if self.threads_setting > 0:
            return
        from ragchat.hardware import compute_threads

        threads = compute_threads()
        if threads != self.threads:
            self.llm._ctx.set_n_threads(threads, threads)
            self.threads = threads

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> np.ndarray | None:
        """Evaluate the prompt, reusing the cached tokens it starts with; the last
        position's logits, or None when cancelled. Threads are re-chosen first."""
        self._pick_threads()
        llm = self.llm
        limit = len(ids) - 1  # at least one token is evaluated for logits
        common = _common_prefix(llm.input_ids[: llm.n_tokens], ids, limit)
        kept = max(self._kept, key=lambda k: _common_prefix(k[0], ids, limit), default=None)
        if kept is not None and _common_prefix(kept[0], ids, limit) >= common + MIN_SAVING:
            self._restore(*kept)
            common = _common_prefix(kept[0], ids, limit)
        llm.n_tokens = common  # the next eval drops the cache from here on
        self.reused_tokens = common
        logits: np.ndarray | None = None
        for start in range(common, len(ids), PREFILL_CHUNK):
            if cancel is not None and cancel.is_set():
                return None
            logits = self._eval(ids[start : start + PREFILL_CHUNK])
        self._keep(ids)
        return logits

    def forget_prompts(self) -> None:
        """Drop the KV cache and every kept prompt state: the next prompt is prefilled
        whole (benchmarks)."""
        self.llm.reset()
        self._kept.clear()

    def _keep(self, ids: list[int]) -> None:
        """Remember the KV state after the prompt `ids` (see KEPT_PROMPTS)."""
        ctx = self.llm._ctx.ctx
        size = self._llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = self._llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if not written:
            return
        key = tuple(ids)
        self._kept = [k for k in self._kept if k[0] != key][-(KEPT_PROMPTS - 1) :]
        self._kept.append((key, buffer))

    def _restore(self, ids: tuple[int, ...], buffer: Any) -> None:
        """Put back a kept KV state: the context holds `ids` again."""
        llm = self.llm
        if not self._llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(buffer), 0):
            llm.n_tokens = 0  # nothing usable restored: prefill from the start
            return
        llm.input_ids[: len(ids)] = ids
        llm.n_tokens = len(ids)

    def _step(self, token: int) -> np.ndarray:
        return self._eval([token])

    def _pick(self, logits: np.ndarray) -> tuple[int, float]:
        token = int(logits.argmax())
        return token, _log_softmax_at(logits, token)

    def _is_end(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_token_is_eog(self.llm._model.vocab, token))

    def _decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def _eval(self, tokens: Sequence[int]) -> np.ndarray:
        """Append `tokens` to the sequence; the logits after the last one (a copy)."""
        self.llm.eval(tokens)
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()

    def _score_continuation(
        self, text: str, logits: np.ndarray, n_prompt: int
    ) -> tuple[float, ...]:
        """Log-probabilities of `text`'s tokens after the prompt; the sequence is rolled
        back to the prompt afterwards."""
        ids = list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        if not ids:
            return ()
        lps = [_log_softmax_at(logits, ids[0])]
        for previous, token in itertools.pairwise(ids):
            lps.append(_log_softmax_at(self._eval([previous]), token))
        self.llm.n_tokens = n_prompt
        return tuple(lps)


def _log_softmax_at(logits: np.ndarray, index: int) -> float:
    top = float(logits.max())
    return float(logits[index]) - top - float(np.log(np.exp(logits - top).sum()))


def load_llamacpp(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> LlamaCppGenerator:
    """Load a GGUF model (preset or .gguf path) with llama.cpp on the CPU."""
    from ragchat.weights import resolve_gguf

    if not available():
        raise ModelUnavailableError(INSTALL_HINT)
    started = time.perf_counter()
    gguf = resolve_gguf(spec, settings, on_progress)
    if gguf is None:
        raise ModelUnavailableError(
            f"the llama.cpp backend runs GGUF files; {spec!r} is not one (a preset with GGUF "
            "weights or a .gguf path). Use --backend transformers for model folders and hub ids."
        )
    return open_gguf(gguf, name=spec, threads=settings.threads, started=started)


_params_lock = threading.RLock()  # open_gguf may run inside another _without_amx_kernels


@contextlib.contextmanager
def _without_amx_kernels(gguf: Path | None = None) -> Iterator[None]:
    """On a CPU that reports AMX, load the model without llama.cpp's AMX kernels, which
    crashed with SIGILL on the AMX VMs here (`hardware.cpu_has_amx`). Their switch,
    `use_extra_bufts`, also turns off the interleaved ("repacked") weight layout of the
    AVX2 kernels, which the model in `gguf` gets back explicitly (_repack_overrides):
    prompts are read 1.7x faster with it than without. Set RAGCHAT_LLAMA_AMX=1 to keep
    the AMX kernels (model_params)."""
    import os

    from ragchat.hardware import cpu_has_amx

    if os.environ.get("RAGCHAT_LLAMA_AMX") == "1" or not cpu_has_amx():
        yield
        return
    overrides = _repack_overrides(gguf) if gguf is not None else None
    with model_params(extra_bufts=False, overrides=overrides):
        yield


@contextlib.contextmanager
def model_params(
    *, extra_bufts: bool, overrides: ctypes.Array[_BuftOverride] | None
) -> Iterator[None]:
    """Models loaded inside get llama.cpp's default parameters with `use_extra_bufts` as
    given and, unless None, these tensor buffer-type overrides (_repack_overrides). `Llama`
    takes neither as an argument, so the defaults it starts from are amended while it
    loads (bench/llama_layouts.py loads each layout this way)."""
    import llama_cpp.llama_cpp as lib

    with _params_lock:
        defaults = lib.llama_model_default_params

        def amended() -> Any:
            params = defaults()
            params.use_extra_bufts = extra_bufts
            if overrides is not None:
                params.tensor_buft_overrides = ctypes.addressof(overrides)
            return params

        lib.llama_model_default_params = amended
        try:
            yield
        finally:
            lib.llama_model_default_params = defaults


# Weight types llama.cpp's CPU backend repacks for its AVX2 kernels, each matrix with a
# row count divisible by 8 (ggml-cpu/repack.cpp); it crashes on a matrix it can't repack.
_REPACKABLE = ("Q4_0", "Q4_K")


class _BuftOverride(ctypes.Structure):
    """llama.h's llama_model_tensor_buft_override: a tensor-name regex and the buffer
    type for the tensors it matches."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _repack_overrides(gguf: Path) -> ctypes.Array[_BuftOverride] | None:
    """A NULL-terminated override list that places the repackable weight matrices of the
    model in `gguf` in llama.cpp's CPU_REPACK buffer type, as use_extra_bufts does on a CPU
    without AMX. None where that can't be had (no AVX2, another llama.cpp build, an
    unreadable file): the model then loads in the plain layout."""
    try:
        from gguf import GGUFReader

        names = [
            tensor.name
            for tensor in GGUFReader(str(gguf)).tensors
            if tensor.tensor_type.name in _REPACKABLE
            and tensor.name.startswith("blk.")  # not the embedding table: a lookup, no matmul
            and len(tensor.shape) == 2
            and int(tensor.shape[1]) % 8 == 0
        ]
        buft = _repack_buffer_type()
    except (OSError, ValueError, AttributeError, ImportError):
        return None
    if not names or buft is None:
        return None
    pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    return (_BuftOverride * 2)(_BuftOverride(pattern.encode(), buft), _BuftOverride(None, None))


def _repack_buffer_type() -> int | None:
    """The address of llama.cpp's CPU_REPACK buffer type, through ggml's public backend
    API; None when the CPU lacks AVX2 or the build has no such type."""
    import llama_cpp.llama_cpp as lib

    folder = Path(lib._lib._name).parent  # type: ignore[attr-defined]
    ggml, cpu = ctypes.CDLL(str(folder / "libggml.so")), ctypes.CDLL(str(folder / "libggml-cpu.so"))
    if not cpu.ggml_cpu_has_avx2():
        return None
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    ggml.ggml_backend_buft_name.restype = ctypes.c_char_p
    ggml.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    device = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not device:
        return None
    address = ggml.ggml_backend_reg_get_proc_address(
        ggml.ggml_backend_dev_backend_reg(device), b"ggml_backend_dev_get_extra_bufts"
    )
    if not address:
        return None
    extra_bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    found, i = extra_bufts(device), 0  # a NULL-terminated list
    while found and found[i] and ggml.ggml_backend_buft_name(found[i]) != b"CPU_REPACK":
        i += 1
    return int(found[i]) if found and found[i] else None


def open_gguf(
    gguf: Path, *, name: str, threads: int = 0, started: float | None = None
) -> LlamaCppGenerator:
    """A LlamaCppGenerator over the GGUF file `gguf`."""
    from llama_cpp import Llama

    from ragchat.hardware import compute_threads

    _quiet_llama_log()
    started = time.perf_counter() if started is None else started
    n_threads = compute_threads(threads)
    try:
        # verbose=False would point the process's stdout and stderr (the file descriptors)
        # at /dev/null while the model loads: the chat console, drawing its prompt from
        # another thread meanwhile, lost those writes and its toolbar stayed garbled. Its
        # own log goes through _quiet_llama_log; its Python prints are dropped here.
        with contextlib.redirect_stderr(io.StringIO()), _without_amx_kernels(gguf):
            llm = Llama(
                model_path=str(gguf),
                n_ctx=MAX_CONTEXT,
                n_batch=PREFILL_CHUNK,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                verbose=True,
            )
        llm.verbose = False
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelUnavailableError(f"llama.cpp cannot load {gguf}: {exc}") from exc
    return LlamaCppGenerator(
        llm, name=name, load_seconds=time.perf_counter() - started, threads=threads
    )


# ggml's log levels (ggml.h): 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the last.
_GGML_ERROR = 4


_GGML_CONT = 5


_log_state = {"show": False}


_log_callback: Any = None


def _quiet_llama_log() -> None:
    """Route llama.cpp's own log to stderr for errors only. llama-cpp-python's handler maps
    ggml's levels from an older enum, so with verbose=False warnings (e.g. "n_ctx_per_seq <
    n_ctx_train", expected here) still reached the user's console."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes
    import sys

    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _GGML_CONT:
            _log_state["show"] = level == _GGML_ERROR
        if _log_state["show"]:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # ctypes needs the callback kept alive
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
