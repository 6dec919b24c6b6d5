"""How often the question-focused sentences still hold the answer: for each qa-public
question, retrieve the top-k passages as `ragchat ask` does, keep the best N sentences with
`focus.focus_passages`, and check whether a normalised gold answer occurs in them (and in
the whole passages, for comparison). No language model involved.

    python bench/focus_recall.py                   # dev split (questions 51–200), k = 5
    python bench/focus_recall.py --split all -k 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.answer.abstention import normalize_answer  # noqa: E402
from ragchat.answer.focus import focus_passages  # noqa: E402
from ragchat.config import load_settings  # noqa: E402
from ragchat.eval.metrics import load_questions  # noqa: E402

QA = REPO.parent / "shared" / "bench" / "qa-public"
INDEX = Path("/tmp/ragchat-answer-quality/qa-public")  # shared with answer_quality.py
SPLITS = {"dev": slice(50, 200), "acceptance": slice(0, 50), "all": slice(0, 200)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", choices=tuple(SPLITS), default="dev")
    ap.add_argument("-k", type=int, default=5, help="passages retrieved (default 5)")
    ap.add_argument("--sentences", default="1,2,3,4,6", help="focus sizes to compare")
    args = ap.parse_args()
    if not QA.is_dir():
        sys.exit(f"qa-public not found at {QA}: this bench needs ../shared/bench")
    settings = load_settings({})
    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever

    if not (INDEX / "manifest.json").exists():
        ingest([QA / "docs"], INDEX, settings)
    retriever = open_retriever(INDEX, settings)
    questions = load_questions(QA / "questions.jsonl")[SPLITS[args.split]]
    sizes = [int(n) for n in args.sentences.split(",")]
    hits = dict.fromkeys(sizes, 0)
    words = {n: [] for n in sizes}
    whole = 0
    started = time.perf_counter()
    for q in questions:
        passages = retriever.search(q.question, args.k)
        gold = [normalize_answer(a) for a in q.answers]
        whole += any(g in normalize_answer(p.text) for p in passages for g in gold)
        for n in sizes:
            text = " ".join(
                p.text
                for p in focus_passages(q.question, passages, retriever.embedder, sentences=n)
            )
            hits[n] += any(g in normalize_answer(text) for g in gold)
            words[n].append(len(text.split()))
    retriever.close()
    total = len(questions)
    print(
        f"{args.split}: {total} questions, top-{args.k} passages, "
        f"{time.perf_counter() - started:.0f}s"
    )
    print(f"{'given text':>22} {'holds a gold answer':>20} {'mean words':>11}")
    print(f"{'whole passages':>22} {whole / total:>20.3f} {'':>11}")
    for n in sizes:
        print(
            f"{f'focus, {n} sentences':>22} {hits[n] / total:>20.3f} "
            f"{statistics.fmean(words[n]):>11.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
