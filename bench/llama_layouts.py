"""llama.cpp's weight layouts side by side, one process: prompt reading (prefill) and
decoding speed of a GGUF model loaded three ways.

    python bench/llama_layouts.py                      # the default model, qwen1.5b
    python bench/llama_layouts.py --model qwen0.5b --rounds 5

- plain:  use_extra_bufts off, nothing else (what an AMX CPU got before the repack list);
- repack: use_extra_bufts off, the model's Q4 matrices in CPU_REPACK (llamacpp._repack_overrides,
          what ragchat loads on a CPU that reports AMX);
- extra:  llama.cpp's own choice (AMX kernels where the CPU reports AMX, else repack):
          skipped unless --extra, since AMX crashed with SIGILL on the AMX VMs here.

Rounds alternate between the layouts so that load from other work hits all of them alike;
the figures are medians over the rounds. Say the machine's load with them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.config import load_settings  # noqa: E402
from ragchat.hardware import compute_threads, cpu_has_amx  # noqa: E402
from ragchat.weights import resolve_gguf  # noqa: E402


def load(gguf: Path, layout: str, threads: int):  # type: ignore[no-untyped-def]
    from llama_cpp import Llama

    from ragchat.generation.llamacpp import _repack_overrides, model_params

    overrides = _repack_overrides(gguf) if layout == "repack" else None
    if layout == "repack" and overrides is None:
        raise SystemExit("this llama.cpp build or CPU has no CPU_REPACK layout")
    with (
        model_params(extra_bufts=layout == "extra", overrides=overrides),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        return Llama(
            model_path=str(gguf), n_ctx=2048, n_batch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False,
        )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="qwen1.5b", help="a preset with GGUF weights")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=700, help="about an answer prompt")
    ap.add_argument("--extra", action="store_true", help="also llama.cpp's own layout (AMX)")
    args = ap.parse_args()
    settings = load_settings()
    gguf = resolve_gguf(args.model, settings, None)
    threads = compute_threads(settings.threads)
    layouts = ["plain", "repack"] + (["extra"] if args.extra else [])
    models = {layout: load(gguf, layout, threads) for layout in layouts}
    text = (REPO / "README.md").read_text() * 4
    tokens = models["plain"].tokenize(text.encode())[: args.prompt_tokens]
    prefill: dict[str, list[float]] = {layout: [] for layout in layouts}
    decode: dict[str, list[float]] = {layout: [] for layout in layouts}
    for _ in range(args.rounds):
        for layout, llm in models.items():
            llm.reset()
            started = time.perf_counter()
            llm.eval(tokens)
            prefill[layout].append(len(tokens) / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(32):
                llm.eval([llm.sample(temp=0.0)])
            decode[layout].append(32 / (time.perf_counter() - started))
    load1 = os.getloadavg()[0]
    print(
        f"{args.model}: {len(tokens)}-token prompt, {threads} threads, {args.rounds} rounds,"
        f" CPU reports AMX: {cpu_has_amx()}, 1-min load at the end {load1:.2f}"
    )
    print(f"{'layout':8} {'prefill tok/s':>14} {'decode tok/s':>13}  prefill vs plain")
    base = statistics.median(prefill["plain"])
    for layout in layouts:
        p, d = statistics.median(prefill[layout]), statistics.median(decode[layout])
        print(f"{layout:8} {p:14.1f} {d:13.1f}  {p / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
