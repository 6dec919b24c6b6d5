"""Follow-up rewriting on bench/followup_chains.jsonl: how often the standalone form of a
follow-up is right, and how often a fresh question is left alone.

    python bench/followups.py                          # the default model
    python bench/followups.py --models qwen1.5b qwen0.5b
    python bench/followups.py --show                   # every rewrite, right or wrong

The chains (built from ../shared/bench/qa-public questions, see docs/answering.md):
  - "follow": one or more earlier exchanges (question, gold answer), then a follow-up about
    the same entity ("and when did he develop it?"). Right when the rewrite names the
    entity (one spelling of each `expect` group), names nothing in `forbid` (an entity of
    an earlier exchange, for chains where the reference is to the last one), keeps every
    content term of the follow-up, and is one question that doesn't contain an earlier one.
  - "fresh": a qa-public question holding it/its/their/there/that, asked after three
    exchanges about other articles. Right when it is left exactly as asked.

For each model three ways are scored side by side: "model" (the model's rewrite alone,
unchecked), "substituted" (the rule-based fallback alone, no model) and "ragchat" (what
ragchat does: the model's rewrite when check_rewrite accepts it, else the fallback).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHAINS = REPO / "bench" / "followup_chains.jsonl"


def load_chains(path: Path = CHAINS) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def right(chain: dict[str, Any], text: str) -> bool:
    """Whether `text` is an acceptable standalone form for this chain."""
    from ragchat.answer.followup import content_terms
    from ragchat.index.lexical import tokenize

    if chain["kind"] == "fresh":
        return text == chain["question"]
    low = text.lower()
    if not all(any(a.lower() in low for a in group) for group in chain["expect"]):
        return False
    if any(f.lower() in low for f in chain["forbid"]):
        return False
    if content_terms(chain["question"]) - set(tokenize(text, stopwords=True)):
        return False
    if text.count("?") > 1:
        return False
    return not any(
        " ".join(t["question"].lower().split()).rstrip("?") in " ".join(low.split())
        for t in chain["history"]
    )


def run_model(name: str, chains: list[dict[str, Any]], cache_dir: Path, show: bool) -> dict:
    from ragchat.answer.followup import check_rewrite, is_follow_up, propose, rewrite, substitute
    from ragchat.answer.prompts import Turn
    from ragchat.config import Settings
    from ragchat.generation.loading import load_generator

    generator = load_generator(name, Settings(cache_dir=cache_dir, model=name))
    scores: dict[str, dict[str, list[bool]]] = {
        way: {"follow": [], "fresh": []} for way in ("model", "substituted", "ragchat")
    }
    seconds: list[float] = []
    used_fallback = 0
    failures: list[str] = []
    for chain in chains:
        history = [Turn(t["question"], t["answer"]) for t in chain["history"]]
        q = chain["question"]
        # rewrite() in two steps, so the model's own rewrite is scored too, unchecked.
        texts = {"model": q, "substituted": rewrite(q, history, None).text, "ragchat": q}
        how = "none"
        if is_follow_up(q):
            started = time.perf_counter()
            proposed = propose(q, history, generator)
            accepted = check_rewrite(proposed, q, history) is None
            how = "model" if accepted else "substituted"
            texts["model"] = proposed
            texts["ragchat"] = proposed if accepted else substitute(q, history[-1])
            seconds.append(time.perf_counter() - started)
        used_fallback += how == "substituted"
        for way, text in texts.items():
            ok = right(chain, text)
            scores[way][chain["kind"]].append(ok)
            if way == "ragchat" and (show or not ok):
                mark = "ok " if ok else "BAD"
                failures.append(f"  {mark} {chain['id']}: {q!r} → {text!r} ({how})")
    result: dict[str, Any] = {"model": name, "fallback_used": used_fallback}
    for way, kinds in scores.items():
        f, s = kinds["follow"], kinds["fresh"]
        result[way] = {
            "follow_right": sum(f),
            "follow_n": len(f),
            "fresh_rewritten": len(s) - sum(s),
            "fresh_n": len(s),
        }
    result["rewrite_s_median"] = statistics.median(seconds) if seconds else None
    result["lines"] = failures
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["qwen1.5b"])
    parser.add_argument("--chains", type=Path, default=CHAINS)
    parser.add_argument("--show", action="store_true", help="print every rewrite")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("RAGCHAT_CACHE_DIR") or "/tmp/rc-cache"),
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    chains = load_chains(args.chains)
    n_follow = sum(c["kind"] == "follow" for c in chains)
    print(f"{args.chains.name}: {n_follow} follow-up chains, {len(chains) - n_follow} fresh")
    results = []
    for name in args.models:
        result = run_model(name, chains, args.cache_dir.resolve(), args.show)
        results.append(result)
        print(
            f"\n{name} (fallback used {result['fallback_used']}×, median rewrite "
            f"{result['rewrite_s_median'] or 0:.2f}s)"
        )
        for way in ("model", "substituted", "ragchat"):
            r = result[way]
            print(
                f"  {way:12} follow-ups right {r['follow_right']}/{r['follow_n']} "
                f"({100 * r['follow_right'] / max(r['follow_n'], 1):.0f}%)  fresh rewritten "
                f"{r['fresh_rewritten']}/{r['fresh_n']}"
            )
        for line in result["lines"]:
            print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
