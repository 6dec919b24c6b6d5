"""MiniLM on ONNX Runtime: exported once from the packaged weights into the cache, then run
without torch.

Why: on a CPU without AVX512-BF16 MiniLM runs in float32, and ONNX Runtime with fused
attention / LayerNorm / GELU kernels embeds the same float32 vectors (cosine to torch
≥ 0.9999 on qa-public chunks) without importing torch or transformers. How much faster it
is depends on the CPU, so "auto" measures it: on the AVX2-only project VM a whole
qa-public ingest was 1.04x faster, int8 1.24x (docs/benchmarks.md, "Embedder runtimes").

Runtimes (`Settings.embedder_runtime`, `--embedder-runtime`):

- "torch": transformers on torch (float32, or bf16 where the CPU has it natively).
- "onnx": ONNX Runtime, float32. Same vectors as "torch" within float rounding, so an
  index made by one is searched and extended by the other (see `vector_family`).
- "onnx-int8": ONNX Runtime with int8 dynamic quantisation of the weights (per channel,
  7-bit range: without VNNI, AVX2's u8×s8 multiply saturates on full-range weights). Faster,
  but its vectors differ measurably (mean cosine 0.993, min 0.98 to float32 on qa-public),
  so it is a vector family of its own: never chosen by "auto", and never mixed with float32
  vectors in one index.
- "auto": "onnx" where it measured faster than torch on this machine (a one-time timing of
  both on the same texts, remembered in the cache per CPU and library versions), else
  "torch"; "torch" when onnxruntime is not installed or the export cannot be made.

Files under `<cache_dir>/onnx/minilm-<sha8>/`: model.onnx (float32, fused), model.int8.onnx,
and `<cache_dir>/onnx/runtime-choice.json` for "auto".
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragchat.errors import ModelUnavailableError

if TYPE_CHECKING:
    from ragchat.config import Settings


RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


# Bumped when the export recipe changes, so older cached files are not reused.
EXPORT_VERSION = 1


ONNX_INSTALL = "pip install onnxruntime onnx"


def vector_family(runtime: str) -> str:
    """Runtimes whose vectors are interchangeable share a family: "float" (torch float32 or
    bf16, ONNX float32: cosine ≥ 0.9999 to each other) or "int8" (ONNX int8)."""
    return "int8" if runtime.endswith("int8") else "float"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_dir(settings: Settings, weights_sha256: str) -> Path:
    return settings.cache_dir / "onnx" / f"minilm-{weights_sha256[:8]}-v{EXPORT_VERSION}"


def ensure_exported(folder: Path, settings: Settings, weights_sha256: str, *, int8: bool) -> Path:
    """The cached ONNX file for the sentence-transformers `folder` (exporting it first if
    missing: ~15 s once, needs torch and the `onnx` package); int8 → the quantised one."""
    out = export_dir(settings, weights_sha256)
    fp32 = out / "model.onnx"
    quantised = out / "model.int8.onnx"
    target = quantised if int8 else fp32
    if target.is_file():
        return target
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailableError(
            f"the ONNX embedder runtime needs onnxruntime and onnx ({ONNX_INSTALL}), or use "
            "--embedder-runtime torch"
        ) from exc
    out.mkdir(parents=True, exist_ok=True)
    if not fp32.is_file():
        _export_fp32(folder, fp32)
    if int8 and not quantised.is_file():
        _quantise(fp32, quantised)
    return target


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")


def _export_fp32(folder: Path, target: Path) -> None:
    """torch.onnx.export of the transformer (eager attention, so ONNX Runtime's BERT
    optimizer can fuse it), then the fusion pass; atomic rename into `target`."""
    import logging
    import warnings

    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # (batch, seq, dim)

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    raw = _tmp_name(target.with_name("raw.onnx"))
    fused = _tmp_name(target)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden(model),
                (ids, mask, torch.zeros_like(ids)),
                str(raw),
                input_names=names,
                output_names=["hidden"],
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]},
                opset_version=17,
                dynamo=False,
            )
        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        config = model.config
        optimized = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        optimized.save_model_to_file(str(fused))
        os.replace(fused, target)
    finally:
        for leftover in (raw, fused):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _quantise(fp32: Path, target: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    tmp = _tmp_name(target)
    try:
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            # the fused contrib ops (Attention, SkipLayerNormalization) have no shape info
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def machine_key() -> str:
    """CPU model, the SIMD flags that matter for these kernels, cores and library versions:
    a timing taken under one of these does not say anything about another."""
    import platform

    import onnxruntime

    model = ""
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    simd = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in {"fma", "f16c"})
    from importlib.metadata import version

    return "|".join(
        [
            model or platform.processor(),
            ",".join(simd),
            str(os.cpu_count()),
            f"torch {version('torch')}",
            f"ort {onnxruntime.__version__}",
            f"v{EXPORT_VERSION}",
        ]
    )


def timing_texts(folder: Path, n: int = 16) -> list[str]:
    """n real English passages of ~120 words: the packaged model card, cycled."""
    words = (folder / "README.md").read_text(encoding="utf-8", errors="replace").split()
    words = words or ["retrieval"]
    return [" ".join((words * 4)[i * 37 : i * 37 + 120]) for i in range(n)]
