"""Document routing (ragchat/retrieval/routing.py) on the public sets: how many questions
each margin routes to one document, how many of those to the question's own document, and
the passages' document mix with and without routing. No language model involved.

    python bench/routing.py                      # qa-public, plays-public, ja-public
    python bench/routing.py --margins 0,0.1,0.2,0.3

Also the name rule (routing.named_source) alone and as shipped, after the weight rule.

Each set's PDFs are ingested once into /tmp/ragchat-routing/<set> (the default settings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.config import load_settings  # noqa: E402
from ragchat.eval.metrics import load_questions  # noqa: E402
from ragchat.index.lexical import content_terms  # noqa: E402
from ragchat.retrieval.retriever import Retriever, open_retriever  # noqa: E402
from ragchat.retrieval.routing import named_source, route  # noqa: E402

BENCH = REPO.parent / "shared" / "bench"
SETS = ("qa-public", "plays-public", "ja-public")
WORK = Path("/tmp/ragchat-routing")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--margins", default="0,0.1,0.15,0.2,0.25,0.3")
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    if not BENCH.is_dir():
        sys.exit(f"the bench sets are not at {BENCH}: this script needs ../shared/bench")
    margins = [float(m) for m in args.margins.split(",")]
    settings = load_settings({})
    from ragchat.ingest.pipeline import ingest

    print(f"margin: routed / to the question's own document, per set (k = {args.k})")
    for name in args.sets.split(","):
        index = WORK / name
        if not index.is_dir():
            ingest([BENCH / name / "docs"], index, settings)
        retriever = open_retriever(index, settings.replace(route_documents=True))
        store, lexical = retriever.store, retriever.store.lexical_index()
        names = {s.id: s.name for s in store.sources()}
        questions = [q for q in load_questions(BENCH / name / "questions.jsonl") if q.answers]
        routed = dict.fromkeys(margins, 0)
        right = dict.fromkeys(margins, 0)
        by_name = {"names alone": [0, 0], "shipped (weight rule, else names)": [0, 0]}
        sizes = store.source_sizes()
        for q in questions:
            weights = {
                t: lexical.idf(t)
                for t in content_terms(q.question, lexical.respellings(q.question))
            }
            counts = {}
            for t in weights:
                ids, n = np.unique(store.chunk_sources(lexical.chunks_with(t)), return_counts=True)
                counts[t] = dict(zip(ids.tolist(), n.tolist(), strict=True))
            holders = {t: set(c) for t, c in counts.items()}
            for margin in margins:
                source = route(weights, holders, margin)
                if source is not None:
                    routed[margin] += 1
                    right[margin] += names[source] == q.doc
            named = named_source(counts, sizes)
            weighed = route(weights, holders)
            for label, source in (
                ("names alone", named),
                ("shipped (weight rule, else names)", weighed if weighed is not None else named),
            ):
                if source is not None:
                    by_name[label][0] += 1
                    by_name[label][1] += names[source] == q.doc
        figures = "  ".join(f"{m:g}: {routed[m]}/{right[m]}" for m in margins)
        print(f"{name} ({len(questions)} answerable questions): {figures}")
        for label, (n, ok) in by_name.items():
            print(f"  {label}: {n}/{ok}")
        plain = Retriever(store, retriever.embedder, settings.retrieval, route=False)
        for label, r in (("unrouted", plain), ("routed", retriever)):
            own = total = 0
            for q in questions:
                passages = r.search(q.question, args.k)
                own += sum(p.doc == q.doc for p in passages)
                total += len(passages)
            share = own / max(total, 1)
            print(f"  {label}: {share:.1%} of the top-{args.k} passages from the question's doc")
        retriever.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
