"""Search latency: FAISS flat (what ragchat uses) vs approximate indexes at 10k and 100k
chunks, with recall@10 against flat, and the end-to-end `Retriever.search` for scale.

    python bench/retrieval_latency.py                         # 10k and 100k chunks
    python bench/retrieval_latency.py --sizes 10000 --passes 1
    python bench/retrieval_latency.py --json /tmp/retrieval_latency.json

Vectors: the real MiniLM chunk vectors of an existing index (default the qa-public index at
/tmp/ragchat-answer-quality/qa-public, 1,221 chunks; read read-only from its
chunks.sqlite), grown to N by adding copies of random real vectors with gaussian noise
(sd `--noise` per dimension), renormalised. The real vectors stay in the set. Queries: the
MiniLM query embeddings of the 200 questions in ../shared/bench/qa-public/questions.jsonl.

Indexes (inner product on normalised vectors = cosine):
  flat       IndexIDMap2(IndexFlatIP) — exactly what ragchat/store.py builds
  hnsw32     IndexHNSWFlat M=32 (efConstruction 40), efSearch 64 and 128
  ivf        IndexIVFFlat, nlist = 4·sqrt(N), k-means trained on the N vectors, nprobe 8, 32

Latency is per single query (one 1×384 search call, k=10), timed one by one over all
questions `--passes` times after a short warm-up; p50/p95 over those calls. recall@10 =
mean |approx top-10 ∩ flat top-10| / 10. Build = add (and train) time. FAISS runs with its
default OpenMP thread count unless --faiss-threads says otherwise; the figure is printed.

ragchat's own index (`ragchat.index.store.build_vector_index`, what the FAISS cache is
built with): flat below IVF_THRESHOLD chunks, above it IVF with ~2·sqrt(N) cells trained
on the vectors and nprobe set at build time (twice what reaches recall@10 0.99 on
query-like vectors); here forced to IVF at every size with `--storages float32 float16
int8` (the per-component storage). RAM = growth of this process's resident memory while
the index is built and held (the input vectors excluded), and the index's size on disk.

    python bench/retrieval_latency.py --sizes 1000000 --only ragchat --faiss-threads 1 \
        --index /tmp/ragchat-runtimes/onnx

End to end: `ragchat.retrieval.retriever.open_retriever` on the real index
(settings.retrieval, hybrid by default: query embedding + FAISS + BM25 + fusion + passage
fetch), one call per question, with its parts (query embedding alone, BM25 alone, FAISS
alone) beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS = REPO.parent / "shared" / "bench" / "qa-public" / "questions.jsonl"
INDEX = Path("/tmp/ragchat-answer-quality/qa-public")
K = 10
WARMUP = 10


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAGCHAT_CACHE_DIR") or "/tmp/rc-cache")


def read_vectors(index: Path) -> np.ndarray:
    """The chunk vectors of an index (float32, n × dim), opened read-only."""
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    dim = int(manifest["config"]["dim"])
    db = sqlite3.connect(f"file:{index / 'chunks.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT vector FROM chunks ORDER BY id").fetchall()
    finally:
        db.close()
    # store.py keeps each vector as its raw float32 bytes (see IndexStore._all_vectors).
    return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, dim).copy()


def grow(base: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """`base` plus n - len(base) noisy, renormalised copies of random base rows."""
    extra = n - len(base)
    if extra <= 0:
        return base[:n].copy()
    picks = rng.integers(0, len(base), size=extra)
    copies = base[picks] + rng.normal(0.0, noise, size=(extra, base.shape[1])).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.ascontiguousarray(np.vstack([base, copies]), dtype=np.float32)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def p99(seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, 99))


def rss_mib() -> float:
    """This process's resident memory now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ragchat_rows(
    vectors: np.ndarray,
    queries: np.ndarray,
    passes: int,
    storages: list[str],
    exact: list[set[int]],
) -> list[dict[str, Any]]:
    """ragchat's build_vector_index forced to IVF, per storage kind: build time, tuned
    nprobe, p50/p95/p99 of single-query searches, recall@10 vs flat, RAM."""
    import faiss

    from ragchat.index.store import build_vector_index

    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    rows = []
    for storage in storages:
        before = rss_mib()
        started = time.perf_counter()
        index = build_vector_index(ids, vectors, dim, ivf_threshold=0, storage=storage)
        build_s = time.perf_counter() - started
        ram = rss_mib() - before
        ivf = faiss.extract_index_ivf(index)
        disk_mib = faiss.serialize_index(index).nbytes / 2**20

        def search(i: int, index: Any = index) -> np.ndarray:
            return index.search(queries[i : i + 1], K)[1][0]

        seconds, results = time_each(search, len(queries), passes)
        found = [{int(x) for x in r if x >= 0} for r in results]
        recall = float(np.mean([len(f & e) / K for f, e in zip(found, exact, strict=True)]))
        p50, p95 = percentiles(seconds)
        row = {
            "n": n,
            "index": f"ragchat ivf{ivf.nlist} {storage} nprobe {ivf.nprobe}",
            "build_s": build_s,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99(seconds),
            "recall": recall,
            "ram_mib": ram,
            "disk_mib": disk_mib,
        }
        rows.append(row)
        print(
            f"    {row['index']:<34} build {build_s:6.1f} s  p50 {p50:6.3f} ms  "
            f"p99 {row['p99_ms']:6.3f} ms  recall {recall:.3f}  RAM +{ram:.0f} MiB  "
            f"file {disk_mib:.0f} MiB",
            flush=True,
        )
        del index, ivf
    return rows


