"""Generation speed per (backend, model): load time, time to first token, prompt and
generation tok/s and peak RSS, llama.cpp and transformers side by side.

    python bench/generation.py                                  # qwen0.5b + smollm2 (+ qwen1.5b)
    python bench/generation.py --models smollm2 --repeats 1     # quick
    python bench/generation.py --json /tmp/generation.json      # also write the figures
    python bench/generation.py --under-load --models qwen1.5b   # threads vs a competing job
    python bench/generation.py --under-load --answers           # real answers, ditto

--under-load measures llama.cpp seconds per answer with the default thread choice (0:
hardware.compute_threads, the free physical cores, re-chosen at every answer) and with 1
and 2 threads, each alone and with one competing CPU-bound process (a busy Python loop,
started before the child loads the model and stopped after it), side by side; the ratio
loaded/alone is what "degrades gracefully" means. The machine's 1-minute load before each
row is printed with it: other work on the machine counts as load too.

--under-load --answers measures what a user waits for instead: `ragchat ask --json -` over
an index of the sample PDF, the demo's questions (lookups and an explanation, focused
prompts, the system prompt's KV cache kept between questions), the default threads, alone
and beside the same competing process; seconds per answer are the answers' own total_s
(retrieval + generation, not the model load), medians over all questions of the run.

Every (backend, model) runs in a fresh child process of this script, so `load_s` is a cold
start (imports of torch / llama_cpp included, page cache permitting) and `peak_rss` is that
child's own ru_maxrss. One-time preparation — assembling a packaged GGUF, or converting it
to a bf16 folder for transformers (~70 s for qwen0.5b) — runs in an earlier child and is
reported as `prepare_s`, not as load time.

Each child builds the SAME RAG prompt: the three pages of docs/sample/gull-point.pdf as
passages, one fixed question, `prompting.build_rag_prompt` in the model's own prompt format
with qa.py's budget (min(context - max_new_tokens - 16, qa.MAX_PROMPT_TOKENS)). It then
generates `--max-new-tokens` greedily with NO stop sequences (stop=()), `--repeats` times;
medians are reported. A model may still end early with its EOS token: gen_tokens and the
stop reason are printed so such a row can be read for what it is.

Fair repeats: the llama.cpp generator keeps its KV cache between calls and evaluates only
the part of a new prompt after the common token prefix, so a repeated prompt would cost
one token of prefill. Before each repeat this bench calls `gen.forget_prompts()` (when the
generator has one) so every repeat does a full prefill like a first question.

TTFT = GenerationStats.first_token_s (from the `stream` call: tokenise + prefill + first
token; load excluded). prefill tok/s = prompt_tokens / prefill_s. decode tok/s =
GenerationStats.tokens_per_s = gen_tokens / (total_s - prefill_s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "docs" / "sample" / "gull-point.pdf"
QUESTION = (
    "Give a detailed account of the Gull Point light: why it was built, its lamp and fog "
    "signal, its keepers, and how and when it was automated."
)
BACKENDS = ("llamacpp", "transformers")
DEFAULT_MODELS = ("qwen0.5b", "smollm2")
OPTIONAL_MODELS = ("qwen1.5b",)  # included when its packages are installed
MARK = "@@generation-bench@@ "  # prefixes the child's one JSON line on stdout


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAGCHAT_CACHE_DIR") or "/tmp/rc-cache")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_settings(cache_dir: Path, backend: str, threads: int) -> Any:
    from ragchat.config import Settings

    return Settings(cache_dir=cache_dir.resolve(), backend=backend, threads=threads)


# ------------------------------------------------------------------ children


def child_prepare(backend: str, model: str, cache_dir: Path, threads: int) -> dict[str, Any]:
    """Do the one-time work a first load would do (assemble/verify the GGUF; for
    transformers also convert it to a bf16 folder) and time it."""
    from ragchat.hub import configure_hub
    from ragchat.weights import list_models, resolve_gguf, resolve_model_dir

    settings = make_settings(cache_dir, backend, threads)
    configure_hub(False)
    info = {m.name: m for m in list_models(settings)}.get(model)
    converted_before = bool(info and info.cached)
    started = time.perf_counter()
    if backend == "transformers":
        resolve_model_dir(model, settings)
    else:
        resolve_gguf(model, settings)
    return {
        "prepare_s": time.perf_counter() - started,
        "converted": backend == "transformers" and not converted_before,
    }


def child_run(
    backend: str,
    model: str,
    cache_dir: Path,
    threads: int,
    repeats: int,
    max_new_tokens: int,
    passages_file: Path,
    budget: int,
) -> dict[str, Any]:
    """Load the model (timed, cold), then generate from the shared RAG prompt `repeats`
    times; everything measured in this process."""
    started = time.perf_counter()
    from ragchat.generation.loading import load_generator

    settings = make_settings(cache_dir, backend, threads)
    gen = load_generator(model, settings)
    load_s = time.perf_counter() - started

    from ragchat.answer.prompts import build_rag_prompt
    from ragchat.records import Passage

    passages = [Passage(**p) for p in json.loads(passages_file.read_text(encoding="utf-8"))]
    prompt = build_rag_prompt(
        QUESTION,
        passages,
        fmt=gen.prompt_format,
        count_tokens=gen.count_tokens,
        budget_tokens=min(gen.context_window - max_new_tokens - 16, budget),
    )
    runs = []
    text = ""
    for _ in range(repeats):
        if hasattr(gen, "forget_prompts"):
            gen.forget_prompts()  # llama.cpp's KV cache and kept prompts: a full prefill
        text = "".join(gen.stream(prompt.text, max_new_tokens=max_new_tokens, stop=()))
        s = gen.last_stats
        assert s is not None
        runs.append(
            {
                "prompt_tokens": s.prompt_tokens,
                "gen_tokens": s.gen_tokens,
                "ttft_s": s.first_token_s,
                "prefill_s": s.prefill_s,
                "total_s": s.total_s,
                "prefill_tok_s": s.prompt_tokens_per_s,
                "decode_tok_s": s.tokens_per_s,
                "stop_reason": s.stop_reason,
            }
        )
    extra: dict[str, Any] = {"threads_used": getattr(gen, "threads", None)}
    if backend == "transformers":
        extra["dtype"] = str(next(gen.model.parameters()).dtype).removeprefix("torch.")  # type: ignore[attr-defined]
    return {
        "load_s": load_s,
        "gen_load_seconds": gen.load_seconds,
        "passages_in_prompt": len(prompt.passages),
        "prompt_format": gen.prompt_format.name,
        "runs": runs,
        "answer_head": text[:160],
        "peak_rss_mib": peak_rss_mib(),
        **extra,
    }


def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("prepare", "run"))
    p.add_argument("backend")
    p.add_argument("model")
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--passages", type=Path)
    p.add_argument("--budget", type=int, default=800)
    a = p.parse_args(argv)
    if a.mode == "prepare":
        result = child_prepare(a.backend, a.model, a.cache_dir, a.threads)
    else:
        result = child_run(
            a.backend,
            a.model,
            a.cache_dir,
            a.threads,
            a.repeats,
            a.max_new_tokens,
            a.passages,
            a.budget,
        )
    print(MARK + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------ parent


def run_child(args: list[str], timeout: float) -> dict[str, Any]:
    """Run this script as a child; its JSON result, or {"error": ...}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])  # type: ignore[no-any-return]
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def sample_passages(path: Path) -> list[dict[str, Any]]:
    """The sample PDF's pages as passages (one per page), as plain dicts."""
    from ragchat.ingest.pdf import extract_document_inprocess

    doc = extract_document_inprocess(path)
    return [
        {
            "chunk_id": i,
            "doc": path.name,
            "path": str(path),
            "page": page.number,
            "page_end": page.number,
            "score": 1.0,
            "text": page.text,
        }
        for i, page in enumerate(doc.pages, 1)
    ]


