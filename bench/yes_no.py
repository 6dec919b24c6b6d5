"""Yes/no questions over the sample PDF: is the verdict right, and how long does it take?

    python bench/yes_no.py                      # the default model (qwen1.5b)
    python bench/yes_no.py --model qwen0.5b

bench/sample_yesno.jsonl holds 16 questions about docs/sample/gull-point.pdf (9 whose answer
is yes, 7 no), written for stop 28 and used for no other choice. A question counts as right
when the answer's first word is its gold verdict; "refused" is "The documents don't say."
(and the rule that decided it); an answer that leads with neither ("The documents say: …",
the presets without a calibrated check) is "no verdict". The index is built once under
/tmp/ragchat-offtopic/sample, as bench/offtopic.py builds it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.config import load_settings  # noqa: E402

INDEX = Path("/tmp/ragchat-offtopic/sample")
QUESTIONS = REPO / "bench" / "sample_yesno.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model preset (default: the settings' default)")
    args = parser.parse_args()
    from ragchat.answer.qa import answer, policy_for
    from ragchat.generation.loading import load_generator
    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever

    settings = load_settings({"model": args.model} if args.model else {})
    if not (INDEX / "manifest.json").exists():
        ingest([REPO / "docs" / "sample" / "gull-point.pdf"], INDEX, settings)
    generator = load_generator(settings.model, settings)
    retriever = open_retriever(INDEX, settings)
    policy = policy_for(settings, generator)
    tally = {"right": 0, "wrong": 0, "refused": 0, "no verdict": 0}
    seconds = []
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)
        result = answer(question["question"], retriever, generator, policy=policy)
        first = (re.findall(r"\w+", result.text) or [""])[0]
        if result.abstained:
            outcome = f"refused ({result.decided_by})"
            tally["refused"] += 1
        elif first not in ("Yes", "No"):
            outcome = "no verdict"
            tally["no verdict"] += 1
        else:
            outcome = "right" if first == question["answers"][0] else "wrong"
            tally[outcome] += 1
        seconds.append(result.timings.total_s)
        print(
            f"{outcome:24} {result.timings.total_s:5.1f}s  {question['question']} -> {result.text}"
        )
    retriever.close()
    print(
        f"{generator.name}: {tally['right']} right, {tally['wrong']} wrong, "
        f"{tally['refused']} refused, {tally['no verdict']} without a verdict, of "
        f"{sum(tally.values())}; p50 {statistics.median(seconds):.2f} s a question"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
