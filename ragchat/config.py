"""Settings, built once (defaults < config file < RAGCHAT_* environment < flags) and passed
down. Nothing else in ragchat reads os.environ."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ragchat.errors import ConfigError


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragchat"


def _default_config_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ragchat" / "config.toml"


# How the retriever finds passages (retrieval/retriever.py): dense + BM25 fused, or one.
RETRIEVAL_METHODS = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class Settings:
    """Everything that can be configured. Paths are absolute once loaded."""

    index_dir: Path = Path("indexes")
    cache_dir: Path = Path(".cache/ragchat")
    allow_download: bool = False
    # retrieval side
    embedder: str = "minilm"
    chunk_tokens: int = 160
    chunk_overlap: int = 32
    embed_batch_size: int = 32
    retrieval: str = "hybrid"  # hybrid | dense | bm25
    k: int = 5
    # drop other documents' passages when the question names what only one document holds
    # (retrieval/routing.py): cleaner passages and citations, answers unchanged on qa dev
    route_documents: bool = True
    # after ingest, the model summarises each section of a play or screenplay (minutes per
    # script, once; answer/summaries.py): story questions are answered from the summaries
    summarise_scripts: bool = True
    # extraction
    pdf_timeout_s: float = 60.0
    extractor: str = "pypdf"  # first extractor: pypdf | pdfium (the other is the fallback)
    fallback_extractor: bool = True
    # generation side
    model: str = "qwen1.5b"
    backend: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    max_new_tokens: int = 160
    trust_remote_code: bool = False
    threads: int = 0  # 0 = the free physical cores (hardware.compute_threads)
    # answering policy (answer/qa.py AnswerPolicy); the thresholds default to the model
    # preset's calibrated ones (answer/abstention.py), "off" switches a rule off
    max_prompt_tokens: int = 800
    focus_sentences: int = 3  # 0 = whole passages
    explain_sentences: int = 8  # the same for describe / explain / why / how questions
    script_speeches: int = 8  # a play's or screenplay's best speeches, speakers named
    script_neighbours: int = 0  # and this many speeches before each of them
    # and the summaries of this many of its sections (made at ingest: summarise_scripts)
    story_sections: int = 3
    min_coverage: float | None = None
    max_unknown_names: float | None = None
    min_sentence_top: float | None = None  # off-topic over prose: with min_passage_coverage
    min_passage_coverage: float | None = None
    min_dense_top: float | None = None  # off-topic over a script: with the bar below
    min_script_passage_coverage: float | None = None
    no_answer_threshold: float | None = None
    verify_threshold: float | None = None
    min_answer_coverage: float | None = None
    debug: bool = False
    # scanned PDFs: Tesseract OCR of pages without a text layer (needs `tesseract` + pytesseract)
    ocr: bool = False
    ocr_language: str = "eng"  # Tesseract language(s), e.g. "eng+deu"
    # chat history: ~/.cache/ragchat/chat-history, mode 0600, the last chat_history_size questions
    chat_history: bool = True
    chat_history_size: int = 1000
    # encrypted PDFs: a file of passwords (one per line) and/or one password, tried in turn
    # (RAGCHAT_PASSWORD_FILE / RAGCHAT_PASSWORD keep them out of `ps`); never shown or stored
    password_file: str = ""
    password: str = field(default="", repr=False)
    # what runs the default embedder: auto (ONNX Runtime where measured faster) | torch |
    # onnx | onnx-int8 (its own vector family: never mixed with float32 vectors)
    embedder_runtime: str = "auto"
    # OpenAI-compatible server (--backend openai, --embedder openai:NAME; docs/models.md).
    openai_base_url: str = ""  # e.g. http://127.0.0.1:8080/v1
    openai_embed_base_url: str = ""  # the embedding server; "" = openai_base_url
    # Only from RAGCHAT_OPENAI_API_KEY, config.toml or OPENAI_API_KEY, never a flag; kept
    # out of repr so it is never printed with the settings.
    openai_api_key: str = field(default="", repr=False)
    openai_connect_timeout_s: float = 5.0
    openai_read_timeout_s: float = 60.0  # a server silent this long has stalled
    openai_retries: int = 3  # on HTTP 429 and 5xx, with backoff
    openai_logprobs: bool = False  # ask for the answer tokens' log-probabilities

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, kind: Any, value: Any, origin: str) -> Any:
    """Turn a config-file or environment value into the field's type."""
    try:
        if isinstance(kind, str) and kind.endswith(" | None"):
            text = str(value).strip().lower()
            if text in ("", "none", "default"):
                return None
            if text == "off":  # no comparison with NaN holds: the rule never fires
                return float("nan")
            kind = kind.removesuffix(" | None")
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _BOOL_TRUE:
                return True
            if text in _BOOL_FALSE:
                return False
            raise ValueError(value)
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (Path, "Path"):
            return Path(str(value)).expanduser()
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name} = {value!r} is not a valid {kind}") from exc


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build Settings from defaults, the config file, RAGCHAT_* variables and `overrides`
    (flags; None values are ignored). `env` defaults to os.environ."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {
        "index_dir": Path("indexes"),
        "cache_dir": _default_cache_dir(env),
    }
    types = {f.name: f.type for f in fields(Settings)}

    path = config_file or Path(env.get("RAGCHAT_CONFIG") or _default_config_file(env))
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[name] = _coerce(name, types[name], value, str(path))

    for name, kind in types.items():
        var = "RAGCHAT_" + name.upper()
        if var in env:
            values[name] = _coerce(name, kind, env[var], var)

    # The generic variable other OpenAI clients read, below ragchat's own and config.toml.
    if "openai_api_key" not in values and env.get("OPENAI_API_KEY"):
        values["openai_api_key"] = env["OPENAI_API_KEY"]

    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in types:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, types[name], value, "--" + name.replace("_", "-"))

    settings = Settings(**values)
    return settings.replace(
        index_dir=settings.index_dir.expanduser().resolve(),
        cache_dir=settings.cache_dir.expanduser().resolve(),
    )
