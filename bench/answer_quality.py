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
        help="override a ragchat constant for this run: --set FOCUS_SENTENCES=None (ragchat.answer.qa) "
        "or --set prompting.QUESTION_FIRST=1",
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
        help="don't run: the summary of a report with the no-answer threshold of --model "
        "(qa.no_answer_threshold) applied to its recorded signals (what a live run gives)",
    )
    args = ap.parse_args()
    if args.calibrate:
        rows = [r for p in args.calibrate for r in _read(p)]
        print(json.dumps(calibrate(rows, args.signal), indent=2))
        return 0
    if args.rescore:
        from ragchat.answer.abstention import VERIFY_THRESHOLD, no_answer_threshold

        model = args.model or load_settings({}).model
        rows = [
            _apply(_apply(r, no_answer_threshold(model)), VERIFY_THRESHOLD, "verify")
            for r in _read(args.rescore)
        ]
        print(json.dumps(summarise(rows, str(args.rescore), "-", 0), indent=2))
        return 0

    settings = load_settings(
        {"model": args.model, "backend": args.backend, "threads": args.threads or None}
    )
    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever

    if not (INDEX / "manifest.json").exists():
        INDEX.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ingest([QA / "docs"], INDEX, settings)
        print(f"indexed qa-public in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    retriever = open_retriever(INDEX, settings)

    import importlib

    from ragchat.answer.qa import answer
    from ragchat.generation.loading import load_generator

    for assignment in args.set:
        name, _, value = assignment.partition("=")
        module_name, _, attr = name.rpartition(".")
        module = importlib.import_module(f"ragchat.{module_name or 'answer.qa'}")
        if not hasattr(module, attr):
            ap.error(f"--set: {module.__name__} has no {attr}")
        setattr(module, attr, None if value == "None" else type_of(getattr(module, attr), value))

    generator = load_generator(settings.model, settings)
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
            verify_answers=args.verify,
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


def type_of(current: object, value: str) -> object:
    """`value` parsed as a number when it looks like one (the constant may be None now)."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _apply(row: dict, threshold: float | None, signal: str = "no_answer") -> dict:
    """`row` as a run with this threshold on `signal` would have produced it (no_answer:
    abstain above the threshold; verify: abstain below it)."""
    from ragchat.answer.abstention import ABSTAIN, is_abstention
    from ragchat.answer.citations import strip_markers
    from ragchat.answer.prompts import clean_answer

    row = dict(row)
    raw = row.get("raw")
    # What the model itself said, before any threshold decided (older rows lack "raw").
    greedy = is_abstention(raw) or not clean_answer(raw) if raw is not None else row["abstained"]
    first = "greedy_abstained" not in row  # not yet rescored: a chained rule keeps its verdict
    greedy_abstained = row.get("greedy_abstained", greedy)
    row["greedy_abstained"] = greedy_abstained
    if first and row["abstained"] and not greedy_abstained and raw is not None:
        row["answer"] = strip_markers(clean_answer(raw))  # undo a live threshold's verdict
        if row["answerable"]:
            row["f1"] = token_f1(row["answer"], row["gold"])
            row["contains"] = contains(row["answer"], row["gold"])
    value = row["signals"].get(signal)
    if threshold is None or value is None:
        by_score = False
    else:
        by_score = value > threshold if signal == "no_answer" else value < threshold
    row["abstained"] = (greedy_abstained if first else row["abstained"]) or by_score
    if row["abstained"]:
        row["answer"] = ABSTAIN
        if row["answerable"]:
            row["f1"] = token_f1(ABSTAIN, row["gold"])
            row["contains"] = contains(ABSTAIN, row["gold"])
    return row


def calibrate(rows: list[dict], signal: str = "verify") -> dict:
    """For each candidate threshold on `signal` (the recorded values): answered share of
    answerable rows and abstained share of unanswerable ones. Chosen: the threshold that
    abstains on the most unanswerable questions while answering at least 90% of the
    answerable ones (ties: the one with the fewer abstentions on answerable rows)."""
    rows = [r for r in rows if signal in r["signals"] or r["abstained"]]
    values = sorted({r["signals"][signal] for r in rows if signal in r["signals"]})
    sign = 1e-4 if signal == "no_answer" else -1e-4
    candidates = sorted({values[0] - 1e-4, values[-1] + 1e-4, *(v + sign for v in values)})
    table = []
    best = None
    for threshold in candidates if values else []:
        scored = [_apply(r, threshold, signal) for r in rows]
        ans = [r for r in scored if r["answerable"]]
        una = [r for r in scored if not r["answerable"]]
        answered = sum(not r["abstained"] for r in ans) / max(1, len(ans))
        abstain = sum(r["abstained"] for r in una) / max(1, len(una))
        table.append((round(threshold, 4), round(answered, 3), round(abstain, 3)))
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
