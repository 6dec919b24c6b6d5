"""Retrieval-level abstention signals on questions the index can and cannot answer, for
calibrating the off-topic rule in ragchat/answer/abstention.py. No language model runs.

    python bench/offtopic.py --report offtopic.jsonl        # compute the signals (minutes)
    python bench/offtopic.py --analyse offtopic.jsonl       # the trade-off table

Pairs (index ← questions), all from ../shared/bench:
  qa      ← qa-public answerable (on-topic), SQuAD 2.0 unanswerable (near-miss),
            plays-public and ja-public questions (off-topic)
  qa-half ← qa-public questions on its 10 articles (on-topic) and on the 10 left out
            (off-topic: SQuAD questions about other articles, the held-out off-topic case)
  plays   ← plays-public questions (on-topic), qa-public questions (off-topic)
  ja      ← ja-public questions (on-topic), qa-public questions (off-topic)
  sample  ← bench/sample_questions.jsonl over docs/sample/gull-point.pdf: short questions
            as a user types them (38 the sample answers, 14 it doesn't, some about
            lighthouses in general), written for stop 27 and used for no other choice
Indexes are built once under /tmp/ragchat-offtopic (qa-half is the qa index with half its
sources removed, so no PDF is embedded twice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.config import load_settings  # noqa: E402
from ragchat.eval.metrics import load_questions  # noqa: E402

BENCH = REPO.parent / "shared" / "bench"
WORK = Path("/tmp/ragchat-offtopic")
SIGNALS = ("coverage", "passage_coverage", "dense_top", "sentence_top", "agreement")


def build_indexes(settings, only: set[str]) -> dict[str, Path]:
    from ragchat.ingest.pipeline import ingest, remove

    indexes = {}
    for name, docs in (
        ("qa", BENCH / "qa-public" / "docs"),
        ("plays", BENCH / "plays-public" / "docs"),
        ("ja", BENCH / "ja-public" / "docs"),
        ("sample", REPO / "docs" / "sample" / "gull-point.pdf"),
    ):
        if name not in only and not (name == "qa" and "qa-half" in only):
            continue
        path = WORK / name
        if not (path / "manifest.json").exists():
            t0 = time.perf_counter()
            ingest([docs], path, settings)
            print(f"indexed {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        indexes[name] = path
    half = WORK / "qa-half"
    if "qa-half" in only and not (half / "manifest.json").exists():
        shutil.copytree(WORK / "qa", half, ignore=shutil.ignore_patterns(".lock"))
        remove(half, sorted(p.name for p in (BENCH / "qa-public" / "docs").glob("*.pdf"))[1::2])
    indexes["qa-half"] = half
    return indexes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--report", type=Path, help="write one JSON line per question here")
    ap.add_argument("--analyse", type=Path, nargs="+", metavar="REPORT")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="INDEX",
        help="these indexes only (qa qa-half plays ja sample)",
    )
    args = ap.parse_args()
    if args.analyse:
        rows = [json.loads(line) for p in args.analyse for line in p.read_text().splitlines()]
        analyse(rows)
        for loss in (0.01, 0.02, 0.03):
            joint(rows, loss)
        shipped(rows)
        return 0
    settings = load_settings({})
    WORK.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("qa", "qa-half", "plays", "ja", "sample"))
    indexes = build_indexes(settings, only)
    qa = load_questions(BENCH / "qa-public" / "questions.jsonl")
    unanswerable = load_questions(BENCH / "qa-public" / "questions_unanswerable.jsonl")
    plays = load_questions(BENCH / "plays-public" / "questions.jsonl")
    ja = load_questions(BENCH / "ja-public" / "questions.jsonl")
    sample = load_questions(REPO / "bench" / "sample_questions.jsonl")
    kept = {p.name for p in (BENCH / "qa-public" / "docs").glob("*.pdf")}
    kept = set(sorted(kept)[0::2])
    pairs = [
        ("qa", "on", qa),
        ("qa", "near", unanswerable),
        ("qa", "off", plays + ja),
        ("qa-half", "on", [q for q in qa if q.doc in kept]),
        ("qa-half", "off", [q for q in qa if q.doc not in kept]),
        ("plays", "on", plays),
        ("plays", "off", qa),
        ("ja", "on", ja),
        ("ja", "off", qa),
        ("sample", "on", [q for q in sample if not q.off_topic]),
        ("sample", "off", [q for q in sample if q.off_topic]),
    ]
    out = open(args.report, "w", encoding="utf-8") if args.report else sys.stdout  # noqa: SIM115
    from ragchat.answer.abstention import coverage_signals
    from ragchat.answer.focus import rank_units
    from ragchat.answer.qa import reads_as_script
    from ragchat.retrieval.retriever import open_retriever

    for index, kind, questions in pairs:
        if index not in only:
            continue
        retriever = open_retriever(indexes[index], settings)
        lexical = retriever.store.lexical_index()
        for q in questions:
            passages, evidence = retriever.search_with_evidence(q.question, args.k)
            respelled = lexical.respellings(q.question)
            unknown = lexical.unknown_names(q.question)
            coverage = coverage_signals(q.question, passages, lexical.idf, respelled, unknown)
            script = reads_as_script(retriever, passages)
            # as answer() ranks a lookup's sentences (answer/qa.py): the closest one's cosine
            ranking = rank_units(q.question, passages, retriever.embedder, script=script)
            signals = {
                **evidence,
                **coverage,
                "script": float(script),
                "sentence_top": ranking.top,
            }
            row = {"index": index, "kind": kind, "id": q.id, "question": q.question}
            row["signals"] = {k: round(v, 4) for k, v in signals.items()}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
        retriever.close()
        print(f"{index} <- {kind}: {len(questions)} questions", file=sys.stderr)
    return 0


def joint(rows: list[dict], max_loss: float = 0.02) -> None:
    """The pair of bars (dense_top, passage_coverage; abstain when either is below its
    bar) that catches the most off-topic questions while abstaining on at most `max_loss`
    of the on-topic questions of every index."""
    dense = sorted({r["signals"].get("dense_top", 1.0) for r in rows})[::4]
    cover = sorted({r["signals"].get("passage_coverage", 1.0) for r in rows})[::4]
    indexes = sorted({r["index"] for r in rows})
    best = None
    for d in dense:
        for c in cover:

            def fires(r: dict, d: float = d, c: float = c) -> bool:
                s = r["signals"]
                return s.get("dense_top", 1.0) < d or s.get("passage_coverage", 1.0) < c

            losses = []
            for i in indexes:
                on = [r for r in rows if r["index"] == i and r["kind"] == "on"]
                losses.append(sum(map(fires, on)) / max(1, len(on)))
            if max(losses) > max_loss:
                continue
            off = [r for r in rows if r["kind"] == "off"]
            caught = sum(map(fires, off)) / max(1, len(off))
            if best is None or caught > best[0]:
                near = [r for r in rows if r["kind"] == "near"]
                best = (caught, d, c, max(losses), sum(map(fires, near)) / max(1, len(near)))
                per = {
                    i: round(
                        sum(fires(r) for r in off if r["index"] == i)
                        / max(1, sum(r["index"] == i for r in off)),
                        3,
                    )
                    for i in indexes
                }
    if best:
        caught, d, c, loss, near = best
        print(
            f"joint, at most {max_loss:.0%} on-topic lost per index: dense_top < {d:.4f} or "
            f"passage_coverage < {c:.4f}: off-topic caught {caught:.3f} {per}, worst "
            f"on-topic loss {loss:.3f}, near-miss {near:.3f}"
        )


def shipped(rows: list[dict]) -> None:
    """What the shipped off-topic rule (abstention.decide with the default model's and
    MiniLM's bars, retrieval signals only) refuses of each pair: over prose the closest
    sentence's cosine with the passages' term coverage, over a script the best chunk's."""
    from ragchat.answer.abstention import decide, for_embedder, thresholds_for

    bars = for_embedder(thresholds_for("qwen1.5b"), "minilm")
    pairs = sorted({(r["index"], r["kind"]) for r in rows})
    for index, kind in pairs:
        sel = [r for r in rows if r["index"] == index and r["kind"] == kind]
        rules = [decide({"passages": 5.0, **r["signals"]}, bars).rule for r in sel]
        refused = sum(rule != "answered" for rule in rules)
        by_rule = {rule: rules.count(rule) for rule in sorted(set(rules)) if rule != "answered"}
        print(f"shipped rules: {index:8} <- {kind:4} refused {refused:3}/{len(sel)} {by_rule}")


def analyse(rows: list[dict]) -> None:
    """For each signal alone: the bar below which abstaining loses at most 1%, 2% and 5% of
    the on-topic questions, and the share of off-topic / near-miss questions it catches."""
    on = [r for r in rows if r["kind"] == "on"]
    for signal in SIGNALS:
        values = sorted(r["signals"].get(signal, 1.0) for r in on)
        for loss in (0.01, 0.02, 0.05):
            bar = values[int(loss * len(values))]
            caught = {}
            for kind in ("off", "near"):
                sel = [r for r in rows if r["kind"] == kind]
                caught[kind] = sum(r["signals"].get(signal, 1.0) < bar for r in sel) / max(
                    1, len(sel)
                )
            per_index = {
                i: round(
                    sum(
                        r["signals"].get(signal, 1.0) < bar
                        for r in rows
                        if r["index"] == i and r["kind"] == "off"
                    )
                    / max(1, sum(r["index"] == i and r["kind"] == "off" for r in rows)),
                    3,
                )
                for i in sorted({r["index"] for r in rows})
            }
            print(
                f"{signal:17} lose {loss:4.0%} of on-topic: bar {bar:.4f}  "
                f"off-topic caught {caught['off']:.3f}  near-miss {caught['near']:.3f}  "
                f"by index {per_index}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
