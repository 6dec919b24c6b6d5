"""Scoring retrieval and answers against gold questions. Pure (numpy only for percentiles).

Answer metrics follow the official SQuAD v1.1 evaluation script (normalise: lowercase,
drop ASCII punctuation, drop the articles a/an/the, collapse whitespace; EM and token F1
take the max over the gold answers).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragchat.answer.abstention import normalize_answer
from ragchat.records import Passage


@dataclass(frozen=True)
class Question:
    """A gold question: its answers (empty when unanswerable), the gold document (file
    name), the 1-based page holding the answer and the first/last page of its passage."""

    id: str
    question: str
    answers: tuple[str, ...]
    doc: str
    page: int
    pages: tuple[int, int]
    gold_passage: str = ""
    title: str = ""
    para_index: int = -1
    answerable: bool = True
    # Asked over an index that holds nothing about it: the right answer is to abstain.
    off_topic: bool = False

    @property
    def has_gold_page(self) -> bool:
        """Whether retrieval can be scored (NarrativeQA questions have no gold page)."""
        return self.answerable and not self.off_topic and self.page > 0


def load_questions(path: Path, *, off_topic: bool = False) -> list[Question]:
    """Read a questions.jsonl file (the qa-public format; `page`/`pages` may be missing, as
    in plays-public), one Question per non-blank line. `off_topic` marks every question as
    one the index cannot answer (so does a row's own "off_topic": true)."""
    questions: list[Question] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                page = int(row.get("page") or 0)
                pages = [int(p) for p in row.get("pages") or [page]]
                answers = tuple(str(a) for a in row.get("answers") or ())
                questions.append(
                    Question(
                        id=str(row["id"]),
                        question=str(row["question"]),
                        answers=answers,
                        doc=str(row["doc"]),
                        page=page,
                        pages=(min(pages), max(pages)),
                        gold_passage=str(row.get("gold_passage", "")),
                        title=str(row.get("title", "")),
                        para_index=int(row.get("para_index", -1)),
                        answerable=bool(row.get("answerable", bool(answers))),
                        off_topic=off_topic or bool(row.get("off_topic", False)),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: not a question record ({exc})") from exc
    return questions


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer. With no gold
    answers (unanswerable), 1.0 for an empty prediction, as SQuAD 2.0 scores it."""
    if not answers:
        return float(normalize_answer(prediction) == "")
    target = normalize_answer(prediction)
    return float(any(target == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token F1 in [0, 1], max over gold answers (empty-answer rule as exact_match)."""
    if not answers:
        return float(normalize_answer(prediction) == "")
    return max(_f1(prediction, a) for a in answers)


# Scripts written without spaces between words: there, any substring may be a word.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f\u0e00-\u0e7f]")


def _contains_words(haystack: str, needle: str) -> bool:
    """Whether normalised `needle` occurs in normalised `haystack` on word boundaries (for
    Japanese, Chinese or Thai text, anywhere: those scripts put no spaces between words)."""
    if not needle:
        return False
    if _UNSPACED.search(needle):
        return needle in haystack
    return f" {needle} " in f" {haystack} "


def contains(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when some normalised gold answer occurs, as whole words, in the normalised
    prediction (a lenient score for verbose answers); 0.0 with no gold answers."""
    text = normalize_answer(prediction)
    return float(any(_contains_words(text, normalize_answer(a)) for a in answers))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, answers: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L as NarrativeQA scores free-form answers: the LCS F-measure of the normalised
    tokens (recall weighted by beta = 1.2), max over the references; 0.0 without any."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        lcs = _lcs(pred, gold) if pred and gold else 0
        if lcs == 0:
            continue
        precision, recall = lcs / len(pred), lcs / len(gold)
        score = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
        best = max(best, score)
    return best


# Removed before a character F1: whitespace and punctuation, ASCII and CJK.
_NOT_CHARS = re.compile(
    r"[\s!-/:-@\[-`{-~、。，．・「」『』（）【】〈〉《》〔〕？！：；＝～―…‥＂＇]"
)


def char_f1(prediction: str, answers: Sequence[str]) -> float:
    """Character F1 as JGLUE scores JSQuAD: the answer's characters without whitespace or
    punctuation, as a bag, F1 against each reference, max over them."""
    pred = Counter(_NOT_CHARS.sub("", prediction.lower()))
    best = 0.0
    for answer in answers:
        gold = Counter(_NOT_CHARS.sub("", answer.lower()))
        same = sum((pred & gold).values())
        if same:
            p, r = same / sum(pred.values()), same / sum(gold.values())
            best = max(best, 2 * p * r / (p + r))
    return best


def passage_hit(question: Question, doc: str, page: int, page_end: int, text: str) -> bool:
    """Whether a retrieved passage counts as finding the answer: same document (by file
    name), its pages [page, page_end] within one page of the gold pages, and a normalised
    gold answer in its normalised text as whole words. For a question without answers the
    document and pages decide."""
    if Path(doc).name != Path(question.doc).name:
        return False
    first, last = question.pages
    if page_end < first - 1 or page > last + 1:
        return False
    if not question.answers:
        return True
    normalized = normalize_answer(text)
    return any(_contains_words(normalized, normalize_answer(a)) for a in question.answers)


def first_hit_rank(question: Question, passages: Sequence[Passage]) -> int | None:
    """1-based rank of the first passage that passage_hit accepts, None if there is none."""
    for rank, p in enumerate(passages, start=1):
        if passage_hit(question, p.doc, p.page, p.page_end, p.text):
            return rank
    return None


def retrieval_metrics(
    questions: Sequence[Question], results_per_question: Sequence[Sequence[Passage]]
) -> dict[str, float]:
    """hit@1, hit@5 and MRR (reciprocal rank of the first hit in the whole returned list,
    0 without one) averaged over questions, plus n. Results align with questions."""
    if len(questions) != len(results_per_question):
        raise ValueError(f"{len(questions)} questions but {len(results_per_question)} results")
    ranks = [first_hit_rank(q, r) for q, r in zip(questions, results_per_question, strict=True)]
    n = len(ranks)
    if n == 0:
        return {"hit@1": 0.0, "hit@5": 0.0, "mrr": 0.0, "n": 0}
    return {
        "hit@1": sum(r is not None and r <= 1 for r in ranks) / n,
        "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr": sum(1.0 / r for r in ranks if r is not None) / n,
        "n": n,
    }


def answer_metrics(
    questions: Sequence[Question], predictions: Sequence[str], abstained: Sequence[bool]
) -> dict[str, float | None]:
    """Aggregate answer quality. Over answerable questions: mean EM, F1 and contains (an
    abstention scores as the empty answer), ROUGE-L (free-form references), character F1
    (Japanese), the share answered, and n_answerable. Over all answers given: mean_words.
    Over unanswerable questions: the share abstained (abstain_unanswerable, None without
    such questions); the same over off-topic ones (abstain_off_topic)."""
    if not len(questions) == len(predictions) == len(abstained):
        raise ValueError("questions, predictions and abstained must have the same length")
    answerable = [
        (q, "" if a else p)
        for q, p, a in zip(questions, predictions, abstained, strict=True)
        if q.answerable and not q.off_topic
    ]
    answered_flags = [
        not a for q, a in zip(questions, abstained, strict=True) if q.answerable and not q.off_topic
    ]
    unanswerable = [
        a for q, a in zip(questions, abstained, strict=True) if not q.answerable and not q.off_topic
    ]
    off_topic = [a for q, a in zip(questions, abstained, strict=True) if q.off_topic]
    given = [p for p, a in zip(predictions, abstained, strict=True) if not a]

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "em": mean([exact_match(p, q.answers) for q, p in answerable]),
        "f1": mean([token_f1(p, q.answers) for q, p in answerable]),
        "contains": mean([contains(p, q.answers) for q, p in answerable]),
        "rouge_l": mean([rouge_l(p, q.answers) for q, p in answerable]),
        "char_f1": mean([char_f1(p, q.answers) for q, p in answerable]),
        "answered": mean([float(f) for f in answered_flags]),
        "mean_words": mean([float(len(p.split())) for p in given]),
        "abstain_unanswerable": mean([float(a) for a in unanswerable]),
        "abstain_off_topic": mean([float(a) for a in off_topic]),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "n_off_topic": len(off_topic),
    }


def latency_percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of `seconds` (linear interpolation, as numpy.percentile), plus n."""
    import numpy as np

    if len(seconds) == 0:
        raise ValueError("no latencies to summarise")
    values = np.asarray(seconds, dtype=np.float64)
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "mean": float(values.mean()),
        "n": len(values),
    }
