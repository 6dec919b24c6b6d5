"""The same questions through in-process llama.cpp and through an OpenAI-compatible server
(llama-cpp-python's `python -m llama_cpp.server`, started here on 127.0.0.1 with the same
GGUF, context, batch size and thread count): seconds per question and whether the greedy
answers are identical.

    python bench/openai_server.py                      # qwen1.5b (default), the sample's questions
    python bench/openai_server.py --model smollm2 --threads 2
    python bench/openai_server.py --logprobs           # the server also returns logprobs

The sample PDF is ingested into a temporary index (MiniLM, defaults). Each question is
answered by qa.answer() with the in-process generator, then with the openai generator;
the two never run at the same time (the server is idle while llama.cpp runs in this
process). s/question = Answer.timings.total_s (retrieval, focus, prompt, generation). Both
engines keep their KV cache between questions and re-read only what follows the common
prompt prefix. The 1-minute load average before and after is printed: record it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "docs" / "sample" / "gull-point.pdf"
QUESTIONS = (
    # scripts/demo.sh
    "Who built the lighthouse?",
    "How far away could the light be seen?",
    "Describe the history of the lighthouse.",
    "Who won the 1998 football world cup?",
    # tests/test_repl.py
    "When was the lighthouse first lit?",
    "Who was the first keeper of the lighthouse?",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen1.5b")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--logprobs", action="store_true")
    args = parser.parse_args()

    from ragchat.answer.qa import answer
    from ragchat.config import load_settings
    from ragchat.generation.llamacpp import MAX_CONTEXT
    from ragchat.generation.loading import load_generator
    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever
    from ragchat.weights import resolve_gguf

    settings = load_settings({"threads": args.threads, "model": args.model})
    gguf = resolve_gguf(args.model, settings)
    if gguf is None:
        sys.exit(f"{args.model} has no GGUF weights")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "sample"
        ingest([SAMPLE], index, settings)
        retriever = open_retriever(index, settings)
        port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
            args.model, "--host", "127.0.0.1", "--port", str(port), "--n_ctx",
            str(MAX_CONTEXT), "--n_batch", "256", "--n_threads", str(args.threads),
        ]  # fmt: skip
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            local = load_generator(args.model, settings.replace(backend="llamacpp"))
            remote_settings = settings.replace(
                backend="openai",
                openai_base_url=f"http://127.0.0.1:{port}/v1",
                openai_logprobs=args.logprobs,
            )
            deadline = time.monotonic() + 120
            while True:
                try:
                    remote = load_generator(args.model, remote_settings)
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.5)
            rows = []
            for question in QUESTIONS:
                a = answer(question, retriever, local, max_new_tokens=args.max_new_tokens)
                b = answer(question, retriever, remote, max_new_tokens=args.max_new_tokens)
                rows.append((question, a, b))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=15)
            log.close()
            retriever.close()
    load_after = os.getloadavg()[0]

    print(f"model {args.model}, {args.threads} threads, logprobs {args.logprobs}")
    print(f"{'question':45} {'llama.cpp s':>11} {'server s':>9}  same  answer")
    for question, a, b in rows:
        same = "yes" if a.text == b.text else "NO"
        times = f"{a.timings.total_s:11.2f} {b.timings.total_s:9.2f}"
        print(f"{question[:45]:45} {times}  {same:4}  {a.text}")
        if a.text != b.text:
            print(f"{'':45} {'':11} {'':9}        server: {b.text}")
    local_s = statistics.median(a.timings.total_s for _, a, _ in rows)
    remote_s = statistics.median(b.timings.total_s for _, _, b in rows)
    same = sum(a.text == b.text for _, a, b in rows)
    print(
        f"median s/question: llama.cpp {local_s:.2f}, server {remote_s:.2f} "
        f"(server/in-process {remote_s / local_s:.2f}×); identical answers {same}/{len(rows)}"
    )
    print(f"1-min load average: {load_before:.2f} before, {load_after:.2f} after")


if __name__ == "__main__":
    main()
