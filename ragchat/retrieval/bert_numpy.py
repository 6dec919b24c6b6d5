"""A BERT encoder forward pass in numpy, for the packaged MiniLM: queries and the handful
of sentences an answer focuses on are embedded without importing torch and transformers
(~5 s of every `search`, `ask` and `chat` start on a 2-core laptop, docs/benchmarks.md).

Same weights (the model.safetensors file), same tokenizer (tokenizer.json via the Rust
`tokenizers` package), float32 throughout; vectors match the transformers path to a cosine
of 0.99999 (tests/test_console.py). Bulk passage embedding at ingest goes to a full model
(`MiniLMEmbedder` below): the exported float32 ONNX one for up to LIGHT_MAX_TEXTS passages
(no torch import), torch beyond, where it is faster (bf16 where the CPU has it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

Kind = Literal["query", "passage"]


# At most this many texts are embedded in numpy; more (an ingest) go to the torch model,
# which is ~5x faster per passage once loaded (ja-public: 373 chunks of 12 files took 54 s
# in numpy, one file of 31 at a time, against ~7 s on torch in bf16) but costs seconds
# to import and load.
NUMPY_MAX_TEXTS = 64


# Up to this many passages an already-exported float32 ONNX model (same vectors, no torch
# import) finishes first even where torch embeds faster: on the AVX512-BF16 VM torch does
# 56 chunks/s against ONNX's 42 but costs ~5 s to import and load, so they break even near
# 800 chunks (ja-public, 373 chunks: 11.3 s on ONNX, 15.5 s on torch, docs/benchmarks.md).
LIGHT_MAX_TEXTS = 800


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[None]:
    """Limit numpy's BLAS to `threads` inside the block (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def _erf(x: np.ndarray) -> np.ndarray:
    """erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none, and BERT's GELU
    is the exact one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class NumpyBert:
    """BertModel's last hidden state, in numpy, from a Hugging Face BERT folder."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{folder} is not a BERT model with GELU")
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        raw = load_file(str(folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
        self.w = {k.removeprefix(prefix): v.astype(np.float32) for k, v in raw.items()}

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(batch, seq) token ids and attention mask → (batch, seq, hidden) float32."""
        w = self.w
        batch, seq = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:seq][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        # Padded keys get -inf-like scores: (batch, 1, 1, seq).
        bias = ((1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min).astype(np.float32)
        dim = x.shape[-1]
        head = dim // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def linear(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
                # 2-D, so numpy hands it to BLAS (a 3-D @ runs numpy's own slow loop).
                out = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"].T
                return (out + w[p + name + ".bias"]).reshape(*t.shape[:-1], -1)

            def split(t: np.ndarray) -> np.ndarray:  # (batch, seq, dim) → (batch, h, seq, d)
                return t.reshape(batch, seq, self.heads, head).transpose(0, 2, 1, 3)

            q = split(linear(x, "attention.self.query"))
            k = split(linear(x, "attention.self.key"))
            v = split(linear(x, "attention.self.value"))
            scores = np.einsum("bhqd,bhkd->bhqk", q, k, optimize=True) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = scores / scores.sum(-1, keepdims=True)
            context = np.einsum("bhqk,bhkd->bhqd", attn, v, optimize=True)
            context = context.transpose(0, 2, 1, 3).reshape(batch, seq, dim)
            x = _layer_norm(
                linear(context, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inner = linear(x, "intermediate.dense")
            inner = 0.5 * inner * (1.0 + _erf(inner / np.sqrt(2.0)))
            x = _layer_norm(
                linear(inner, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        return x.astype(np.float32)


class MiniLMEmbedder:
    """The packaged MiniLM (mean pooling, normalised): small requests run on NumpyBert,
    big ones (more than NUMPY_MAX_TEXTS texts) on the transformers model from `load_full`,
    loaded on first need."""

    needs_fit = False
    runtime = "torch"  # the numpy path reproduces torch's float32 vectors (manifest family)

    def __init__(
        self,
        folder: Path,
        embedder_id: str,
        load_full: Callable[[], Any],  # -> embedders.Embedder (imported lazily)
        load_light: Callable[[], Any] | None = None,  # -> an Embedder without torch, or None
    ) -> None:
        from tokenizers import Tokenizer

        self.id = embedder_id
        self.folder = folder
        st_config = json.loads((folder / "sentence_bert_config.json").read_text("utf-8"))
        self.max_seq_length = int(st_config.get("max_seq_length") or 256)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._offsets = Tokenizer.from_str(tokenizer.to_str())
        self._offsets.no_truncation()
        self._offsets.no_padding()
        tokenizer.enable_truncation(self.max_seq_length)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        special = tokenizer.post_processor.num_special_tokens_to_add(False)  # [CLS] [SEP]
        self.max_tokens = self.max_seq_length - special
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.dim = int(config["hidden_size"])
        self._load_full = load_full
        self._load_light = load_light
        self._full: Any = None
        self._bert: NumpyBert | None = None

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
        if len(texts) > NUMPY_MAX_TEXTS:
            self.expect(len(texts))
        if self._full is not None:  # loaded: faster for any number of texts
            return self._full.embed(texts, kind=kind, batch_size=batch_size, on_batch=on_batch)
        if self._bert is None:
            self._bert = NumpyBert(self.folder)
        # OpenBLAS spin-waits like llama.cpp: on a busy 2-core machine its default two
        # threads made one query 50× slower (1.7 s vs 0.03 s). One thread for a query.
        from ragchat.hardware import compute_threads

        threads = 1 if len(texts) <= 8 else compute_threads()
        with _blas_threads(threads):
            return self._embed_numpy(self._bert, texts, batch_size, on_batch)

    def _embed_numpy(
        self,
        bert: NumpyBert,
        texts: Sequence[str],
        batch_size: int,
        on_batch: Callable[[int], None] | None,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        done = 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in batch])
            seq = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(batch), seq), dtype=np.int64)
            mask = np.zeros((len(batch), seq), dtype=np.float32)
            for row, e in enumerate(encodings):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1.0
            hidden = bert.hidden(ids, mask)  # (batch, seq, dim)
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1.0)[:, None]
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.maximum(norms, 1e-12)
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
        return out

    def expect(self, texts: int) -> None:
        """More than NUMPY_MAX_TEXTS passages coming (an ingest of several files, each
        small enough for numpy on its own): load the bulk model now — the light one (ONNX,
        when exported) for up to LIGHT_MAX_TEXTS, else the torch one."""
        if texts <= NUMPY_MAX_TEXTS or self._full is not None:
            return
        if texts <= LIGHT_MAX_TEXTS and self._load_light is not None:
            self._full = self._load_light()
        if self._full is None:
            self._full = self._load_full()

    def fit(self, texts: Sequence[str]) -> None:
        return None

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None
