"""What every command shares: common options, building Settings from flags, index paths,
stdin lines, JSON output and exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ragchat.config import RETRIEVAL_METHODS, Settings, load_settings
from ragchat.errors import UsageError

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
    p.add_argument(
        "--embedder-runtime",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        help="what runs minilm: auto (ONNX Runtime where measured faster; default), torch, "
        "onnx, or onnx-int8 (faster, slightly different vectors; RAGCHAT_EMBEDDER_RUNTIME)",
    )


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
        "extractor",
        "ocr",
        "ocr_language",
        "password_file",
        "embedder_runtime",
        "openai_base_url",
    )
    overrides = {f: getattr(args, f, None) for f in fields}
    if getattr(args, "no_fallback", False):
        overrides["fallback_extractor"] = False
    if getattr(args, "no_summaries", False):
        overrides["summarise_scripts"] = False
    settings = load_settings(overrides, env)
    _warnings_to_stderr()
    from ragchat.hub import configure_hub

    configure_hub(settings.allow_download)
    return settings


def index_path(args: argparse.Namespace, settings: Settings, value: str | None = None) -> Path:
    from ragchat.index.store import resolve_index_path

    return resolve_index_path(
        value or getattr(args, "index", None) or "default", settings.index_dir
    )


def silence_library_bars() -> None:
    """Keep other libraries' tqdm bars (transformers' "Converting and de-quantizing GGUF
    tensors", which ignores its own logging switches) off the terminal: for --quiet, and
    for the chat console, where a bar would tear through the prompt."""
    os.environ["TQDM_DISABLE"] = "1"


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _warnings_to_stderr() -> None:
    """Show the library's warnings (the "ragchat" logger: a damaged index file rebuilt,
    say) as `ragchat: ...` lines on stderr, once per process."""
    logger = logging.getLogger("ragchat")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("ragchat: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def passwords_from(args: argparse.Namespace, settings: Settings) -> list[str]:
    """Passwords to try on encrypted PDFs, in order: each --password, RAGCHAT_PASSWORD,
    then the lines of --password-file (RAGCHAT_PASSWORD_FILE). Never printed."""
    found = list(getattr(args, "password", None) or [])
    if settings.password:
        found.append(settings.password)
    if settings.password_file:
        file = Path(settings.password_file).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"cannot read the password file {file}: {why}") from exc
        # Only line ends are stripped: spaces may belong to a password.
        found.extend(line for line in text.splitlines() if line)
    return list(dict.fromkeys(found))


class BadLine(str):
    """A stdin line that is not UTF-8 (shown with U+FFFD where bytes were invalid)."""

    number: int


def stdin_lines() -> Sequence[str]:
    """Non-blank lines of stdin, lazily, so a pipe can feed queries one at a time. A line
    that is not UTF-8 comes as a BadLine: `check_line` turns it into a per-line error."""
    return LazyLines(getattr(sys.stdin, "buffer", sys.stdin))


def check_line(line: str) -> None:
    """Raise UsageError for a BadLine (so the batch reports it and goes on)."""
    if isinstance(line, BadLine):
        raise UsageError(
            f"line {line.number} of stdin is not valid UTF-8; send UTF-8 text, one query per line"
        )


class LazyLines(Sequence[str]):
    def __init__(self, stream: TextIO | Any) -> None:
        self._stream = stream

    def __iter__(self) -> Any:
        for number, raw in enumerate(self._stream, start=1):
            if isinstance(raw, str):
                line = raw.strip()
            else:
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    bad = BadLine(raw.decode("utf-8", "replace").strip())
                    bad.number = number
                    yield bad
                    continue
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
