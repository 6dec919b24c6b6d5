"""`ragchat eval`: run a question set through retrieval (and, unless retrieval-only, the
answering model) and score it with the metrics of evaluation.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragchat.answer.citations import strip_citations
from ragchat.eval.metrics import (
    Question,
    answer_metrics,
    char_f1,
    contains,
    first_hit_rank,
    latency_percentiles,
    retrieval_metrics,
    rouge_l,
    token_f1,
)

if TYPE_CHECKING:
    from ragchat.answer.qa import AnswerPolicy
    from ragchat.generation.base import Generator
    from ragchat.retrieval.retriever import Retriever


# Retrieval is scored on this many results (hit@5 and MRR need at least 5).
EVAL_K = 10


@dataclass
class EvalReport:
    """Aggregates plus one row per question (for error analysis)."""

    retrieval: dict[str, float]
    answers: dict[str, Any] | None
    # seconds per step (retrieve_s, answer_s, first_token_s) and the generation speed
    # (tokens_per_s), each as latency_percentiles
    latency: dict[str, dict[str, float]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "retrieval": self.retrieval,
            "answers": self.answers,
            "latency": self.latency,
            "questions": self.rows,
        }


def run_eval(
    questions: Sequence[Question],
    retriever: Retriever,
    generator: Generator | None = None,
    *,
    k: int = 5,
    max_new_tokens: int = 160,
    on_question: Callable[[int, int], None] | None = None,
    policy: AnswerPolicy | None = None,
) -> EvalReport:
    """Retrieve for every question (and answer, when a generator is given) and score.
    Retrieval metrics use the top EVAL_K results; answers use the top `k` passages."""
    from ragchat.answer.qa import answer

    results = []
    rows: list[dict[str, Any]] = []
    retrieve_s: list[float] = []
    answer_s: list[float] = []
    first_token_s: list[float] = []
    tokens_per_s: list[float] = []  # generation speed of answers the model wrote
    predictions: list[str] = []
    abstained: list[bool] = []
    for i, q in enumerate(questions):
        t0 = time.perf_counter()
        passages = retriever.search(q.question, max(EVAL_K, k))
        retrieve_s.append(time.perf_counter() - t0)
        results.append(passages)
        rank = first_hit_rank(q, passages) if q.has_gold_page else None
        row: dict[str, Any] = {
            "id": q.id,
            "question": q.question,
            "answerable": q.answerable,
            "off_topic": q.off_topic,
            "gold": {"doc": q.doc, "pages": list(q.pages), "answers": list(q.answers)},
            "hit_rank": rank,
            "top": [
                {"doc": p.doc, "page": p.page, "page_end": p.page_end, "score": round(p.score, 4)}
                for p in passages[:5]
            ],
        }
        if generator is not None:
            result = answer(
                q.question, retriever, generator, k=k, max_new_tokens=max_new_tokens, policy=policy
            )
            prediction = strip_citations(result.text)
            predictions.append(prediction)
            abstained.append(result.abstained)
            answer_s.append(result.timings.total_s)
            if result.timings.first_token_s is not None:
                first_token_s.append(result.timings.first_token_s)
            if result.timings.gen_tokens > 1 and result.timings.tok_per_s > 0:
                tokens_per_s.append(result.timings.tok_per_s)
            scored = q.answerable and not q.off_topic
            row.update(
                answer=prediction,
                abstained=result.abstained,
                decided_by=result.decided_by,
                f1=round(token_f1(prediction, q.answers), 3) if scored else None,
                contains=contains(prediction, q.answers) if scored else None,
                rouge_l=round(rouge_l(prediction, q.answers), 3) if scored else None,
                char_f1=round(char_f1(prediction, q.answers), 3) if scored else None,
                seconds=round(result.timings.total_s, 2),
                tok_per_s=round(result.timings.tok_per_s, 1),
                signals={k: round(v, 4) for k, v in result.signals.items()},
            )
        rows.append(row)
        if on_question:
            on_question(i + 1, len(questions))

    answerable = [(q, r) for q, r in zip(questions, results, strict=True) if q.has_gold_page]
    retrieval = retrieval_metrics([q for q, _ in answerable], [r for _, r in answerable])
    latency = {"retrieve_s": latency_percentiles(retrieve_s)} if retrieve_s else {}
    answers = None
    if generator is not None:
        answers = answer_metrics(questions, predictions, abstained)
        latency["answer_s"] = latency_percentiles(answer_s)
        if first_token_s:
            latency["first_token_s"] = latency_percentiles(first_token_s)
        if tokens_per_s:
            latency["tokens_per_s"] = latency_percentiles(tokens_per_s)
    return EvalReport(retrieval, answers, latency, rows)
