"""Whether an answer is grounded: the no-answer score that decides abstention, from the
model's own log-probabilities (SQuAD 2.0 style: how readily would it have said "The
documents don't say." compared with how sure it was of its answer) and the answer's lexical
support in the passages. Pure: works on numbers and strings only."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ragchat.evaluation import normalize_answer


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    return statistics.fmean(values) if values else 0.0


def lexical_support(answer: str, passages: Sequence[str]) -> float:
    """Fraction of the answer's normalised words found in the passages (1.0 for an answer
    copied from them, low for one the model made up; 0.0 for an empty answer)."""
    words = normalize_answer(answer).split()
    if not words:
        return 0.0
    vocabulary = set(normalize_answer(" ".join(passages)).split())
    return sum(w in vocabulary for w in words) / len(words)


def answer_signals(
    answer: str,
    passages: Sequence[str],
    answer_logprobs: Sequence[float],
    abstain_logprobs: Sequence[float],
) -> dict[str, float]:
    """The figures the abstention decision and its calibration use (all floats):
    mean/first log-probabilities of the greedy answer's tokens and of the ABSTAIN sentence,
    the answer's lexical support, and `no_answer` = mean log-prob of ABSTAIN minus that of
    the answer (higher: the model leans towards "the documents don't say")."""
    answer_mean = mean(answer_logprobs)
    abstain_mean = mean(abstain_logprobs)
    return {
        "answer_lp_mean": round(answer_mean, 4),
        "answer_lp_min": round(min(answer_logprobs, default=0.0), 4),
        "answer_lp_first": round(answer_logprobs[0] if answer_logprobs else 0.0, 4),
        "abstain_lp_mean": round(abstain_mean, 4),
        "abstain_lp_head": round(sum(abstain_logprobs[:2]), 4),
        "support": round(lexical_support(answer, passages), 4),
        "no_answer": round(abstain_mean - answer_mean, 4),
    }


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(v))), stable; -inf for no values."""
    if not values:
        return float("-inf")
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def verify_margin(yes_logprobs: Sequence[float], no_logprobs: Sequence[float]) -> float:
    """log P(yes) - log P(no) of a verification verdict, each summed over its spellings
    (positive: the model says the passage states the answer)."""
    return round(logsumexp(yes_logprobs) - logsumexp(no_logprobs), 4)
