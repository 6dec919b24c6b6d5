"""What every command shares: common options, building Settings from flags, index paths,
stdin lines, JSON output and exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ragchat.config import RETRIEVAL_METHODS, Settings, load_settings

EXIT_OK = 0


EXIT_ERROR = 1


EXIT_USAGE = 2


EXIT_PARTIAL = 3  # some files skipped or failed


EXIT_NOTHING = 4  # nothing indexed and nothing there before


def add_common_options(p: argparse.ArgumentParser, index: bool = True) -> None:
    g = p.add_argument_group("common options")
    if index:
        g.add_argument(
            "--index",
            "-i",
            default="default",
            help="index name under the index dir, or a path (default: %(default)s)",
        )
    g.add_argument("--index-dir", type=Path, help="where named indexes live (default ./indexes)")
    g.add_argument(
        "--cache-dir", type=Path, help="model cache (default ~/.cache/ragchat; RAGCHAT_CACHE_DIR)"
    )
    g.add_argument(
        "--allow-download",
        action="store_true",
        default=None,
        help="let Hugging Face hub ids be downloaded (off by default)",
    )
    g.add_argument(
        "--debug", action="store_true", default=None, help="show tracebacks (RAGCHAT_DEBUG=1)"
    )


def add_retrieval_options(p: argparse.ArgumentParser, k_help: str) -> None:
    p.add_argument("-k", type=int, help=k_help)
    p.add_argument(
        "--method",
        dest="retrieval",
        choices=RETRIEVAL_METHODS,
        help="retrieval method (default hybrid: dense + BM25 fused)",
    )


def add_chunking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embedder",
        help="minilm (default), a sentence-transformers folder or hub "
        "id, or lm:MODEL for a causal LM's mean-pooled hidden states",
    )
    p.add_argument("--chunk-tokens", type=int, help="chunk size in embedder tokens")
    p.add_argument("--chunk-overlap", type=int, help="overlap between chunks in tokens")


def settings_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    fields = (
        "index_dir",
        "cache_dir",
        "allow_download",
        "debug",
        "k",
        "retrieval",
        "pdf_timeout_s",
        "model",
        "backend",
        "device",
        "max_new_tokens",
        "threads",
        "chunk_tokens",
        "chunk_overlap",
        "openai_base_url",
    )
    overrides = {f: getattr(args, f, None) for f in fields}
    if getattr(args, "no_fallback", False):
        overrides["fallback_extractor"] = False
    settings = load_settings(overrides, env)
    from ragchat.hub import configure_hub

    configure_hub(settings.allow_download)
    return settings


def index_path(args: argparse.Namespace, settings: Settings, value: str | None = None) -> Path:
    from ragchat.index.store import resolve_index_path

    return resolve_index_path(
        value or getattr(args, "index", None) or "default", settings.index_dir
    )


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def stdin_lines() -> Sequence[str]:
    """Non-blank lines of stdin, lazily, so a pipe can feed queries one at a time."""
    return LazyLines(sys.stdin)


class LazyLines(Sequence[str]):
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __iter__(self) -> Any:
        for line in self._stream:
            line = line.strip()
            if line:
                yield line

    def __len__(self) -> int:  # only used to decide headers: more than one
        return 2

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("stream of queries is not indexable")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
