"""The abstention policy: the pure `decide` over named signals, thresholds keyed on the
model preset, and `answer()` applying them over a real index (the sample PDF, real MiniLM,
FAISS and BM25) with a scripted generator of our own whose replies and log-probabilities
the test chooses (tests/scripted.py; the real models are tested in test_qa.py)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from scripted import ScriptedGenerator

from ragchat.answer.abstention import (
    ABSTAIN,
    DEFAULT_THRESHOLDS,
    PRESET_THRESHOLDS,
    RULES,
    Thresholds,
    answer_coverage,
    decide,
    latin_share,
    thresholds_for,
)
from ragchat.answer.prompts import copied_example, example_texts
from ragchat.answer.qa import AnswerPolicy, answer, policy_for
from ragchat.config import load_settings
from ragchat.ingest.pipeline import ingest
from ragchat.records import Passage
from ragchat.retrieval.retriever import open_retriever
from ragchat.weights import PRESETS, packaged_files, preset_for

BARS = Thresholds(
    min_coverage=0.0,
    max_unknown_names=0.2,
    no_answer=-1.0,
    verify=-0.5,
    min_sentence_top=0.42,
    min_passage_coverage=0.6,
    min_dense_top=0.3,
    min_script_passage_coverage=0.5,
    min_answer_coverage=0.1,
)


@pytest.mark.parametrize(
    ("signals", "rule"),
    [
        ({"passages": 0}, "no_passages"),
        ({"passages": 3, "coverage": 0.0}, "coverage"),
        ({"passages": 3, "coverage": 0.4}, "answered"),  # before the model: nothing decides
        # a name the index holds nowhere carries a fifth of the question or more
        ({"passages": 3, "coverage": 0.4, "unknown_names": 0.2}, "unknown_names"),
        ({"passages": 3, "coverage": 0.4, "unknown_names": 0.16}, "answered"),
        # over prose: no sentence close to the question, and little of it in any passage
        ({"coverage": 0.2, "sentence_top": 0.35, "passage_coverage": 0.5}, "off_topic"),
        # far by cosine but naming what the question names: not off-topic
        ({"coverage": 0.6, "sentence_top": 0.35, "passage_coverage": 0.8}, "answered"),
        ({"coverage": 0.2, "sentence_top": 0.45, "passage_coverage": 0.3}, "answered"),
        # the whole chunk's cosine is a script's evidence, not prose's
        (
            {"coverage": 0.2, "dense_top": 0.25, "sentence_top": 0.5, "passage_coverage": 0.3},
            "answered",
        ),
        # a script's lines are far from a question put in a plot summary's words: its bars
        # are lower
        ({"coverage": 0.2, "dense_top": 0.25, "passage_coverage": 0.3, "script": 1.0}, "off_topic"),
        (
            {"dense_top": 0.35, "sentence_top": 0.3, "passage_coverage": 0.4, "script": 1.0},
            "answered",
        ),
        ({"coverage": 0.4, "model_abstained": 1.0, "no_answer": -9.0}, "model"),
        ({"coverage": 0.4, "model_abstained": 0.0, "verify": -0.6, "no_answer": -9.0}, "verify"),
        # a yes/no question: neither verdict borne out, or one of them
        ({"coverage": 0.4, "yes_no": 1.0, "verify_yes": -0.7, "verify_no": -0.6}, "verify"),
        ({"coverage": 0.4, "yes_no": 1.0, "verify_yes": -0.7, "verify_no": 0.4}, "answered"),
        (
            {"coverage": 0.4, "model_abstained": 0.0, "copied_example": 1.0, "verify": 2.0},
            "example",
        ),
        ({"coverage": 0.4, "model_abstained": 0.0, "verify": 2.0, "no_answer": -0.5}, "no_answer"),
        ({"coverage": 0.4, "model_abstained": 0.0, "verify": 2.0, "no_answer": -1.5}, "answered"),
        # an answer read from no sentence about the question
        (
            {"coverage": 0.4, "verify": 2.0, "answer_coverage": 0.0, "no_answer": -9.0},
            "answer_coverage",
        ),
        ({"coverage": 0.4, "verify": 2.0, "answer_coverage": 0.3, "no_answer": -9.0}, "answered"),
        # ... but a script's answer in the reader's words, or a Japanese one, is not a span
        ({"coverage": 0.4, "answer_coverage": 0.0, "script": 1.0, "no_answer": -9.0}, "answered"),
        ({"coverage": 0.4, "answer_coverage": 0.0, "latin": 0.2, "no_answer": -9.0}, "answered"),
    ],
)
def test_decide_applies_the_rules_in_order(signals: dict[str, float], rule: str) -> None:
    verdict = decide(signals, BARS)
    assert verdict.rule == rule
    assert verdict.abstain == (rule != "answered")
    assert rule == "answered" or rule in RULES


def test_answer_coverage_reads_the_sentence_the_answer_comes_from() -> None:
    def passage(text: str) -> Passage:
        return Passage(1, "gull-point.pdf", "gull-point.pdf", 3, 3, 1.0, text)

    text = "The tower is open on summer weekends. The climb to the gallery is 112 steps."
    flat = {"passages": [passage(text)], "idf": lambda term: 1.0}
    assert answer_coverage("When is the tower open?", "summer weekends", **flat) == 1.0
    # An answer that repeats the question's words is held to the others: "112 steps" gets
    # nothing for "steps", and the sentence has neither "top" nor "many". Counting the
    # repeated words (stop 31) answered 3 more of the acceptance slice's 30 SQuAD 2.0
    # unanswerables ("antimicrobial peptides called defensins"): not adopted.
    asked = "How many steps to the top?"
    assert answer_coverage(asked, "112", **flat) == pytest.approx(1 / 3)
    assert answer_coverage(asked, "112 steps", **flat) == 0.0
    # No sentence holds the answer: it was not read there.
    assert answer_coverage("How many steps to the top?", "120 steps", **flat) == 0.0


def test_a_rule_that_is_off_never_fires() -> None:
    signals = {"coverage": 0.0, "no_answer": 5.0, "verify": -5.0, "model_abstained": 0.0}
    assert decide(signals, Thresholds(None, None, None)).rule == "answered"
    nan = float("nan")  # what the setting value "off" becomes
    assert decide(signals, Thresholds(nan, nan, nan)).rule == "answered"


def test_the_cosine_bars_are_the_embedders() -> None:
    from ragchat.answer.abstention import EMBEDDER_BARS, for_embedder

    minilm = for_embedder(DEFAULT_THRESHOLDS, "minilm")
    assert minilm.min_sentence_top == EMBEDDER_BARS["minilm"]["min_sentence_top"]
    assert minilm.min_dense_top == EMBEDDER_BARS["minilm"]["min_dense_top"]
    other = for_embedder(DEFAULT_THRESHOLDS, "lm:/some/model")
    assert other.min_sentence_top is None and other.min_dense_top is None
    given = for_embedder(Thresholds(min_sentence_top=0.1), "minilm")
    assert given.min_sentence_top == 0.1
    assert given.min_dense_top == EMBEDDER_BARS["minilm"]["min_dense_top"]


def test_thresholds_are_keyed_on_the_preset_and_settings_override_them() -> None:
    assert thresholds_for("qwen1.5b") == PRESET_THRESHOLDS["qwen1.5b"]
    assert thresholds_for("qwen1.5b").no_answer != thresholds_for("qwen0.5b").no_answer
    assert thresholds_for(None) == DEFAULT_THRESHOLDS
    assert thresholds_for("/some/folder") == DEFAULT_THRESHOLDS
    assert thresholds_for("qwen1.5b", no_answer=-3.0).no_answer == -3.0
    settings = load_settings(
        env={"RAGCHAT_NO_ANSWER_THRESHOLD": "off", "RAGCHAT_FOCUS_SENTENCES": "0"}
    )
    policy = policy_for(settings, ScriptedGenerator("x", preset="qwen1.5b"))
    assert math.isnan(policy.thresholds.no_answer or 0.0)
    assert policy.focus_sentences == 0
    assert policy.thresholds.min_coverage == PRESET_THRESHOLDS["qwen1.5b"].min_coverage


def test_a_gguf_path_gets_its_presets_thresholds(tmp_path: Path) -> None:
    settings = load_settings({"cache_dir": tmp_path})
    shipped = packaged_files(PRESETS["smollm2"])[0]  # SmolLM2's GGUF, inside its package
    assert preset_for(str(shipped), settings) == "smollm2"
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(shipped, copy)
    assert preset_for(str(copy), settings) == "smollm2"  # by size and sha256, not by name
    with open(copy, "r+b") as fh:  # same size, other bytes: not the preset
        fh.seek(1000)
        fh.write(b"\0\1\2\3")
    assert preset_for(str(copy), load_settings({"cache_dir": tmp_path / "fresh"})) is None
    assert preset_for("qwen1.5b", settings) == "qwen1.5b"
    assert preset_for(str(tmp_path / "missing.gguf"), settings) is None


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    from conftest import SAMPLE_PDF

    index = tmp_path_factory.mktemp("abstention") / "sample"
    settings = load_settings({"index_dir": index.parent, "cache_dir": model_cache})
    assert ingest([SAMPLE_PDF], index, settings).files[0].status == "indexed"
    opened = open_retriever(index, settings)
    yield opened
    opened.close()


def test_off_topic_question_abstains_before_the_model(retriever) -> None:
    generator = ScriptedGenerator("Paris [1]")
    shown: list[str] = []
    result = answer("What is the capital of France?", retriever, generator, on_text=shown.append)
    assert result.abstained and result.decided_by == "coverage"
    assert result.signals["coverage"] == 0.0
    assert generator.prompts == []  # the model never ran
    assert "".join(shown) == ABSTAIN and result.text == ABSTAIN


def test_a_question_no_sentence_is_close_to_abstains_before_the_model(retriever) -> None:
    """Over prose, the off-topic rule reads the closest sentence's cosine: a short question
    far from every whole chunk is kept when a sentence answers it; one about lighthouses in
    general, which the sample never discusses, is refused before the model runs."""
    generator = ScriptedGenerator("18 nautical miles [1]", answer_logprob=-0.1)
    kept = answer("How far away could the light be seen?", retriever, generator)
    assert kept.signals["dense_top"] < 0.40 < kept.signals["sentence_top"]
    assert not kept.abstained and generator.prompts
    # "about" says how it is asked: all of what it asks for, the lens, is in the sample
    lens = answer(
        "Tell me about the lens.", retriever, ScriptedGenerator("It was made in Paris [1].")
    )
    assert lens.signals["passage_coverage"] == 1.0 and not lens.abstained
    unread = ScriptedGenerator("paraffin [1]")
    refused = answer("What fuel do modern lighthouses use?", retriever, unread)
    assert refused.abstained and refused.decided_by == "off_topic"
    assert refused.signals["sentence_top"] < 0.42 and refused.signals["passage_coverage"] < 0.6
    assert unread.prompts == []


def test_an_uncited_lookup_cites_the_passage_it_was_read_from(retriever) -> None:
    generator = ScriptedGenerator("Margaret Alder", answer_logprob=-0.1)
    result = answer("Who built the lighthouse?", retriever, generator, k=3)
    assert not result.abstained
    assert result.text.startswith("Margaret Alder [gull-point.pdf p.")
    cited = result.passages[result.citations[0].number - 1]
    assert "Margaret Alder" in cited.text


def test_a_lookup_cited_to_the_wrong_passage_is_cited_to_the_one_it_was_read_from(
    retriever,
) -> None:
    """Small models often write the wrong [n]: the citation (and the check's evidence)
    becomes the given passage that holds the answer's words."""
    first = answer("Who built the lighthouse?", retriever, ScriptedGenerator("Margaret Alder [1]"))
    wrong = [n for n, p in enumerate(first.passages, 1) if "Margaret Alder" not in p.text]
    assert wrong and len(first.passages) > 1
    generator = ScriptedGenerator(f"Margaret Alder [{wrong[0]}]", answer_logprob=-0.1)
    result = answer("Who built the lighthouse?", retriever, generator)
    (citation,) = result.citations
    assert citation.number != wrong[0]
    assert "Margaret Alder" in result.passages[citation.number - 1].text
    assert result.text == f"Margaret Alder [{citation.doc} p.{citation.page}]"


def test_a_confident_answer_is_kept_with_its_citation(retriever) -> None:
    generator = ScriptedGenerator("Margaret Alder [1]", answer_logprob=-0.1)
    result = answer("Who built the lighthouse?", retriever, generator, k=3)
    assert not result.abstained and result.decided_by == "answered"
    assert result.text.startswith("Margaret Alder [gull-point.pdf p.")
    assert result.citations[0].doc == "gull-point.pdf"
    # no_answer = mean log-prob of ABSTAIN (-3.0 a token) minus the answer's (-0.1)
    assert result.signals["no_answer"] == pytest.approx(-2.9)
    assert result.signals["model_abstained"] == 0.0


def test_the_models_own_abstention_decides(retriever) -> None:
    result = answer("Who built the lighthouse?", retriever, ScriptedGenerator(ABSTAIN))
    assert result.abstained and result.decided_by == "model"
    assert result.text == ABSTAIN and not result.citations


def test_an_answer_copied_from_the_worked_example_is_refused(retriever) -> None:
    # The lookup prompt's demonstration answers "the Royal College of Art"; the sample PDF
    # never says it, so the model read it from the example, not from the documents.
    copied = ScriptedGenerator("the Royal College of Art [1]", answer_logprob=-0.1)
    result = answer("Where did the lighthouse's builder train?", retriever, copied, k=3)
    assert result.signals["copied_example"] == 1.0
    assert result.abstained and result.decided_by == "example" and result.text == ABSTAIN
    honest = ScriptedGenerator("Margaret Alder [1]", answer_logprob=-0.1)
    kept = answer("Who built the lighthouse?", retriever, honest, k=3)
    assert kept.signals["copied_example"] == 0.0 and not kept.abstained


def test_copied_example_needs_the_examples_words_and_no_passage_holding_them() -> None:
    examples = example_texts("lookup", script=True)
    play = ["Christy: I killed my da with a loy."]
    assert copied_example("His brother's boat.", examples, play)  # the example passage's
    assert copied_example("his brother's", examples, play)  # the example answer
    # The documents say it too: an answer that happens to match.
    assert not copied_example("his brother's boat", examples, ["He took his brother's boat."])
    assert not copied_example("his father", examples, play)
    assert not copied_example("he", examples, play)  # too short to tell


def _judge(says: str) -> Callable[[str, str], float]:
    """A scripted yes/no check that bears out the proposed answer `says` only."""

    def scores(prompt: str, verdict: str) -> float:
        proposed = prompt.rsplit("Proposed answer:", 1)[-1].split()[0]
        agrees = verdict.lower() == ("yes" if proposed == says else "no")
        return -0.1 if agrees else -3.0

    return scores


def test_a_yes_no_question_gets_the_checks_verdict_and_the_sentence(retriever) -> None:
    """Nothing is generated: the verdict is the better scored of "Yes" and "No" (qwen1.5b
    bars), the sentence the best ranked one, quoted with its citation."""
    policy = AnswerPolicy(thresholds=PRESET_THRESHOLDS["qwen1.5b"])
    generator = ScriptedGenerator("Yes [1].", scores=_judge("No"))
    shown: list[str] = []
    result = answer(
        "Is the foghorn still in use?", retriever, generator, policy=policy, on_text=shown.append
    )
    assert not result.abstained and result.decided_by == "answered"
    assert result.text.startswith('No — "The foghorn was switched off for good in 1987')
    assert result.text.endswith('" [gull-point.pdf p.3]') and "".join(shown) == result.text
    assert result.signals["verify_no"] > 0.3 > result.signals["verify_yes"]
    assert result.timings.gen_tokens == 0
    (citation,) = result.citations
    assert "switched off for good" in result.passages[citation.number - 1].text
    assert [p.count("Proposed answer:") for p in generator.prompts] == [3, 3]  # 2 examples
    agreed = answer(
        "Was the light first lit in 1871?",
        retriever,
        ScriptedGenerator("", scores=_judge("Yes")),
        policy=policy,
    )
    assert agreed.text.startswith('Yes — "The light was first lit on 14 October 1871."')
    # Neither verdict borne out: the check's bar refuses it.
    unsure = answer("Is the foghorn still in use?", retriever, ScriptedGenerator(""), policy=policy)
    assert unsure.abstained and unsure.decided_by == "verify" and unsure.text == ABSTAIN


def test_a_yes_no_question_without_a_calibrated_check_gets_the_sentence_alone(
    retriever,
) -> None:
    generator = ScriptedGenerator("Yes [1].", preset="qwen0.5b")
    result = answer("Is the foghorn still in use?", retriever, generator)
    assert result.text.startswith('The documents say: "The foghorn was switched off')
    assert generator.prompts == [] and not result.abstained


def test_an_unsure_answer_is_replaced_by_the_no_answer_rule(retriever) -> None:
    unsure = ScriptedGenerator("Tobias Wren [1]", answer_logprob=-2.0, continuation_logprob=-0.2)
    result = answer("Who built the lighthouse?", retriever, unsure, k=3)
    assert result.signals["no_answer"] == pytest.approx(1.8)
    assert result.abstained and result.decided_by == "no_answer"
    assert result.text == ABSTAIN and not result.citations
    off = dataclasses.replace(
        AnswerPolicy(), thresholds=Thresholds(min_coverage=0.0, no_answer=float("nan"))
    )
    kept = answer("Who built the lighthouse?", retriever, unsure, k=3, policy=off)
    assert not kept.abstained and kept.text.startswith("Tobias Wren")


def test_policy_sets_what_the_model_reads(retriever) -> None:
    generator = ScriptedGenerator("Margaret Alder [1]")
    focused = answer("Who built the lighthouse?", retriever, generator, k=5)
    whole = answer(
        "Who built the lighthouse?",
        retriever,
        generator,
        k=5,
        policy=AnswerPolicy(focus_sentences=0, max_prompt_tokens=2000),
    )
    assert whole.timings.prompt_tokens > focused.timings.prompt_tokens
    # Whole passages: the first retrieved chunk's text is in the prompt as it is stored.
    first = " ".join(whole.retrieved[0].text.split())
    assert first in generator.prompts[-1]
    capped = answer(
        "Who built the lighthouse?",
        retriever,
        generator,
        k=5,
        policy=AnswerPolicy(focus_sentences=0, max_prompt_tokens=300),
    )
    assert capped.timings.prompt_tokens <= 300 < whole.timings.prompt_tokens


def test_a_lookup_is_shown_only_once_decided(retriever) -> None:
    """No guess is streamed and then withdrawn: a lookup's text reaches the console after
    the verdict, the answer or the abstention, never both."""
    unsure = ScriptedGenerator("Tobias Wren [1]", answer_logprob=-2.0, continuation_logprob=-0.2)
    shown: list[str] = []
    result = answer("Who built the lighthouse?", retriever, unsure, k=3, on_text=shown.append)
    assert result.decided_by == "no_answer"
    assert shown == [ABSTAIN]
    sure = ScriptedGenerator("Margaret Alder [1]")
    shown.clear()
    result = answer("Who built the lighthouse?", retriever, sure, k=3, on_text=shown.append)
    assert shown == [result.text] and "Alder" in result.text


def test_an_explanation_gets_cited_sentences_streamed(retriever) -> None:
    reply = (
        "Margaret Alder built the lighthouse in 1871 [1]. Its light could be seen far out "
        "at sea [2]. A fog signal was added later [1]. It was automated in 1962 [2]. "
        "A fifth sentence that the answer does not keep [1]."
    )
    generator = ScriptedGenerator(reply, answer_logprob=-3.0, continuation_logprob=-0.1)
    shown: list[str] = []
    result = answer(
        "Describe the history of the lighthouse.", retriever, generator, on_text=shown.append
    )
    assert len(shown) > 1  # streamed piece by piece
    assert result.signals["explain"] == 1.0
    # The no-answer score is for short spans: this unsure-looking explanation stands.
    assert result.signals["no_answer"] > 0 and not result.abstained
    assert result.text.count("[gull-point.pdf p.") == 4  # each sentence cited
    assert "fifth" not in result.text
    assert "fifth" not in "".join(shown)  # neither shown nor generated past the fourth
    assert result.timings.gen_tokens < generator.count_tokens(reply)
    assert "1–4 sentences" not in generator.prompts[-1]  # the explain instruction is used
    assert "one to four sentences" in generator.prompts[-1]


def test_retrieval_evidence_separates_the_documents_topic_from_another(retriever) -> None:
    """The retrieval-level signals behind the off-topic rule, on the real index."""
    from ragchat.answer.abstention import coverage_signals

    idf = retriever.store.lexical_index().idf
    on, on_evidence = retriever.search_with_evidence("Who built the lighthouse?", 5)
    off, off_evidence = retriever.search_with_evidence("What is the capital of France?", 5)
    assert on_evidence["dense_top"] > off_evidence["dense_top"]
    assert 0.0 <= off_evidence["agreement"] <= 1.0
    on_cov = coverage_signals("Who built the lighthouse?", on, idf)
    off_cov = coverage_signals("What is the capital of France?", off, idf)
    assert on_cov["passage_coverage"] >= on_cov["coverage"] > 0.0
    assert off_cov == {"coverage": 0.0, "passage_coverage": 0.0, "unknown_names": 0.0}
    lexical = retriever.store.lexical_index()
    named = "When did Audra McDonald visit the lighthouse?"
    unknown = lexical.unknown_names(named)
    assert unknown == {"audra", "mcdonald"}
    share = coverage_signals(named, on, idf, unknown=unknown)["unknown_names"]
    assert 0.5 < share < 1.0  # "lighthouse" and "visit" are the rest of the question
    assert [p.chunk_id for p in on] == [
        p.chunk_id for p in retriever.search("Who built the lighthouse?", 5)
    ]


def test_latin_share_tells_japanese_from_english() -> None:
    assert latin_share("Who built the lighthouse?") == 1.0
    assert latin_share("灯台を建てたのは誰ですか？") == 0.0
    assert latin_share("1871") == 1.0
    assert 0.0 < latin_share("RADIOの番組は何ですか") < 0.5


def test_model_score_bars_skip_questions_they_were_not_calibrated_on() -> None:
    bars = Thresholds(no_answer=-1.0)
    leaning = {"coverage": 0.5, "model_abstained": 0.0, "no_answer": 0.5}
    assert decide(leaning, bars).rule == "no_answer"
    assert decide({**leaning, "latin": 0.0}, bars).rule == "answered"
    assert decide({**leaning, "script": 1.0}, bars).rule == "answered"
    assert decide({**leaning, "explain": 1.0}, bars).rule == "answered"
