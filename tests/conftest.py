"""Shared fixtures. Every test runs with its index dir, config and caches away from $HOME;
model caches are shared by the whole session (RAGCHAT_CACHE_DIR) so a model is assembled
or converted once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench"
SAMPLE_PDF = REPO / "docs" / "sample" / "gull-point.pdf"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model cache: $RAGCHAT_CACHE_DIR when set (CI keeps it between steps),
    else a temporary folder."""
    given = os.environ.get("RAGCHAT_CACHE_DIR")
    return Path(given) if given else tmp_path_factory.mktemp("ragchat-cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Path:
    """Point ragchat's index dir and config at tmp_path, and keep the network off."""
    monkeypatch.setenv("RAGCHAT_INDEX_DIR", str(tmp_path / "indexes"))
    monkeypatch.setenv("RAGCHAT_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("RAGCHAT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("RAGCHAT_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    """../shared/bench beside the checkout; skips (saying so) when it is not there."""
    if not BENCH.is_dir():
        pytest.skip(
            f"benchmark material not found at {BENCH}: these tests need ../shared/bench "
            "beside the checkout (CI has it)"
        )
    return BENCH


@pytest.fixture()
def sample_pdf() -> Path:
    return SAMPLE_PDF
