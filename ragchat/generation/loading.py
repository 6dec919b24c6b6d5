"""Pick and load an engine for a model spec (preset, folder, .gguf, hub id)."""

from __future__ import annotations

from collections.abc import Callable

from ragchat.config import Settings
from ragchat.errors import ConfigError
from ragchat.generation.base import Generator
from ragchat.generation.hf import load_transformers
from ragchat.weights import preset_for


def load_llamacpp(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> Generator:
    """The llama.cpp backend (ragchat/llamacpp.py), imported only when asked for."""
    from ragchat.generation.llamacpp import load_llamacpp as load

    return load(spec, settings, on_progress)


def load_openai(
    spec: str, settings: Settings, on_progress: Callable[[int, int], None] | None = None
) -> Generator:
    """An OpenAI-compatible server at settings.openai_base_url (generation/openai.py)."""
    from ragchat.generation.openai import load_openai as load

    return load(spec, settings, on_progress)


BACKENDS: dict[str, Callable[..., Generator]] = {
    "transformers": load_transformers,
    "llamacpp": load_llamacpp,
    "openai": load_openai,
}


def auto_backend(spec: str, device: str = "auto") -> str:
    """The backend "auto" picks for `spec`: llama.cpp for GGUF models (presets with GGUF
    weights, .gguf files) when llama-cpp-python is installed — ~5× faster on a CPU —, else
    transformers (also whenever --device cuda asks for the GPU: the extra is a CPU build)."""
    if device == "cuda":
        return "transformers"
    from ragchat.generation.llamacpp import available
    from ragchat.weights import PRESETS

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
    generator = loader(spec, settings, on_progress)
    generator.preset = preset_for(spec, settings)
    return generator