def installed_models(cache_dir: Path) -> set[str]:
    from ragchat.weights import list_models

    return {m.name for m in list_models(make_settings(cache_dir, "auto", 0)) if m.installed}


def prompt_budget() -> int:
    """qa.py's prompt budget: Settings.max_prompt_tokens (800 when it cannot be read)."""
    try:
        from ragchat.config import Settings

        return int(Settings().max_prompt_tokens)
    except Exception as exc:  # the bench must run while config.py changes
        print(f"(Settings unusable: {type(exc).__name__}: {exc}; prompt budget 800)")
        return 800


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    runs = result.get("runs") or []
    return {
        "ttft_s": med([r["ttft_s"] for r in runs]),
        "first_ttft_s": runs[0]["ttft_s"] if runs else None,
        "prefill_tok_s": med([r["prefill_tok_s"] for r in runs]),
        "decode_tok_s": med([r["decode_tok_s"] for r in runs]),
        "prompt_tokens": runs[0]["prompt_tokens"] if runs else None,
        "gen_tokens": sorted({r["gen_tokens"] for r in runs}),
        "stop_reasons": sorted({r["stop_reason"] for r in runs}),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--models",
        nargs="+",
        help=f"presets (default {', '.join(DEFAULT_MODELS)}, plus "
        f"{', '.join(OPTIONAL_MODELS)} when installed)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="generations per model (median)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="model cache (default: $RAGCHAT_CACHE_DIR or /tmp/rc-cache)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per child, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="llama.cpp only: threads 0 (auto), 1, 2, alone and beside a CPU-bound job",
    )
    parser.add_argument(
        "--answers",
        action="store_true",
        help="with --under-load: time `ragchat ask` answers over the sample PDF instead",
    )
    args = parser.parse_args()

    budget = prompt_budget()
    if args.under_load and args.answers:
        return under_load_answers(args)
    if args.under_load:
        return under_load(args, budget)
    installed = installed_models(args.cache_dir)
    if args.models:
        models = list(args.models)
    else:
        models = [m for m in DEFAULT_MODELS if m in installed]
        models += [m for m in OPTIONAL_MODELS if m in installed]
    skipped = [m for m in (*DEFAULT_MODELS, *OPTIONAL_MODELS) if m not in installed]
    print(
        f"models {', '.join(models)}; backends {', '.join(args.backends)}; threads "
        f"{args.threads}; {args.repeats} repeats of {args.max_new_tokens} new tokens, stop=(); "
        f"cache {args.cache_dir}"
    )
    if skipped and not args.models:
        print(f"not installed, skipped: {', '.join(skipped)}")
    print(f"prompt: the {SAMPLE.name} pages + {QUESTION!r}, budget {budget} tokens")

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rc-bench-gen-") as tmp:
        passages_file = Path(tmp) / "passages.json"
        passages_file.write_text(json.dumps(sample_passages(SAMPLE)), encoding="utf-8")
        common = ["--cache-dir", str(args.cache_dir), "--threads", str(args.threads)]
        for model in models:
            for backend in args.backends:
                print(f"  {backend} {model} …", end="", flush=True)
                prep = run_child(["prepare", backend, model, *common], args.timeout)
                if "error" in prep:
                    print(f" cannot prepare: {prep['error']}")
                    results.append({"backend": backend, "model": model, **prep})
                    continue
                run = run_child(
                    [
                        "run",
                        backend,
                        model,
                        *common,
                        "--repeats",
                        str(args.repeats),
                        "--max-new-tokens",
                        str(args.max_new_tokens),
                        "--passages",
                        str(passages_file),
                        "--budget",
                        str(budget),
                    ],
                    args.timeout,
                )
                row = {"backend": backend, "model": model, **prep, **run}
                if "error" not in run:
                    row.update(summarise(run))
                    print(f" done (load {run['load_s']:.1f}s)")
                else:
                    print(f" failed: {run['error']}")
                results.append(row)

    print_tables(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "threads": args.threads,
            "repeats": args.repeats,
            "max_new_tokens": args.max_new_tokens,
            "question": QUESTION,
            "prompt_budget": budget,
            "cpu_count": os.cpu_count(),
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


BUSY_LOOP = "while True: pass"


def under_load(args: argparse.Namespace, budget: int) -> int:
    """Seconds per answer by thread setting, alone and beside one CPU-bound process."""
    model = (args.models or ["qwen1.5b"])[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rc-bench-gen-") as tmp:
        passages_file = Path(tmp) / "passages.json"
        passages_file.write_text(json.dumps(sample_passages(SAMPLE)), encoding="utf-8")
        base = ["--cache-dir", str(args.cache_dir)]
        prep = run_child(["prepare", "llamacpp", model, *base, "--threads", "0"], args.timeout)
        if "error" in prep:
            print(f"cannot prepare {model}: {prep['error']}")
            return 1
        print(
            f"{model} on llama.cpp; {args.repeats} answers of {args.max_new_tokens} tokens "
            f"each (full prefill), per row; cpu_count {os.cpu_count()}"
        )
        for threads in (0, 1, 2):
            for loaded in (False, True):
                load_before = os.getloadavg()[0]
                competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if loaded else None
                try:
                    run = run_child(
                        [
                            "run",
                            "llamacpp",
                            model,
                            *base,
                            "--threads",
                            str(threads),
                            "--repeats",
                            str(args.repeats),
                            "--max-new-tokens",
                            str(args.max_new_tokens),
                            "--passages",
                            str(passages_file),
                            "--budget",
                            str(budget),
                        ],
                        args.timeout,
                    )
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                row = {"threads": threads, "loaded": loaded, "load_before": load_before, **run}
                if "error" not in run:
                    row["s_per_answer"] = med([r["total_s"] for r in run["runs"]])
                    row["decode_tok_s"] = med([r["decode_tok_s"] for r in run["runs"]])
                    row["used_threads"] = run.get("threads_used")
                rows.append(row)
                what = "with 1 busy process" if loaded else "alone"
                shown = fmt(row.get("s_per_answer"), ".2f")
                print(f"  threads {threads or 'auto'} {what}: {shown} s/answer", flush=True)
    print(
        f"\n{'threads':<8} {'alone s/ans':>12} {'loaded s/ans':>13} {'loaded/alone':>13} "
        f"{'decode tok/s alone/loaded':>26} {'load avg before':>16}"
    )
    for threads in (0, 1, 2):
        alone = next(r for r in rows if r["threads"] == threads and not r["loaded"])
        busy = next(r for r in rows if r["threads"] == threads and r["loaded"])
        a, b = alone.get("s_per_answer"), busy.get("s_per_answer")
        ratio = b / a if a and b else None
        decode = f"{fmt(alone.get('decode_tok_s'), '.1f')}/{fmt(busy.get('decode_tok_s'), '.1f')}"
        print(
            f"{threads or 'auto':<8} {fmt(a, '.2f'):>12} {fmt(b, '.2f'):>13} "
            f"{fmt(ratio, '.2f'):>13} {decode:>26} "
            f"{alone['load_before']:>7.2f}/{busy['load_before']:<8.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model, "rows": rows}, indent=2) + "\n")
    return 0


# The demo's questions (scripts/demo.sh) and a few more of the same sample, twice over.
ANSWER_QUESTIONS = (
    "Who built the lighthouse?",
    "How far away could the light be seen?",
    "Describe the history of the lighthouse.",
    "When was the lighthouse first lit?",
    "How many steps does the tower have?",
    "Why was the fog signal replaced?",
) * 2


def under_load_answers(args: argparse.Namespace) -> int:
    """Seconds per real answer (`ragchat ask --json -`, default threads), alone and beside
    one CPU-bound process, in one run."""
    model = (args.models or ["qwen1.5b"])[0]
    env = {**os.environ, "RAGCHAT_CACHE_DIR": str(args.cache_dir)}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="rc-bench-ans-") as tmp:
        index = Path(tmp) / "sample"
        ragchat = [sys.executable, "-m", "ragchat"]
        subprocess.run(
            [*ragchat, "ingest", str(SAMPLE), "--index", str(index), "--quiet"],
            check=True,
            env=env,
            capture_output=True,
        )
        stdin = "\n".join(ANSWER_QUESTIONS) + "\n"
        print(
            f"{model}, `ragchat ask --json -`, {len(ANSWER_QUESTIONS)} questions per row, "
            f"default threads; cpu_count {os.cpu_count()}"
        )
        for loaded in (False, True):
            load_before = os.getloadavg()[0]
            competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if loaded else None
            try:
                done = subprocess.run(
                    [*ragchat, "ask", "--json", "-", "--index", str(index), "--model", model],
                    input=stdin,
                    text=True,
                    env=env,
                    capture_output=True,
                    timeout=args.timeout,
                )
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            if done.returncode != 0:
                print(f"ragchat ask failed: {done.stderr[-2000:]}")
                return 1
            answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            totals = [a["timings"]["total_s"] for a in answers]
            firsts = [a["timings"].get("first_token_s") for a in answers]
            rows[loaded] = {
                "s_per_answer": med(totals),
                "first_token_s": med([f for f in firsts if f is not None]),
                "load_before": load_before,
                "answers": [a.get("answer", "")[:80] for a in answers],
            }
            what = "with 1 busy process" if loaded else "alone"
            print(
                f"  {what}: {fmt(rows[loaded]['s_per_answer'], '.2f')} s/answer "
                f"(first token {fmt(rows[loaded]['first_token_s'], '.2f')} s; "
                f"load avg before {load_before:.2f})",
                flush=True,
            )
    alone, busy = rows[False]["s_per_answer"], rows[True]["s_per_answer"]
    print(f"loaded/alone: {fmt(busy / alone if alone and busy else None, '.2f')}")
    same = sum(a == b for a, b in zip(rows[False]["answers"], rows[True]["answers"], strict=True))
    print(f"same answers alone and loaded: {same}/{len(ANSWER_QUESTIONS)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model, "rows": rows}, indent=2) + "\n")
    return 0


def print_tables(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<10} {'backend':<22} {'prepare':>8} {'load':>6} {'TTFT':>7} {'1st TTFT':>8} "
        f"{'prefill':>9} {'decode':>8} {'prompt':>6} {'gen tok':>8} {'stop':>10} {'peak RSS':>9}"
    )
    units = (
        f"{'':<10} {'':<22} {'s':>8} {'s':>6} {'s':>7} {'s':>8} {'tok/s':>9} {'tok/s':>8} "
        f"{'tok':>6} {'':>8} {'':>10} {'MiB':>9}"
    )
    print("\n" + header + "\n" + units)
    for r in results:
        if "error" in r:
            print(f"{r['model']:<10} {r['backend']:<22} error: {r['error']}")
            continue
        prepare = fmt(r["prepare_s"], ".1f") + ("*" if r.get("converted") else "")
        backend = r["backend"] + (f" {r['dtype']}" if r.get("dtype") else "")
        print(
            f"{r['model']:<10} {backend:<22} {prepare:>8} {r['load_s']:>6.2f} "
            f"{fmt(r['ttft_s'], '.2f'):>7} {fmt(r['first_ttft_s'], '.2f'):>8} "
            f"{fmt(r['prefill_tok_s'], '.0f'):>9} {fmt(r['decode_tok_s'], '.1f'):>8} "
            f"{r['prompt_tokens']:>6} {'/'.join(map(str, r['gen_tokens'])):>8} "
            f"{','.join(r['stop_reasons']):>10} {r['peak_rss_mib']:>9.0f}"
        )
    if any(r.get("converted") for r in results):
        print("* prepare included the one-time GGUF → bf16 conversion for transformers")
    print(
        "TTFT, prefill and decode: medians over the repeats; 1st TTFT: the first repeat "
        "alone; gen tok: distinct counts over the repeats (< max only when the model "
        "ended with EOS)."
    )

    print(f"\n{'model':<10} {'backend':<13} {'decode x llama.cpp':>19} {'TTFT x llama.cpp':>17}")
    by_key = {(r["model"], r["backend"]): r for r in results if "error" not in r}
    for r in results:
        if "error" in r:
            continue
        base = by_key.get((r["model"], "llamacpp"))
        if base is None:
            continue
        decode = (
            r["decode_tok_s"] / base["decode_tok_s"]
            if r["decode_tok_s"] and base["decode_tok_s"]
            else None
        )
        ttft = r["ttft_s"] / base["ttft_s"] if r["ttft_s"] and base["ttft_s"] else None
        print(
            f"{r['model']:<10} {r['backend']:<13} {fmt(decode, '.2f'):>19} {fmt(ttft, '.2f'):>17}"
        )
    print("decode x: tok/s relative to llama.cpp (higher is faster); TTFT x: lower is faster.")


if __name__ == "__main__":
    sys.exit(main())
