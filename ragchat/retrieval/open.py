"""Open an index with the embedder its manifest names, or create it; refuse explicit
settings that contradict what the index was built with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ragchat.errors import IndexMismatchError
from ragchat.index.store import IndexConfig, IndexStore
from ragchat.retrieval.onnxembed import vector_family

if TYPE_CHECKING:
    from ragchat.config import Settings
    from ragchat.retrieval.embedders import Embedder


def open_or_create(
    index_path: Path, settings: Settings, embedder_spec: str | None, create: bool
) -> tuple[IndexStore, Embedder]:
    """Open the index at `index_path` with the embedder its manifest names (refusing an
    explicit conflicting `embedder_spec`), or create it when `create` is set."""
    from ragchat.index.store import MANIFEST
    from ragchat.retrieval.embedders import load_embedder

    if (index_path / MANIFEST).is_file():
        store = IndexStore.open(index_path)
        check_compatible(store, settings, embedder_spec)
        embedder = load_embedder(
            store.config.embedder, settings, runtime=_runtime_for(store, settings)
        )
        state = store.embedder_state()
        if state:
            embedder.load_state(state)
        return store, embedder
    if not create:
        return IndexStore.open(index_path), None  # type: ignore[return-value]  # raises
    embedder = load_embedder(embedder_spec or settings.embedder, settings)
    config = IndexConfig(
        embedder=embedder.id,
        dim=embedder.dim,
        chunk_tokens=min(settings.chunk_tokens, embedder.max_tokens),
        chunk_overlap=settings.chunk_overlap,
        embedder_runtime=getattr(embedder, "runtime", "torch"),
    )
    store, created = IndexStore.create_or_open(index_path, config)
    if created:
        return store, embedder
    # Another process created it meanwhile: use the embedder it recorded.
    store.close()
    return open_or_create(index_path, settings, embedder_spec, create=False)


def check_compatible(
    store: IndexStore,
    settings: Settings,
    embedder_spec: str | None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    max_tokens: int | None = None,
) -> None:
    """Refuse explicit settings that contradict what the index was built with. A chunk size
    is compared as the index got it: capped at the embedder's `max_tokens`."""
    cfg = store.config
    if chunk_tokens is not None and max_tokens is not None:
        chunk_tokens = min(chunk_tokens, max_tokens)
    if embedder_spec is not None and not _same_embedder(embedder_spec, cfg.embedder):
        raise IndexMismatchError(
            f"index {store.name} was built with embedder {cfg.embedder!r}, not "
            f"{embedder_spec!r}. To switch, run `ragchat rebuild {store.name} --embedder "
            f"{embedder_spec}`."
        )
    asked_runtime = settings.embedder_runtime
    if asked_runtime != "auto" and vector_family(asked_runtime) != vector_family(
        cfg.embedder_runtime
    ):
        raise IndexMismatchError(
            f"index {store.name} holds vectors made by embedder runtime "
            f"{cfg.embedder_runtime!r}, which {asked_runtime!r} does not reproduce (int8 and "
            f"float32 vectors differ). Use --embedder-runtime auto, or to switch run "
            f"`ragchat rebuild {store.name} --embedder-runtime {asked_runtime}`."
        )
    for flag, asked, have in (
        ("--chunk-tokens", chunk_tokens, cfg.chunk_tokens),
        ("--chunk-overlap", chunk_overlap, cfg.chunk_overlap),
    ):
        if asked is not None and asked != have:
            raise IndexMismatchError(
                f"index {store.name} was chunked with {flag} {have}, not {asked}. To switch, "
                f"run `ragchat rebuild {store.name} {flag} {asked}`."
            )


def _runtime_for(store: IndexStore, settings: Settings) -> str:
    """The runtime to embed queries and new chunks of `store` with: the asked one (checked
    by `check_compatible`), or under "auto" one of the vector family the index holds."""
    if settings.embedder_runtime != "auto":
        return settings.embedder_runtime
    return "onnx-int8" if vector_family(store.config.embedder_runtime) == "int8" else "auto"


def _same_embedder(spec: str, recorded: str) -> bool:
    """Whether a user's embedder spec names the embedder an index records (folders may be
    given relative or absolute, with or without their "st:" prefix)."""

    def normalise(value: str) -> str:
        kind, sep, rest = value.partition(":")
        if sep and kind in ("st", "lm"):
            path = Path(rest).expanduser()
            return f"{kind}:{path.resolve()}" if path.exists() else value
        path = Path(value).expanduser()
        return f"st:{path.resolve()}" if path.exists() else value

    return spec == recorded or normalise(spec) == normalise(recorded)
