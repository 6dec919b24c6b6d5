"""The one place that decides whether Hugging Face libraries may reach the network.

ragchat is offline by default: without HF_HUB_OFFLINE a hub name hangs ~85 s on a machine
with no route to the hub before failing. `--allow-download` / RAGCHAT_ALLOW_DOWNLOAD=1
lifts it.
"""

from __future__ import annotations

import os

from ragchat.errors import ModelUnavailableError

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def configure_hub(allow_download: bool) -> None:
    """Set the offline switches of huggingface_hub/transformers for this process.

    Call before the first import of transformers or sentence_transformers (they read
    the variables at import time); calling again later keeps the first answer.
    """
    if allow_download:
        for var in _OFFLINE_VARS:
            os.environ.pop(var, None)
    else:
        for var in _OFFLINE_VARS:
            os.environ[var] = "1"
        # Offline there is nothing to download, and transformers' "Loading weights" bar
        # would only clutter ragchat's own progress output.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Telemetry is a network call too.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def offline_error(name: str, what: str = "model") -> ModelUnavailableError:
    """The error for a hub id that is not available locally while offline."""
    return ModelUnavailableError(
        f"{what} {name!r} is not a local folder, a packaged preset, or in the Hugging Face "
        "cache, and ragchat is offline by default. Give a local folder, pick a packaged "
        "preset (`ragchat models`), or allow downloads with --allow-download "
        "(or RAGCHAT_ALLOW_DOWNLOAD=1)."
    )
