"""Compare embedders for dense and hybrid retrieval on qa-public.

Issue "measure quality and speed": MiniLM and the `lm` embedder (mean-pooled last hidden
states of a causal LM), the latter both centred (what ragchat does) and uncentred
(mean-pooled + L2-normalised only).

    export RAGCHAT_CACHE_DIR=/tmp/rc-cache
    nice -n 19 python bench/embedders.py                          # minilm, lm:smollm2, lm:qwen0.5b
    nice -n 19 python bench/embedders.py --embedders minilm --limit 20   # a quick try
    nice -n 19 python bench/embedders.py --subset 1/4     # PDFs at sorted positions 1, 5, ...

For each embedder, the qa-public PDFs are ingested with ragchat's own `ingest()` (chunked by
that embedder's tokenizer, 160 tokens / overlap 32 by default) into
/tmp/ragchat-embedders/<name>, reused when already there. Then:

1. "ragchat": `run_eval` over `open_retriever` with methods dense and hybrid, exactly what
   `ragchat eval QUESTIONS --index PATH --retrieval-only --method M` prints.
2. "script": every chunk text and question re-embedded here (timed: the embed chunks/s
   column), searched with a FAISS IndexFlatIP built here, hybrid fused with
   `ragchat.retrieval.fusion.fuse` over the store's BM25 as `Retriever.search` does, and scored with
   `evaluation.retrieval_metrics`. For an LM this covers both variants: centred
   (normalise(pooled - corpus mean), which must reproduce step 1) and uncentred
   (normalise(pooled)). For MiniLM it just repeats step 1 as a check.

Embedding speed is the time spent in the embedder's pool/embed calls on chunk texts: during
ingest for a fresh build (recorded by `Recorder`, which also keeps the vectors, and skips
re-pooling the chunks an LM's fit already pooled), else a timed re-embedding, batch 32.
On the 2 shared cores a full `lm:qwen0.5b` build takes ~25-35 min.

Results go to stdout (a markdown table) and /tmp/ragchat-embedders/results-<subset>.json.
Write-up: docs/retrieval.md (from /work/notes/bench-embedders.md).

Runtimes side by side (issue 11):

    nice -n 10 python bench/embedders.py --runtimes torch,onnx,onnx-int8 [--rounds 2]

`ragchat ingest` of the qa-public PDFs as a user runs it (a fresh process per ingest, so
each side pays its own imports and model load, into a fresh index), the runtimes taking
turns, `--rounds` times; then per runtime: passage hit@1/@5/MRR (hybrid and dense, what
`ragchat eval --retrieval-only` prints) and the cosine of every chunk vector to the same
chunk's vector from the first runtime (chunk texts are checked to be identical). Printed
with the load average before and after.

    nice -n 10 python bench/embedders.py --runtimes torch,onnx,onnx-int8 --embed-speed 128 \
        --threads 1,2 --rounds 3

The bare embedder alone, per runtime and intra-op thread count, on the same chunks of the
index the side by side built, interleaved, best of --rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragchat.config import Settings, load_settings  # noqa: E402
from ragchat.eval.metrics import Question, load_questions, retrieval_metrics  # noqa: E402
from ragchat.eval.runner import EVAL_K, run_eval  # noqa: E402
from ragchat.hub import configure_hub  # noqa: E402
from ragchat.index.store import IndexStore  # noqa: E402
from ragchat.retrieval.retriever import MIN_CANDIDATES, Retriever, open_retriever  # noqa: E402

if TYPE_CHECKING:
    from ragchat.retrieval.embedders import Embedder

QA = REPO.parent / "shared" / "bench" / "qa-public"
ROOT = Path("/tmp/ragchat-embedders")
DEFAULT_EMBEDDERS = "minilm,lm:smollm2,lm:qwen0.5b"

Metrics = dict[str, float]
METRICS = ("hit@1", "hit@5", "mrr")


def index_name(spec: str, subset: str = "all") -> str:
    """A folder name for an embedder spec ("lm:qwen0.5b" -> "lm-qwen0.5b"), plus the subset."""
    name = spec.replace(":", "-").replace("/", "_")
    return name if subset == "all" else f"{name}-docs{subset.replace('/', 'of')}"


def subset_docs(subset: str) -> list[Path]:
    """The qa-public PDFs of `subset`: "all", or "k/n" = the files at sorted positions
    k, k + n, k + 2n, ..."""
    docs = sorted((QA / "docs").glob("*.pdf"))
    if subset == "all":
        return docs
    k, n = (int(x) for x in subset.split("/"))
    return docs[k::n]


class Recorder:
    """While installed, records every vector the embedder classes compute during ingest:
    raw pooled states for an LM (`LMEmbedder.pool`, called by both `fit` and `embed`),
    the final vectors for the others (`embed`), with the time spent computing them."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        self.texts = 0
        self.seconds = 0.0
        self._saved: list[tuple[type, str, Any]] = []

    def install(self) -> None:
        from ragchat.retrieval.embedders import LMEmbedder, SentenceEmbedder, STEmbedder

        for cls, name in ((LMEmbedder, "pool"), (SentenceEmbedder, "embed"), (STEmbedder, "embed")):
            original = getattr(cls, name)
            self._saved.append((cls, name, original))
            setattr(cls, name, self._wrap(original))

    def uninstall(self) -> None:
        for cls, name, original in self._saved:
            setattr(cls, name, original)
        self._saved.clear()

    def _wrap(self, original: Any) -> Any:
        def recorded(embedder: Any, texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
            # A text seen before (the LM's fit pools the first chunks, then embed pools them
            # again) is not computed twice: the bench machine has 2 shared cores.
            missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
            if missing:
                t0 = time.perf_counter()
                out = original(embedder, missing, *args, **kwargs)
                self.seconds += time.perf_counter() - t0
                self.texts += len(missing)
                self.vectors.update(zip(missing, out.copy(), strict=True))
            return np.stack([self.vectors[t] for t in texts])

        return recorded


def vectors_file(root: Path, spec: str, subset: str) -> Path:
    return root / f"{index_name(spec, subset)}.vectors.npz"


def build_index(
    spec: str, settings: Settings, root: Path, subset: str = "all"
) -> tuple[Path, dict[str, Any]]:
    """The qa-public index for `spec` under `root`, built with ragchat's ingest unless it is
    already there; info: chunks, chunking, ingest seconds (from when it was built). A fresh
    build also saves the chunk vectors ingest computed (raw pooled for an LM) and their
    embedding rate."""
    from ragchat.index.store import MANIFEST
    from ragchat.ingest.pipeline import ingest

    path = root / index_name(spec, subset)
    info_file = root / f"{index_name(spec, subset)}.ingest.json"
    if (path / MANIFEST).is_file() and info_file.is_file():
        return path, json.loads(info_file.read_text()) | {"reused": True}
    if path.exists():
        shutil.rmtree(path)  # a build that did not finish
    root.mkdir(parents=True, exist_ok=True)

    def progress(event: Any) -> None:
        if event.stage == "fit":
            print(f"  fitting the centring mean on {event.total} chunks", file=sys.stderr)
        elif event.stage == "file" and event.outcome is not None:
            o = event.outcome
            print(f"  {Path(o.path).name}: {o.status}, {o.chunks} chunks", file=sys.stderr)

    print(f"ingesting qa-public with {spec} into {path}", file=sys.stderr)
    recorder = Recorder()
    recorder.install()
    try:
        t0 = time.perf_counter()
        report = ingest(
            subset_docs(subset), path, settings.replace(embedder=spec), progress=progress
        )
        seconds = time.perf_counter() - t0
    finally:
        recorder.uninstall()
    bad = [f for f in report.files if f.status not in ("indexed", "unchanged")]
    if bad:
        raise SystemExit(f"ingest with {spec} left files out: {bad}")
    with IndexStore.open(path) as store:
        ids, texts = store.iter_chunk_texts()
        info = {
            "chunks": store.chunk_count(),
            "chunk_tokens": store.config.chunk_tokens,
            "chunk_overlap": store.config.chunk_overlap,
            "embedder_id": store.config.embedder,
            "dim": store.config.dim,
            "ingest_s": round(seconds, 1),
            "loadavg_at_end": [round(x, 1) for x in os.getloadavg()],
        }
    save_vectors(
        vectors_file(root, spec, subset),
        ids,
        np.stack([recorder.vectors[t] for t in texts]),
        recorder.texts,
        recorder.seconds,
        "during ingest (LM: fit, whose vectors embed reuses)",
    )
    info_file.write_text(json.dumps(info))
    return path, info | {"reused": False}


def save_vectors(
    file: Path, ids: Sequence[int], vectors: np.ndarray, texts: int, seconds: float, how: str
) -> None:
    np.savez(
        file,
        ids=np.asarray(ids, dtype=np.int64),
        vectors=vectors.astype(np.float32),
        texts=np.int64(texts),
        seconds=np.float64(seconds),
        how=np.str_(how),
        loadavg=np.asarray(os.getloadavg()),
    )


def load_chunk_vectors(
    file: Path, embedder: Embedder, ids: Sequence[int], texts: Sequence[str], batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The chunks' vectors (raw pooled for an LM) in `ids` order, and how fast they were
    computed: from `file` when it matches, else embedded now and saved there."""
    if file.is_file():
        data = np.load(file)
        if list(data["ids"]) == list(ids):
            speed = {
                "texts": int(data["texts"]),
                "seconds": float(data["seconds"]),
                "how": str(data["how"]),
                "loadavg": [round(float(x), 1) for x in data["loadavg"]],
            }
            return data["vectors"], speed
    vectors, seconds = embed_all(embedder, texts, "passage", batch_size)
    save_vectors(file, ids, vectors, len(texts), seconds, "re-embedded after ingest")
    return load_chunk_vectors(file, embedder, ids, texts, batch_size)


def ragchat_eval(retriever: Retriever, questions: Sequence[Question]) -> Metrics:
    """What `ragchat eval --retrieval-only` reports for the retriever's method."""
    try:
        return run_eval(questions, retriever).retrieval
    except (ImportError, re.error) as exc:
        # run_eval imports ragchat.answer.qa (for answering) even when only retrieving; while that
        # import is broken, do what it does for retrieval: top EVAL_K, retrieval_metrics.
        print(f"  (run_eval unusable: {exc!r}; scoring its retrieval step here)", file=sys.stderr)
        results = [retriever.search(q.question, EVAL_K) for q in questions]
        return retrieval_metrics(questions, results)


def embed_all(
    embedder: Embedder, texts: Sequence[str], kind: str, batch_size: int
) -> tuple[np.ndarray, float]:
    """(vectors, seconds): raw mean-pooled states for an LM embedder, else the embedder's
    normalised vectors."""
    t0 = time.perf_counter()
    if hasattr(embedder, "pool"):
        vectors = embedder.pool(texts, batch_size=batch_size)
    else:
        vectors = embedder.embed(texts, kind=kind, batch_size=batch_size)  # type: ignore[arg-type]
    return vectors, time.perf_counter() - t0


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def mean_cosine(vectors: np.ndarray) -> float:
    """Average pairwise cosine of normalised rows (self-pairs excluded)."""
    n = len(vectors)
    total = float(np.square(vectors.astype(np.float64).sum(axis=0)).sum())
    return (total - n) / (n * (n - 1))


def script_eval(
    store: IndexStore,
    ids: Sequence[int],
    chunk_vectors: np.ndarray,
    query_vectors: np.ndarray,
    questions: Sequence[Question],
) -> dict[str, Metrics]:
    """Dense and hybrid metrics with the given (normalised) vectors, searched and fused as
    `Retriever.search` does for `run_eval` (top EVAL_K; hybrid fuses MIN_CANDIDATES each)."""
    import faiss

    from ragchat.retrieval.fusion import fuse

    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(chunk_vectors.shape[1]))
    flat.add_with_ids(np.ascontiguousarray(chunk_vectors), np.asarray(ids, dtype=np.int64))
    depth = max(EVAL_K, MIN_CANDIDATES)
    scores, found = flat.search(np.ascontiguousarray(query_vectors), depth)
    lexical = store.lexical_index()
    dense_results = []
    hybrid_results = []
    for q, row_ids, row_scores in zip(questions, found, scores, strict=True):
        dense = [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
        dense_results.append(store.passages(dense[:EVAL_K]))
        bm25 = lexical.search(q.question.strip(), depth)
        hybrid_results.append(store.passages(fuse({"dense": dense, "bm25": bm25}, limit=EVAL_K)))
    return {
        "dense": retrieval_metrics(questions, dense_results),
        "hybrid": retrieval_metrics(questions, hybrid_results),
    }


def stored_vectors(store: IndexStore, ids: Sequence[int]) -> np.ndarray:
    """The vectors ingest stored, read back from the store's FAISS index."""
    index = store.vector_index()
    return np.stack([index.reconstruct(int(i)) for i in ids])


def compare(
    spec: str, settings: Settings, questions: Sequence[Question], subset: str
) -> list[dict[str, Any]]:
    """Rows for one embedder: ragchat's own figures, then the script's per variant."""
    path, info = build_index(spec, settings, ROOT, subset)
    print(f"{spec}: {info['chunks']} chunks ({'reused' if info['reused'] else 'built'})")
    retriever = open_retriever(path, settings.replace(retrieval="dense"))
    try:
        store, embedder = retriever.store, retriever.embedder
        official = {
            "dense": ragchat_eval(retriever, questions),
            "hybrid": ragchat_eval(Retriever(store, embedder, "hybrid"), questions),
        }
        print(f"  ragchat eval: {json.dumps(official)}")
        ids, texts = store.iter_chunk_texts()
        batch = settings.embed_batch_size
        chunk_raw, speed = load_chunk_vectors(
            vectors_file(ROOT, spec, subset), embedder, ids, texts, batch
        )
        # One at a time, as Retriever.search embeds a query: in a padded batch the bf16
        # matmuls come out slightly different, enough to swap near-tied chunks.
        query_raw = np.concatenate(
            [embed_all(embedder, [q.question.strip()], "query", 1)[0] for q in questions]
        )
        rate = speed["texts"] / speed["seconds"]
        print(
            f"  embedding: {speed['texts']} texts in {speed['seconds']:.1f} s ({rate:.1f}/s, "
            f"{speed['how']}, load average then {speed['loadavg']})"
        )
        mean = embedder.state().get("mean")
        if mean is None:
            variants = {"-": (chunk_raw, query_raw)}
        else:
            variants = {
                "yes": (normalise(chunk_raw - mean), normalise(query_raw - mean)),
                "no": (normalise(chunk_raw), normalise(query_raw)),
            }
        # The re-embedded vectors the index holds (centred for an LM) should equal ingest's.
        reference = variants["yes" if mean is not None else "-"][0]
        agreement = np.einsum("ij,ij->i", reference, stored_vectors(store, ids))
        print(f"  cosine to the stored vectors: min {agreement.min():.5f}")
        rows = []
        for centred, (chunk_vectors, query_vectors) in variants.items():
            metrics = script_eval(store, ids, chunk_vectors, query_vectors, questions)
            rows.append(
                {
                    "embedder": spec,
                    "subset": subset,
                    "centred": centred,
                    **{f"{m}_{k}": v[k] for m, v in metrics.items() for k in METRICS},
                    "ragchat": official if centred in ("yes", "-") else None,
                    "chunks": len(texts),
                    "chunk_tokens": info["chunk_tokens"],
                    "dim": info["dim"],
                    "embed_chunks_per_s": round(rate, 1),
                    "ingest_s": info["ingest_s"],
                    "embed_how": speed["how"],
                    "embed_loadavg": speed["loadavg"],
                    "mean_pair_cosine": round(mean_cosine(chunk_vectors), 3),
                    "min_cos_to_stored": float(agreement.min()),
                    "n": metrics["dense"]["n"],
                }
            )
            print(f"  centred={centred}: {json.dumps(metrics)}")
        return rows
    finally:
        retriever.close()


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print()
    print(
        "| embedder | centred | dense hit@1 | dense hit@5 | dense MRR | hybrid hit@1 "
        "| hybrid hit@5 | hybrid MRR | chunks | embed chunks/s | mean pair cos |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r[f"{m}_{k}"] for m in ("dense", "hybrid") for k in ("hit@1", "hit@5", "mrr")]
        print(
            f"| {r['embedder']} | {r['centred']} | "
            + " | ".join(f"{c:.3f}" for c in cells)
            + f" | {r['chunks']} | {r['embed_chunks_per_s']} | {r['mean_pair_cosine']} |"
        )
    print()
    print("ragchat eval (run_eval over open_retriever) vs the script, centred / MiniLM rows:")
    for r in rows:
        if r["ragchat"] is None:
            continue
        for m in ("dense", "hybrid"):
            o = r["ragchat"][m]
            same = all(abs(o[k] - r[f"{m}_{k}"]) < 1e-9 for k in ("hit@1", "hit@5", "mrr"))
            print(
                f"  {r['embedder']} {m}: ragchat {o['hit@1']:.3f} / {o['hit@5']:.3f} / "
                f"{o['mrr']:.3f}, {'same' if same else 'DIFFERENT'}"
            )


def runtimes_side_by_side(runtimes: list[str], rounds: int, settings: Settings) -> None:
    """Ingest qa-public with each runtime in turn (fresh process, fresh index), then compare
    retrieval quality and the vectors against the first runtime's."""
    import subprocess

    root = Path("/tmp/ragchat-runtimes")
    docs = QA / "docs"
    questions = [q for q in load_questions(QA / "questions.jsonl") if q.answerable]
    print(f"load average before: {os.getloadavg()}")
    walls: dict[str, list[float]] = {rt: [] for rt in runtimes}
    cpus: dict[str, list[float]] = {rt: [] for rt in runtimes}
    reports: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        for rt in runtimes:
            index = root / rt
            shutil.rmtree(index, ignore_errors=True)
            cmd = [sys.executable, "-m", "ragchat", "ingest", str(docs), "--index", str(index)]
            cmd += ["--embedder-runtime", rt, "--json", "--quiet"]
            env = dict(os.environ, PYTHONPATH=str(REPO))
            started = time.perf_counter()
            cpu_before = _children_cpu()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            walls[rt].append(time.perf_counter() - started)
            cpus[rt].append(_children_cpu() - cpu_before)
            if out.returncode not in (0, 3):
                raise SystemExit(f"{rt}: ingest failed ({out.returncode}): {out.stderr[-2000:]}")
            reports[rt] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"  round {r + 1} {rt:<10} {walls[rt][-1]:6.1f} s wall, {cpus[rt][-1]:6.1f} s CPU",
                flush=True,
            )
    print(f"load average after ingests: {os.getloadavg()}")

    base_texts: list[str] | None = None
    base_vectors: np.ndarray | None = None
    rows = []
    for rt in runtimes:
        run_settings = settings.replace(embedder_runtime=rt)
        with IndexStore.open(root / rt) as store:
            ids, texts = store.iter_chunk_texts()
            vectors = stored_vectors(store, ids)
            made_by = store.config.embedder_runtime
        if base_texts is None:
            base_texts, base_vectors = texts, vectors
        same = texts == base_texts
        cosine = (vectors * base_vectors).sum(axis=1) if same else np.array([np.nan])
        metrics = {}
        for method in ("hybrid", "dense"):
            retriever = open_retriever(root / rt, run_settings.replace(retrieval=method))
            try:
                metrics[method] = ragchat_eval(retriever, questions)
            finally:
                retriever.close()
        pages = sum(f.get("pages") or 0 for f in reports[rt].get("files", []))
        rows.append(
            {
                "runtime": rt,
                "manifest_runtime": made_by,
                "wall_s": walls[rt],
                "cpu_s": cpus[rt],
                "pages": pages,
                "chunks": len(texts),
                "same_chunks_as_first": same,
                "cosine_min": float(np.min(cosine)),
                "cosine_mean": float(np.mean(cosine)),
                "metrics": metrics,
            }
        )
    first = min(walls[runtimes[0]])
    first_cpu = min(cpus[runtimes[0]])
    print(
        f"\n| runtime | manifest | ingest wall (best of {rounds}) | speed-up vs {runtimes[0]} | "
        "CPU s | CPU speed-up | pages/s | chunks | cosine min / mean | hybrid hit@5 / MRR | "
        "dense hit@5 / MRR |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for row in rows:
        best = min(row["wall_s"])
        cpu = min(row["cpu_s"])
        h, d = row["metrics"]["hybrid"], row["metrics"]["dense"]
        print(
            f"| {row['runtime']} | {row['manifest_runtime']} | {best:.1f} s | "
            f"{first / best:.2f}x | {cpu:.1f} | {first_cpu / cpu:.2f}x | "
            f"{row['pages'] / best:.1f} | {row['chunks']} | "
            f"{row['cosine_min']:.4f} / {row['cosine_mean']:.4f} | "
            f"{h['hit@5']:.3f} / {h['mrr']:.3f} | {d['hit@5']:.3f} / {d['mrr']:.3f} |"
        )
    print(f"load average at the end: {os.getloadavg()}")
    (root / "results.json").write_text(json.dumps(rows, indent=1))


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (an ingest process and
    the PDF workers it waited for): the work done, which the machine's load barely moves."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def embed_speed(
    runtimes: list[str], threads: list[int], n: int, rounds: int, settings: Settings
) -> None:
    """The bare embedder per runtime and thread count on the same n qa-public chunks (from
    /tmp/ragchat-runtimes/<first runtime>), interleaved, best of `rounds`: the ratio the
    ingest side by side cannot isolate."""
    from ragchat.retrieval.embedders import load_embedder

    with IndexStore.open(Path("/tmp/ragchat-runtimes") / runtimes[0]) as store:
        _, texts = store.iter_chunk_texts()
    texts = texts[:: max(1, len(texts) // n)][:n]
    embedders = {
        (rt, t): load_embedder("minilm", settings.replace(threads=t), runtime=rt)
        for rt in runtimes
        for t in threads
    }
    print(f"load average before: {os.getloadavg()}; {len(texts)} chunks, batch 32")
    best = dict.fromkeys(embedders, float("inf"))
    for _ in range(rounds):
        for key, embedder in embedders.items():
            if key[0] == "torch":  # torch's thread count is process-wide: set it each time
                import torch

                torch.set_num_threads(key[1] or os.cpu_count() or 1)
            embedder.embed(texts[:8], kind="passage")  # warm
            started = time.perf_counter()
            embedder.embed(texts, kind="passage", batch_size=32)
            best[key] = min(best[key], time.perf_counter() - started)
    ref = best[(runtimes[0], threads[0])]
    print(f"| runtime | threads | best of {rounds} | chunks/s | speed-up vs first |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (rt, t), seconds in best.items():
        print(
            f"| {rt} | {t or 'default'} | {seconds:.1f} s | {len(texts) / seconds:.1f} | "
            f"{ref / seconds:.2f}x |"
        )
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", default=DEFAULT_EMBEDDERS, help="comma-separated specs")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument(
        "--subset",
        default="all",
        help='documents: "all", or "k/n" = sorted positions k, k+n, ... (and their questions)',
    )
    parser.add_argument(
        "--runtimes", help="e.g. torch,onnx,onnx-int8: ingest speed and quality side by side"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --runtimes")
    parser.add_argument(
        "--embed-speed",
        type=int,
        metavar="N",
        help="with --runtimes: only the bare embedder per runtime on N chunks of the index",
    )
    parser.add_argument("--threads", default="0", help="with --embed-speed, e.g. 1,2")
    args = parser.parse_args()
    settings = load_settings()
    configure_hub(settings.allow_download)
    if args.runtimes and args.embed_speed:
        threads = [int(t) for t in args.threads.split(",")]
        embed_speed(args.runtimes.split(","), threads, args.embed_speed, args.rounds, settings)
        return
    if args.runtimes:
        runtimes_side_by_side(args.runtimes.split(","), args.rounds, settings)
        return
    names = {p.name for p in subset_docs(args.subset)}
    questions = [
        q for q in load_questions(QA / "questions.jsonl") if q.answerable and q.doc in names
    ]
    if args.limit:
        questions = questions[: args.limit]
    print(
        f"{len(names)} documents ({args.subset}), {len(questions)} answerable questions; "
        f"chunks of <= {settings.chunk_tokens} tokens of each embedder's tokenizer, "
        f"overlap {settings.chunk_overlap}; cache {settings.cache_dir}"
    )
    rows: list[dict[str, Any]] = []
    for spec in [s.strip() for s in args.embedders.split(",") if s.strip()]:
        rows += compare(spec, settings, questions, args.subset)
        out = ROOT / f"results-{args.subset.replace('/', 'of')}.json"
        out.write_text(json.dumps(rows, indent=1))  # after each embedder: runs are long
    print_table(rows)


if __name__ == "__main__":
    main()
