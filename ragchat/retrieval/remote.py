"""The `openai:NAME` embedder: vectors from an OpenAI-compatible /v1/embeddings endpoint
(vLLM, llama.cpp's llama-server --embeddings, llama-cpp-python's server --embedding true,
Ollama's /v1), so a GPU server can embed a large corpus. The index manifest records
"openai:NAME" like any embedder id, and opening an index with another embedder is refused
the same way; the server's URL is not part of the id (the same model elsewhere gives the
same vectors).

Two things differ from the in-process embedders:

- Chunk sizes are counted in words and punctuation marks (`token_spans`), not in the
  model's tokens, which the API does not expose as offsets: a 160-"token" chunk is about
  200 model tokens for English text.
- A server that returns one vector per token (llama-cpp-python serving a causal LM with no
  pooling) has them mean-pooled here. llama-cpp-python 0.3.16 also fails on more than one
  input per request (its issue #2051, fixed in 0.3.23): when a batch fails with a server
  error, this embedder sends one text per request from then on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragchat.errors import GenerationError, ModelUnavailableError
from ragchat.openai_api import OpenAIClient, endpoint_for

if TYPE_CHECKING:
    from ragchat.config import Settings


# Words and single punctuation marks: the "tokens" chunking counts for a remote model.
_TOKEN = re.compile(r"\w+|[^\w\s]")


# Passages are cut at this many word tokens (~650 model tokens), within the context of
# common embedding models (512 for BERT-sized ones: chunks default to 160).
MAX_WORD_TOKENS = 512


class OpenAIEmbedder:
    """Embeddings from the server's /embeddings, L2-normalised here."""

    def __init__(self, name: str, settings: Settings) -> None:
        if not name:
            raise ModelUnavailableError(
                "--embedder openai:NAME needs the server's model name after 'openai:'."
            )
        base_url = settings.openai_embed_base_url or settings.openai_base_url
        endpoint = endpoint_for(settings, base_url, f"the embedder openai:{name}")
        self.client = OpenAIClient(endpoint)
        self.name = name
        self.id = f"openai:{name}"
        self.max_tokens = MAX_WORD_TOKENS
        self.needs_fit = False
        self._batch_limit: int | None = None  # 1 once the server failed on a batch
        self.dim = 0
        self.client.find_model(name, f"--embedder openai:{name}")
        self.dim = int(self._request(["dimension probe"]).shape[1])

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the words and punctuation marks of `text`."""
        return [m.span() for m in _TOKEN.finditer(text)]

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: Literal["query", "passage"],
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised; queries and passages alike."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        while done < len(texts):
            size = min(batch_size, self._batch_limit or batch_size)
            batch = [_cut(t) for t in texts[done : done + size]]
            try:
                vectors = self._request(batch)
            except GenerationError:
                if len(batch) == 1 or self._batch_limit == 1:
                    raise
                self._batch_limit = 1  # see the module docstring
                continue
            out[done : done + len(batch)] = vectors
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
        return out

    def _request(self, batch: list[str]) -> np.ndarray:
        answer = self.client.post_json(
            "/embeddings", {"model": self.name, "input": batch, "encoding_format": "float"}
        )
        rows = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or len(rows) != len(batch):
            raise GenerationError(
                f"the server at {self.client.endpoint.base_url} answered /embeddings for "
                f"{len(batch)} texts with {len(rows) if isinstance(rows, list) else 'no'} "
                "vectors."
            )
        rows = sorted(rows, key=lambda r: int(r.get("index", 0)))
        vectors = np.stack([_pooled(r.get("embedding")) for r in rows])
        if self.dim and vectors.shape[1] != self.dim:
            raise GenerationError(
                f"the embedder openai:{self.name} returned {vectors.shape[1]}-dimensional "
                f"vectors, not {self.dim}: has the server's model changed?"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def expect(self, texts: int) -> None:
        """Nothing to prepare: the server batches as it likes."""

    def fit(self, texts: Sequence[str]) -> None:
        """Nothing to learn: the server's vectors are used as they are."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Nothing to restore."""


def _pooled(embedding: Any) -> np.ndarray:
    """One vector: the embedding as sent, or the mean of per-token vectors."""
    array = np.asarray(embedding, dtype=np.float32)
    if array.ndim == 2 and len(array):
        return array.mean(axis=0)
    if array.ndim != 1 or not len(array):
        raise GenerationError(f"an embedding came back with shape {array.shape}")
    return array


def _cut(text: str) -> str:
    """`text` up to its MAX_WORD_TOKENS-th word token."""
    spans = [m.end() for m in _TOKEN.finditer(text)]
    return text[: spans[MAX_WORD_TOKENS - 1]] if len(spans) > MAX_WORD_TOKENS else text
