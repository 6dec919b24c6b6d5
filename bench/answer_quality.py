"""Answer quality on the qa-public bench: F1 / contains / answered / mean words on answerable
questions, abstention on unanswerable ones, seconds per question, and the per-question
no-answer signals that the abstention threshold in ragchat/qa.py is calibrated from.

    python bench/answer_quality.py --split dev --limit 40 --limit-unanswerable 20
    python bench/answer_quality.py --split acceptance          # run once, at the end

Splits: dev = answerable questions 51–200 and unanswerable 31–65 (tune here only);
acceptance = the first 50 answerable and the first 30 unanswerable (report only).
The index (default embedder, default chunking) is built once under /tmp and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.answer.abstention import normalize_answer  # noqa: E402
from ragchat.answer.citations import strip_citations  # noqa: E402
from ragchat.config import load_settings  # noqa: E402
from ragchat.eval.metrics import contains, load_questions, token_f1  # noqa: E402

QA = REPO.parent / "shared" / "bench" / "qa-public"
INDEX = Path("/tmp/ragchat-answer-quality/qa-public")
SPLITS = {"dev": (slice(50, 200), slice(30, 65)), "acceptance": (slice(0, 50), slice(0, 30))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", choices=tuple(SPLITS), default="dev")
    ap.add_argument("--limit", type=int, help="answerable questions of the split to use")
    ap.add_argument("--limit-unanswerable", type=int, help="unanswerable questions to use")
    ap.add_argument("--skip", type=int, default=0, help="answerable questions to skip first")
    ap.add_argument(
        "--skip-unanswerable", type=int, default=0, help="unanswerable questions to skip first"
    )
    ap.add_argument("--model", default=None, help="model preset (default: settings default)")
    ap.add_argument("--backend", default=None, help="auto (default), llamacpp or transformers")
    ap.add_argument("-k", type=int, default=None, help="passages to retrieve")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--verify", action="store_true", help="also run and record the yes/no verify pass"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting for this run (config.py Settings, as in config.toml): "
        "--set focus_sentences=0, --set no_answer_threshold=off",
    )
    ap.add_argument("--report", type=Path, help="write one JSON line per question here")
    ap.add_argument(
        "--calibrate",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="don't run: choose the abstention threshold from these (dev) reports",
    )
    ap.add_argument(
        "--signal",
        choices=("verify", "no_answer"),
        default="verify",
        help="the signal --calibrate thresholds (verify: abstain below; no_answer: above)",
    )
    ap.add_argument(
        "--rescore",
        type=Path,
        metavar="REPORT",
        help="don't run: the summary of a report with the abstention thresholds of --model "
        "(and --set) applied to its recorded signals by abstention.decide (what a live run "
        "gives)",
    )
    args = ap.parse_args()
    overrides = dict(assignment.partition("=")[::2] for assignment in args.set)
    settings = load_settings(
        {
            "model": args.model,
            "backend": args.backend,
            "threads": args.threads or None,
            **overrides,
        }
    )
    if args.calibrate:
        rows = [r for p in args.calibrate for r in _read(p)]
        print(json.dumps(calibrate(rows, _thresholds(settings), args.signal), indent=2))
        return 0
    if args.rescore:
        rows = [rescore(r, _thresholds(settings)) for r in _read(args.rescore)]
        print(json.dumps(summarise(rows, str(args.rescore), settings.model, 0), indent=2))
        return 0

    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever

    if not (INDEX / "manifest.json").exists():
        INDEX.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ingest([QA / "docs"], INDEX, settings)
        print(f"indexed qa-public in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    retriever = open_retriever(INDEX, settings)

    from ragchat.answer.qa import answer, policy_for
    from ragchat.generation.loading import load_generator

    generator = load_generator(settings.model, settings)
    policy = policy_for(settings, generator)
    if args.verify:
        policy = dataclasses.replace(policy, verify_answers=True)
    ans_slice, un_slice = SPLITS[args.split]
    answerable = load_questions(QA / "questions.jsonl")[ans_slice][args.skip :][: args.limit]
    unanswerable = load_questions(QA / "questions_unanswerable.jsonl")[un_slice][
        args.skip_unanswerable :
    ][: args.limit_unanswerable]
    k = args.k or settings.k
    rows = []
    report = open(args.report, "w", encoding="utf-8") if args.report else None  # noqa: SIM115
    for q in _interleave(answerable, unanswerable):
        t0 = time.perf_counter()
        result = answer(
            q.question,
            retriever,
            generator,
            k=k,
            max_new_tokens=settings.max_new_tokens,
            policy=policy,
        )
        seconds = time.perf_counter() - t0
        prediction = strip_citations(result.text)
        row = {
            "id": q.id,
            "answerable": q.answerable,
            "question": q.question,
            "gold": list(q.answers),
            "answer": prediction,
            "raw": result.raw_text,
            "abstained": result.abstained,
            "decided_by": result.decided_by,
            "signals": dict(result.signals),
            "seconds": round(seconds, 2),
        }
        if q.answerable:
            row["f1"] = round(token_f1(prediction, q.answers), 3)
            row["contains"] = contains(prediction, q.answers)
            gold_text = normalize_answer(q.gold_passage)
            row["gold_in_passages"] = any(
                normalize_answer(p.text).find(normalize_answer(a)) >= 0
                for p in result.passages
                for a in q.answers
            ) and bool(gold_text)
        rows.append(row)
        if report:  # written as we go, so an interrupted run still calibrates
            report.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.flush()
        mark = "U" if not q.answerable else f"f1={row['f1']:.2f}"
        print(
            f"{mark:8} {'ABST' if result.abstained else '    '} {seconds:5.1f}s "
            f"{json.dumps(row['signals'])} | {q.question[:60]!r} -> {prediction[:60]!r} "
            f"gold={list(q.answers)[:2]}",
            file=sys.stderr,
            flush=True,
        )
    retriever.close()
    if report:
        report.close()
    summary = summarise(rows, args.split, settings.model, k)
    summary["backend"] = type(generator).__name__
    summary["overrides"] = args.set
    print(json.dumps(summary, indent=2))
    return 0


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _thresholds(settings):
    """Every threshold a live run with `settings` uses (the index's embedder is taken to be
    `settings.embedder`, whose cosine bars apply)."""
    from ragchat.answer.abstention import for_embedder
    from ragchat.answer.qa import policy_for
    from ragchat.weights import preset_for

    class _Preset:  # policy_for reads only the generator's preset
        preset = preset_for(settings.model, settings)

    return for_embedder(policy_for(settings, _Preset()).thresholds, settings.embedder)  # type: ignore[arg-type]


def rescore(row: dict, thresholds) -> dict:
    """`row` as a live run with these thresholds would have produced it: abstention.decide
    over its recorded signals (rows from before "model_abstained" was recorded get it from
    their raw answer)."""
    from ragchat.answer.abstention import ABSTAIN, decide, is_abstention
    from ragchat.answer.prompts import clean_answer

    row = dict(row)
    signals = dict(row["signals"])
    raw = row.get("raw") or ""
    if "model_abstained" not in signals and "no_answer" in signals:
        signals["model_abstained"] = float(is_abstention(raw) or not clean_answer(raw))
    verdict = decide(signals, thresholds)
    row["abstained"], row["decided_by"] = verdict.abstain, verdict.rule
    row["answer"] = ABSTAIN if verdict.abstain else strip_citations(clean_answer(raw))
    if row["answerable"]:
        row["f1"] = token_f1(row["answer"], row["gold"])
        row["contains"] = contains(row["answer"], row["gold"])
    return row


def calibrate(rows: list[dict], thresholds, signal: str = "verify") -> dict:
    """For each candidate bar on `signal` (the recorded values; the other thresholds as
    given): answered share of answerable rows and abstained share of unanswerable ones.
    Chosen: the bar that abstains on the most unanswerable questions while answering at
    least 90% of the answerable ones (ties: the one that answers more)."""
    values = sorted({r["signals"][signal] for r in rows if signal in r["signals"]})
    sign = 1e-4 if signal == "no_answer" else -1e-4
    candidates = sorted({values[0] - 1e-4, values[-1] + 1e-4, *(v + sign for v in values)})
    table = []
    best = None
    for bar in candidates if values else []:
        scored = [rescore(r, dataclasses.replace(thresholds, **{signal: bar})) for r in rows]
        ans = [r for r in scored if r["answerable"]]
        una = [r for r in scored if not r["answerable"]]
        answered = sum(not r["abstained"] for r in ans) / max(1, len(ans))
        abstain = sum(r["abstained"] for r in una) / max(1, len(una))
        table.append((round(bar, 4), round(answered, 3), round(abstain, 3)))
        better = best is None or abstain > best[2] or (abstain == best[2] and answered > best[1])
        if answered >= 0.9 and better:
            best = table[-1]
    return {
        "signal": signal,
        "n_answerable": sum(r["answerable"] for r in rows),
        "n_unanswerable": sum(not r["answerable"] for r in rows),
        "chosen (threshold, answered, abstain_unanswerable)": best,
        "table": table,
    }


def _interleave(first: list, second: list) -> list:
    """Both lists mixed evenly, so a run cut short still has both kinds of question."""
    out: list = []
    total = len(first) + len(second)
    i = j = 0
    while i + j < total:
        if j >= len(second) or (i < len(first) and i * total <= (i + j) * len(first)):
            out.append(first[i])
            i += 1
        else:
            out.append(second[j])
            j += 1
    return out


def summarise(rows: list[dict], split: str, model: str, k: int) -> dict:
    """The acceptance figures over `rows` (F1/contains over all answerable rows, abstentions
    counting as wrong)."""
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    answered = [r for r in ans if not r["abstained"]]
    return {
        "split": split,
        "model": model,
        "k": k,
        "n_answerable": len(ans),
        "n_unanswerable": len(una),
        "f1": round(statistics.fmean(r["f1"] for r in ans), 3) if ans else None,
        "contains": round(statistics.fmean(r["contains"] for r in ans), 3) if ans else None,
        "answered": round(len(answered) / len(ans), 3) if ans else None,
        "mean_words": (
            round(statistics.fmean(len(r["answer"].split()) for r in answered), 1)
            if answered
            else None
        ),
        "abstain_unanswerable": (
            round(sum(r["abstained"] for r in una) / len(una), 3) if una else None
        ),
        "s_per_question": round(statistics.fmean(r["seconds"] for r in rows), 2) if rows else None,
    }


if __name__ == "__main__":
    sys.exit(main())
