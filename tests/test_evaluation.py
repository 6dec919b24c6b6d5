"""Answer and retrieval metrics (values checked against the official SQuAD v1.1 script) and
rank fusion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ragchat.answer.abstention import normalize_answer
from ragchat.eval.metrics import (
    Question,
    answer_metrics,
    char_f1,
    contains,
    exact_match,
    first_hit_rank,
    latency_percentiles,
    load_questions,
    passage_hit,
    retrieval_metrics,
    rouge_l,
    token_f1,
)
from ragchat.records import Passage
from ragchat.retrieval.fusion import fuse

QA_PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "bench" / "qa-public"


def make_question(answers: tuple[str, ...] = ("Denver Broncos",), pages=(3, 3)) -> Question:
    return Question(
        id="q1",
        question="Which team won Super Bowl 50?",
        answers=answers,
        doc="Super_Bowl_50.pdf",
        page=pages[0],
        pages=pages,
        answerable=bool(answers),
    )


def passage(chunk_id: int, text: str, doc: str = "Super_Bowl_50.pdf", page: int = 3) -> Passage:
    return Passage(chunk_id, doc, f"/docs/{doc}", page, page, 1.0, text)


# ------------------------------------------------------------------ SQuAD normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an   apple a day ", "apple day"),
        ("theory of the atom", "theory of atom"),  # articles only as whole words
        ("A.D. 1066", "ad 1066"),  # punctuation goes first, so "A." is not an article
        ("1976–77 season", "1976–77 season"),  # the en dash is not ASCII punctuation
        ("rock 'n' roll", "rock n roll"),
        ("", ""),
    ],
)
def test_normalize_answer_matches_squad_v11(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_takes_the_best_gold_answer() -> None:
    assert exact_match("the Denver Broncos.", ["Broncos", "Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Broncos", "Denver Broncos"]) == 0.0


def test_token_f1_known_values() -> None:
    # pred {cat, sat}, gold {cat, sat, on, mat}: precision 1, recall 0.5
    assert token_f1("the cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
    # max over answers
    assert token_f1("Denver Broncos", ["Carolina Panthers", "Broncos"]) == pytest.approx(2 / 3)
    assert token_f1("nothing in common", ["Broncos"]) == 0.0
    # repeated tokens count with multiplicity (Counter intersection)
    assert token_f1("red red blue", ["red blue blue"]) == pytest.approx(2 / 3)


def test_unanswerable_scores_the_empty_answer_as_right() -> None:
    assert exact_match("", []) == 1.0
    assert token_f1("The", []) == 1.0  # normalises to empty
    assert exact_match("Paris", []) == 0.0
    assert contains("Paris", []) == 0.0


def test_contains_is_lenient_but_word_bounded() -> None:
    assert contains("It was the Denver Broncos, in 2016.", ["Denver Broncos"]) == 1.0
    assert contains("TLCs everywhere", ["TLC"]) == 0.0


# ------------------------------------------------------------------ passage_hit


def test_passage_hit_on_gold_page_with_answer() -> None:
    q = make_question()
    assert passage_hit(q, "Super_Bowl_50.pdf", 3, 3, "...won by the DENVER broncos, 24–10.")


def test_passage_hit_tolerates_one_page_either_side() -> None:
    q = make_question()
    text = "the Denver Broncos won"
    assert passage_hit(q, "Super_Bowl_50.pdf", 2, 2, text)
    assert passage_hit(q, "Super_Bowl_50.pdf", 4, 5, text)
    assert not passage_hit(q, "Super_Bowl_50.pdf", 1, 1, text)
    assert not passage_hit(q, "Super_Bowl_50.pdf", 5, 6, text)


def test_passage_hit_spanning_pages_counts_overlap() -> None:
    q = make_question(pages=(7, 8))
    assert passage_hit(q, "Super_Bowl_50.pdf", 8, 9, "Denver Broncos")
    assert passage_hit(q, "Super_Bowl_50.pdf", 1, 6, "Denver Broncos")
    assert not passage_hit(q, "Super_Bowl_50.pdf", 10, 12, "Denver Broncos")


def test_passage_hit_needs_the_right_document() -> None:
    q = make_question()
    assert not passage_hit(q, "Other.pdf", 3, 3, "the Denver Broncos won")
    # a recorded path still matches by file name
    assert passage_hit(q, "/home/me/pdfs/Super_Bowl_50.pdf", 3, 3, "Denver Broncos")


def test_passage_hit_needs_the_whole_answer() -> None:
    q = make_question()
    # the answer split across two chunks: neither holds it
    assert not passage_hit(q, "Super_Bowl_50.pdf", 3, 3, "The game was won by the Denver")
    assert not passage_hit(q, "Super_Bowl_50.pdf", 3, 3, "Broncos, who beat Carolina")
    # a line break inside the answer is only whitespace
    assert passage_hit(q, "Super_Bowl_50.pdf", 3, 3, "won by the Denver\nBroncos")


def test_passage_hit_without_answers_uses_document_and_pages() -> None:
    q = make_question(answers=())
    assert passage_hit(q, "Super_Bowl_50.pdf", 3, 3, "anything")
    assert not passage_hit(q, "Super_Bowl_50.pdf", 9, 9, "anything")


# ------------------------------------------------------------------ aggregation


def test_retrieval_metrics_hits_and_mrr() -> None:
    q = make_question()
    hit = passage(1, "the Denver Broncos won")
    miss = passage(2, "the Carolina Panthers lost")
    results = [
        [hit, miss],  # rank 1
        [miss, miss, hit],  # rank 3
        [miss] * 5 + [hit],  # rank 6: not in the top 5, still counts for MRR
        [miss],  # none
    ]
    assert first_hit_rank(q, results[1]) == 3
    m = retrieval_metrics([q] * 4, results)
    assert m["n"] == 4
    assert m["hit@1"] == pytest.approx(0.25)
    assert m["hit@5"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 0) / 4)


def test_retrieval_metrics_rejects_misaligned_input() -> None:
    with pytest.raises(ValueError, match="questions"):
        retrieval_metrics([make_question()], [])


def test_answer_metrics_aggregates() -> None:
    answerable = make_question()
    unanswerable = make_question(answers=())
    m = answer_metrics(
        [answerable, answerable, answerable, unanswerable, unanswerable],
        ["Denver Broncos", "It was the Denver Broncos", "I don't know", "Paris", ""],
        [False, False, True, False, True],
    )
    assert m["n_answerable"] == 3 and m["n_unanswerable"] == 2
    assert m["em"] == pytest.approx(1 / 3)
    assert m["contains"] == pytest.approx(2 / 3)
    # "it was denver broncos" vs "denver broncos": precision 1/2, recall 1, F1 2/3
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["answered"] == pytest.approx(2 / 3)
    assert m["abstain_unanswerable"] == pytest.approx(0.5)
    # words of the answers actually given: 2, 5, 1 ("Paris")
    assert m["mean_words"] == pytest.approx(8 / 3)


def test_answer_metrics_without_unanswerable_questions() -> None:
    m = answer_metrics([make_question()], ["Denver Broncos"], [False])
    assert m["abstain_unanswerable"] is None
    assert m["em"] == 1.0


def test_rouge_l_is_the_lcs_f_measure_narrativeqa_uses() -> None:
    refs = ["He drove a loy into his head", "Driving a loy into his head. "]
    assert rouge_l("He drove a loy into his head", refs) == pytest.approx(1.0)
    # "hit his head with a loy" vs ref 1: LCS "his head" = 2; P 2/6 (normalised: hit his
    # head with loy = 5 tokens -> 2/5), R 2/6 (he drove loy into his head)
    p, r = 2 / 5, 2 / 6
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    assert rouge_l("hit his head with a loy", refs[:1]) == pytest.approx(expected)
    assert rouge_l("", refs) == 0.0 and rouge_l("the widow", ["his father"]) == 0.0


def test_char_f1_scores_japanese_answers_by_character() -> None:
    assert char_f1("アールケービーラジオ", ["アールケービーラジオ"]) == 1.0
    assert char_f1("「アールケービーラジオ」。", ["アールケービーラジオ"]) == 1.0  # punctuation out
    # 5時 vs 5:00: one shared character, precision 1/2, recall 1/3
    assert char_f1("5時", ["5:00"]) == pytest.approx(0.4)
    assert char_f1("東京", ["大阪"]) == 0.0


def test_contains_finds_japanese_answers_without_spaces() -> None:
    assert contains("放送開始は5時からで、RKBラジオは", ["RKBラジオ"]) == 1.0
    assert contains("It was the Broncos", ["Bronco"]) == 0.0  # English keeps word boundaries


def test_off_topic_questions_are_scored_by_abstention_alone() -> None:
    on = make_question()
    off = dataclasses.replace(make_question(), off_topic=True)
    m = answer_metrics([on, off, off], ["Denver Broncos", "Paris", ""], [False, False, True])
    assert m["n_answerable"] == 1 and m["n_off_topic"] == 2 and m["n_unanswerable"] == 0
    assert m["abstain_off_topic"] == pytest.approx(0.5)
    assert m["f1"] == 1.0 and m["answered"] == 1.0


def test_latency_percentiles() -> None:
    stats = latency_percentiles([0.1 * i for i in range(1, 101)])
    assert stats["p50"] == pytest.approx(5.05)
    assert stats["p95"] == pytest.approx(9.505)
    assert stats["n"] == 100
    with pytest.raises(ValueError):
        latency_percentiles([])


# ------------------------------------------------------------------ loading


def test_load_questions_from_a_file(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "Q?", "answers": ["x"], "doc": "D.pdf", "page": 4,
         "pages": [4, 5], "gold_passage": "x y", "title": "D", "para_index": 2},
        {"id": "b", "question": "Q2?", "answers": [], "answerable": False, "doc": "D.pdf",
         "page": 1, "pages": [1]},
    ]  # fmt: skip
    file = tmp_path / "questions.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    first, second = load_questions(file)
    assert first == Question("a", "Q?", ("x",), "D.pdf", 4, (4, 5), "x y", "D", 2, True)
    assert second.pages == (1, 1) and not second.answerable and second.answers == ()
    assert first.has_gold_page and not first.off_topic
    # plays-public rows have no page (NarrativeQA): answers are scored, retrieval is not
    play = tmp_path / "play.jsonl"
    play.write_text(json.dumps({"id": "p", "question": "Who?", "answers": ["His father"],
                                "doc": "play.pdf"}) + "\n", encoding="utf-8")  # fmt: skip
    (loaded,) = load_questions(play, off_topic=True)
    assert loaded.page == 0 and loaded.off_topic and not loaded.has_gold_page


def test_load_questions_reports_bad_lines(tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_questions(file)


@pytest.mark.skipif(not QA_PUBLIC.is_dir(), reason="../shared/bench/qa-public is not here")
def test_load_the_public_bench() -> None:
    questions = load_questions(QA_PUBLIC / "questions.jsonl")
    unanswerable = load_questions(QA_PUBLIC / "questions_unanswerable.jsonl")
    assert len(questions) == 200 and all(q.answerable and q.answers for q in questions)
    assert len(unanswerable) == 65 and not any(q.answerable for q in unanswerable)
    assert all(q.pages[0] <= q.page <= q.pages[1] for q in questions)


# ------------------------------------------------------------------ fusion


def test_fusion_first_for_both_wins() -> None:
    rankings = {
        "dense": [(1, 0.9), (2, 0.8), (3, 0.1)],
        "bm25": [(1, 12.0), (3, 11.0), (4, 2.0)],
    }
    for method in ("rrf", "score"):
        fused = fuse(rankings, method=method)
        assert fused[0][0] == 1
        assert {c for c, _ in fused} == {1, 2, 3, 4}
        scores = [s for _, s in fused]
        assert scores == sorted(scores, reverse=True)


def test_fusion_weights_shift_the_order() -> None:
    rankings = {"dense": [(1, 0.9), (2, 0.5)], "bm25": [(2, 9.0), (1, 1.0)]}
    for method in ("rrf", "score"):
        assert fuse(rankings, weights={"dense": 2.0, "bm25": 1.0}, method=method)[0][0] == 1
        assert fuse(rankings, weights={"dense": 1.0, "bm25": 2.0}, method=method)[0][0] == 2


def test_rrf_values_and_limit() -> None:
    fused = fuse({"a": [(5, 0.0), (6, 0.0)], "b": [(6, 0.0)]}, k=60, limit=1, method="rrf")
    assert fused == [(6, pytest.approx(1 / 62 + 1 / 61))]


def test_score_fusion_uses_how_far_ahead_a_result_is() -> None:
    # bm25's first result is far ahead; dense barely prefers 2. RRF calls it a tie and
    # falls back to rank/id, score fusion follows bm25's margin.
    rankings = {"dense": [(2, 0.61), (1, 0.60), (3, 0.10)], "bm25": [(1, 30.0), (2, 3.0), (3, 2.0)]}
    assert fuse(rankings, method="score")[0][0] == 1


def test_fusion_edge_cases() -> None:
    assert fuse({}) == []
    assert fuse({"dense": [], "bm25": []}) == []
    # duplicates count once, at their first place; equal scores all normalise to 1
    assert fuse({"x": [(1, 2.0), (1, 1.0), (2, 1.0)]}, method="score")[0] == (1, 1.0)
    assert fuse({"x": [(1, 0.5), (2, 0.5)]}, method="score") == [(1, 1.0), (2, 1.0)]
    # the default weights: dense 0.3, bm25 0.7
    assert fuse({"dense": [(1, 0.9)], "bm25": [(2, 5.0)]}) == [(2, 0.7), (1, pytest.approx(0.3))]
    with pytest.raises(ValueError, match="fusion method"):
        fuse({"dense": [(1, 1.0)]}, method="magic")