def time_each(search: Callable[[int], Any], n: int, passes: int) -> tuple[list[float], list[Any]]:
    """Per-call seconds of search(i) for every i, `passes` times (warm-up first); the first
    pass's results."""
    for i in range(min(WARMUP, n)):
        search(i)
    seconds: list[float] = []
    results: list[Any] = []
    for p in range(passes):
        for i in range(n):
            started = time.perf_counter()
            out = search(i)
            seconds.append(time.perf_counter() - started)
            if p == 0:
                results.append(out)
    return seconds, results


def faiss_rows(
    vectors: np.ndarray,
    queries: np.ndarray,
    passes: int,
    seed: int,
    only_flat: bool = False,
    storages: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Build each index over `vectors`, time single-query searches, recall vs flat; with
    `only_flat` only flat (the reference) and ragchat's own IVF per storage kind."""
    import faiss

    n, dim = vectors.shape
    rows: list[dict[str, Any]] = []

    def measure(
        name: str, index: Any, build_s: float, exact: list[set[int]] | None
    ) -> list[set[int]]:
        def search(i: int) -> np.ndarray:
            return index.search(queries[i : i + 1], K)[1][0]

        seconds, results = time_each(search, len(queries), passes)
        found = [{int(x) for x in r if x >= 0} for r in results]
        recall = (
            None
            if exact is None
            else float(np.mean([len(f & e) / K for f, e in zip(found, exact, strict=True)]))
        )
        p50, p95 = percentiles(seconds)
        rows.append(
            {
                "n": n,
                "index": name,
                "build_s": build_s,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99(seconds),
                "recall": recall,
            }
        )
        print(f"    {name:<24} p50 {p50:7.3f} ms  p95 {p95:7.3f} ms", flush=True)
        return found

    before = rss_mib()
    started = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    flat.add_with_ids(vectors, np.arange(n, dtype=np.int64))
    build_s = time.perf_counter() - started
    flat_ram = rss_mib() - before
    exact = measure("flat (IndexFlatIP)", flat, build_s, None)
    rows[-1]["ram_mib"] = flat_ram
    del flat
    if storages:
        rows += ragchat_rows(vectors, queries, passes, storages, exact)
    if only_flat:
        return rows

    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(vectors)
    hnsw_build = time.perf_counter() - started
    for ef in (64, 128):
        hnsw.hnsw.efSearch = ef
        measure(f"hnsw32 efSearch {ef}", hnsw, hnsw_build, exact)

    nlist = round(4 * math.sqrt(n))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(vectors)
    ivf.add(vectors)
    ivf_build = time.perf_counter() - started
    for nprobe in (8, 32):
        ivf.nprobe = nprobe
        measure(f"ivf{nlist} nprobe {nprobe}", ivf, ivf_build, exact)
    return rows


def end_to_end(
    index: Path, settings: Any, questions: list[str], passes: int
) -> list[dict[str, Any]]:
    """Retriever.search on the real index, and its parts, per question."""
    from ragchat.retrieval.retriever import open_retriever

    retriever = open_retriever(index, settings)
    try:
        retriever.warm_up()
        store, embedder = retriever.store, retriever.embedder
        vectors = embedder.embed(questions, kind="query")
        from ragchat.retrieval.retriever import MIN_CANDIDATES

        depth = max(K, MIN_CANDIDATES)
        parts: list[tuple[str, Callable[[int], Any]]] = [
            (
                f"Retriever.search ({retriever.method}, k={K})",
                lambda i: retriever.search(questions[i], K),
            ),
            ("  query embedding alone", lambda i: embedder.embed([questions[i]], kind="query")),
            (
                f"  BM25 alone (top {depth})",
                lambda i: store.lexical_index().search(questions[i], depth),
            ),
            (
                f"  FAISS flat alone (top {depth})",
                lambda i: store.search_vectors(vectors[i], depth),
            ),
        ]
        rows = []
        for name, call in parts:
            seconds, _ = time_each(call, len(questions), passes)
            p50, p95 = percentiles(seconds)
            rows.append({"what": name, "p50_ms": p50, "p95_ms": p95, "calls": len(seconds)})
            print(f"    {name:<36} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms", flush=True)
        return rows
    finally:
        retriever.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--index", type=Path, default=INDEX, help="index whose vectors to use")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--noise", type=float, default=0.03, help="sd per dimension of the copies")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the questions")
    parser.add_argument(
        "--faiss-threads", type=int, help="faiss.omp_set_num_threads (default: faiss's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="model cache for MiniLM (default: $RAGCHAT_CACHE_DIR or /tmp/rc-cache)",
    )
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--only", choices=("all", "ragchat"), default="all", help="ragchat: flat + ragchat's IVF"
    )
    parser.add_argument(
        "--storages",
        nargs="*",
        default=["float32", "float16", "int8"],
        help="ragchat IVF storage kinds to build (none: skip ragchat's rows)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not (args.index / "chunks.sqlite").is_file():
        print(f"no index at {args.index} (need its chunks.sqlite)", file=sys.stderr)
        return 2
    if not args.questions.is_file():
        print(f"no questions at {args.questions}", file=sys.stderr)
        return 2

    from ragchat.config import load_settings
    from ragchat.hub import configure_hub

    settings = load_settings({"cache_dir": args.cache_dir})
    configure_hub(settings.allow_download)
    import faiss

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    threads = faiss.omp_get_max_threads()

    from ragchat.retrieval.embedders import load_embedder

    questions = [
        json.loads(line)["question"]
        for line in args.questions.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    embedder = load_embedder("minilm", settings)
    queries = np.ascontiguousarray(embedder.embed(questions, kind="query"), dtype=np.float32)
    base = read_vectors(args.index)
    rng = np.random.default_rng(args.seed)

    print(
        f"vectors: {len(base)} real MiniLM chunk vectors from {args.index}, grown with noisy "
        f"copies (sd {args.noise}/dim, renormalised); a copy's cosine to its source ≈ "
        f"{_copy_cosine(args.noise, base.shape[1]):.2f}"
    )
    print(
        f"queries: {len(questions)} questions ({args.questions.name}), MiniLM query "
        f"embeddings; k={K}; {args.passes} timed passes; faiss {faiss.__version__}, "
        f"{threads} OpenMP thread(s) ({'--faiss-threads' if args.faiss_threads else 'default'})"
    )

    print(f"load average: {os.getloadavg()}")
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        print(f"  N = {n:,}", flush=True)
        vectors = grow(base, n, args.noise, rng)
        rows += faiss_rows(
            vectors, queries, args.passes, args.seed, args.only == "ragchat", args.storages
        )
        del vectors

    e2e: list[dict[str, Any]] = []
    if not args.skip_end_to_end:
        print(f"  end to end on {args.index} ({len(base)} chunks)", flush=True)
        e2e = end_to_end(args.index, settings, questions, args.passes)

    print(
        f"\n{'N':>9} {'index':<34} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'recall@10':>10} {'p50 x flat':>10} {'RAM MiB':>8}"
    )
    flat_p50 = {r["n"]: r["p50_ms"] for r in rows if r["recall"] is None}
    for r in rows:
        recall = "exact" if r["recall"] is None else f"{r['recall']:.3f}"
        ram = f"{r['ram_mib']:.0f}" if "ram_mib" in r else ""
        print(
            f"{r['n']:>9,} {r['index']:<34} {r['build_s']:>8.2f} {r['p50_ms']:>8.3f} "
            f"{r['p95_ms']:>8.3f} {r['p99_ms']:>8.3f} {recall:>10} "
            f"{r['p50_ms'] / flat_p50[r['n']]:>10.2f} {ram:>8}"
        )
    print("build: hnsw = add; ivf = k-means training + add (shared by both nprobe rows).")
    if e2e:
        print(
            f"\n{'end to end, ' + str(len(base)) + ' real chunks':<38} {'p50 ms':>8} {'p95 ms':>8}"
        )
        for r in e2e:
            print(f"{r['what']:<38} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "index": str(args.index),
            "real_vectors": len(base),
            "noise_sd": args.noise,
            "questions": len(questions),
            "k": K,
            "passes": args.passes,
            "faiss_threads": threads,
            "faiss_version": faiss.__version__,
            "load_average": os.getloadavg(),
        }
        args.json.write_text(
            json.dumps({"meta": meta, "faiss": rows, "end_to_end": e2e}, indent=2) + "\n"
        )
        print(f"\nwrote {args.json}")
    return 0


def _copy_cosine(noise: float, dim: int) -> float:
    """Expected cosine between a unit vector and its noisy, renormalised copy."""
    return 1.0 / math.sqrt(1.0 + noise * noise * dim)


if __name__ == "__main__":
    sys.exit(main())
