"""Prompt formats, budget filling, citation rendering and abstention detection (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinymodels import MISTRAL_TEMPLATE, PHI3_TEMPLATE

from ragchat.answer.abstention import ABSTAIN, is_abstention
from ragchat.answer.citations import page_label, render_citations
from ragchat.answer.followup import clean_condensed, condense_question
from ragchat.answer.prompts import (
    FEW_SHOT,
    VERIFY_EXAMPLES,
    Turn,
    build_rag_prompt,
    clean_answer,
    format_passage,
    verify_prompt,
)
from ragchat.generation.formats import (
    ChatTemplateFormat,
    InstructFormat,
    Message,
    fold_system,
    prompt_format_for,
)
from ragchat.records import Passage


def words(text: str) -> int:
    """A stand-in token counter: one token per whitespace-separated word."""
    return len(text.split())


def passage(i: int, text: str, page: int = 1, page_end: int | None = None) -> Passage:
    return Passage(i, f"doc{i}.pdf", f"/x/doc{i}.pdf", page, page_end or page, 1.0 - i / 100, text)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Real tokenizer objects carrying the real templates (no model weights needed)."""
    from tinymodels import _fast_tokenizer, _train_tokenizer

    out: dict[str, object] = {}
    tok = _train_tokenizer(["<unk>", "<s>", "</s>"])
    mistral = _fast_tokenizer(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    mistral.chat_template = MISTRAL_TEMPLATE
    out["mistral"] = mistral
    phi3 = _fast_tokenizer(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    phi3.chat_template = PHI3_TEMPLATE
    out["phi3"] = phi3
    out["plain"] = _fast_tokenizer(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return out


def test_instruct_format_folds_system_and_history() -> None:
    fmt = InstructFormat()
    text = fmt.render(
        [
            Message("system", "Be brief."),
            Message("user", "Q1?"),
            Message("assistant", "A1"),
            Message("user", "Q2?"),
        ]
    )
    assert text == "Instruct: Be brief.\n\nQ1?\nOutput: A1\nInstruct: Q2?\nOutput:"


def test_format_choice(tokenizers: dict[str, object]) -> None:
    assert isinstance(prompt_format_for(tokenizers["plain"]), InstructFormat)  # type: ignore[arg-type]
    assert isinstance(prompt_format_for(None), InstructFormat)
    assert isinstance(prompt_format_for(tokenizers["phi3"]), ChatTemplateFormat)  # type: ignore[arg-type]


def test_chat_template_with_system_role(tokenizers: dict[str, object]) -> None:
    fmt = prompt_format_for(tokenizers["phi3"])  # type: ignore[arg-type]
    text = fmt.render([Message("system", "S"), Message("user", "U")])
    assert text == "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n"


def test_template_without_system_role_gets_it_folded(tokenizers: dict[str, object]) -> None:
    fmt = prompt_format_for(tokenizers["mistral"])  # type: ignore[arg-type]
    messages = [
        Message("system", "S"),
        Message("user", "U1"),
        Message("assistant", "A1"),
        Message("user", "U2"),
    ]
    assert fmt.render(messages) == "<s>[INST] S\n\nU1 [/INST]A1</s>[INST] U2 [/INST]"
    # and it keeps working on later calls
    assert fmt.render(messages[:2]) == "<s>[INST] S\n\nU1 [/INST]"


def test_fold_system_without_system_is_unchanged() -> None:
    messages = [Message("user", "U")]
    assert fold_system(messages) == messages


def test_passage_labels() -> None:
    assert page_label(3, 3) == "p.3"
    assert page_label(3, 4) == "p.3–4"
    assert format_passage(2, passage(0, "a  b\n c", 3, 4)) == "[2] (doc0.pdf p.3–4) a b c"


def test_rag_prompt_takes_passages_best_first_within_budget() -> None:
    fmt = InstructFormat()
    ps = [passage(i, " ".join(["word"] * 50)) for i in range(6)]
    empty = build_rag_prompt("Q?", [], fmt=fmt, count_tokens=words, budget_tokens=10_000)
    fixed = words(empty.text)
    prompt = build_rag_prompt(
        "Q?", ps, fmt=fmt, count_tokens=words, budget_tokens=fixed + 3 * 55 + 10
    )
    assert prompt.passages == tuple(ps[:3])
    assert words(prompt.text) <= fixed + 3 * 55 + 10
    assert prompt.prompt_tokens == words(prompt.text)
    assert "[1] (doc0.pdf p.1)" in prompt.text and "[3] (doc2.pdf p.1)" in prompt.text
    assert "[4]" not in prompt.text
    assert prompt.text.index("[1] (doc0") < prompt.text.index("[2] (doc1")
    assert "Q?" in prompt.text and prompt.text.endswith("Output:")
    assert "\nInstruct:" in prompt.stop


def test_rag_prompt_skips_a_long_passage_for_shorter_later_ones() -> None:
    fmt = InstructFormat()
    fixed = words(build_rag_prompt("Q?", [], fmt=fmt, count_tokens=words, budget_tokens=9999).text)
    ps = [passage(0, "a " * 40), passage(1, "b " * 400), passage(2, "c " * 40)]
    prompt = build_rag_prompt("Q?", ps, fmt=fmt, count_tokens=words, budget_tokens=fixed + 100)
    assert prompt.passages == (ps[0], ps[2])
    assert "[2] (doc2.pdf" in prompt.text  # renumbered as included


def test_rag_prompt_cuts_the_first_passage_when_nothing_fits() -> None:
    fmt = InstructFormat()
    examples = words(
        build_rag_prompt("Q?", [], fmt=fmt, count_tokens=words, budget_tokens=9999).text
    )
    ps = [passage(0, "a " * 2000)]
    prompt = build_rag_prompt("Q?", ps, fmt=fmt, count_tokens=words, budget_tokens=examples + 300)
    assert prompt.passages == (ps[0],)
    assert prompt.prompt_tokens <= examples + 300
    assert "…" in prompt.text


def test_worked_examples_are_dropped_in_a_tiny_window() -> None:
    fmt = InstructFormat()
    ps = [passage(0, "a " * 60)]
    roomy = build_rag_prompt("Q?", ps, fmt=fmt, count_tokens=words, budget_tokens=5000)
    assert FEW_SHOT[0].answer in roomy.text
    tight = build_rag_prompt("Q?", ps, fmt=fmt, count_tokens=words, budget_tokens=150)
    assert FEW_SHOT[0].answer not in tight.text
    assert tight.passages == (ps[0],)
    assert tight.prompt_tokens <= 150


def test_rag_prompt_instruction_and_history() -> None:
    fmt = InstructFormat()
    prompt = build_rag_prompt(
        "When did he die?",
        [passage(0, "Tesla died in 1943.")],
        fmt=fmt,
        count_tokens=words,
        budget_tokens=5000,
        history=[Turn("Who was Tesla?", "An inventor [doc0.pdf p.1]")],
    )
    assert ABSTAIN in prompt.text
    assert "Who was Tesla?" in prompt.text
    assert prompt.text.index("Who was Tesla?") < prompt.text.index("Tesla died in 1943.")
    assert prompt.text.rstrip().endswith("Question: When did he die?\nOutput:")


def test_render_citations() -> None:
    given = [passage(0, "x", 3), passage(1, "y", 5, 6), passage(2, "z", 9)]
    text, cites = render_citations("Paris [1].", given)
    assert text == "Paris [doc0.pdf p.3]."
    assert [(c.doc, c.page, c.page_end) for c in cites] == [("doc0.pdf", 3, 3)]

    text, cites = render_citations("It is A [2][3] and B [1, 2].", given)
    assert text == "It is A [doc1.pdf p.5–6][doc2.pdf p.9] and B [doc0.pdf p.3][doc1.pdf p.5–6]."
    assert [c.number for c in cites] == [2, 3, 1]

    text, cites = render_citations("Paris [7].", given)  # a passage that was never given
    assert text == "Paris."
    assert cites == []

    text, _ = render_citations("See [Passage 2] and [1-2].", given)
    assert text == "See [doc1.pdf p.5–6] and [doc0.pdf p.3][doc1.pdf p.5–6]."
    assert render_citations("no markers", given) == ("no markers", [])
    assert render_citations("the list [a] stays", given)[0] == "the list [a] stays"


@pytest.mark.parametrize(
    "text",
    [
        ABSTAIN,
        "The documents don't say.",
        "the documents do not say",
        "The passages do not mention who won.",
        "This is not mentioned in the passages.",
        "There is no information about that.",
        "I don't know.",
        "Answer: The documents don’t say.",
        "The provided context does not contain the answer.",
    ],
)
def test_abstention_detected(text: str) -> None:
    assert is_abstention(text)


@pytest.mark.parametrize(
    "text",
    ["Paris [1]", "In 1943 [2].", "The documents were signed in 1900 [1].", "", "No, it was ABC."],
)
def test_answers_are_not_abstentions(text: str) -> None:
    assert not is_abstention(text)


def test_condense_prompt_and_cleaning() -> None:
    fmt = InstructFormat()
    prompt = condense_question(
        [Turn("Who was Nikola Tesla?", "An inventor [a.pdf p.1]")], "and when did he die?", fmt
    )
    assert "Nikola Tesla" in prompt and "and when did he die?" in prompt
    assert prompt.startswith("Instruct:") and prompt.endswith("Output:")
    assert clean_condensed(' "When did Nikola Tesla die?"\nmore', "q") == (
        "When did Nikola Tesla die?"
    )
    assert clean_condensed("Rewritten question: When did he die?", "q") == "When did he die?"
    assert clean_condensed("", "and when?") == "and when?"
    assert clean_condensed("x" * 1000, "and when?") == "and when?"


def test_prompting_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import ragchat.answer.prompts, sys; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Denver Broncos [1]", "Denver Broncos [1]"),
        ("According to the passages, Denver Broncos [1].", "Denver Broncos [1]."),
        ("According to passage [2], 1857 [2]", "1857 [2]"),
        ("The answer is: 1857 [2]", "1857 [2]"),
        ("Answer: Henry Cole [1]", "Henry Cole [1]"),
        ("Henry Cole [1]. He trained at the Royal College of Art.", "Henry Cole [1]."),
        ("Henry Cole [1]\nQuestion: who else?", "Henry Cole [1]"),
        ("the U.S. Army [3]", "the U.S. Army [3]"),
        ("Mr. Smith [1]", "Mr. Smith [1]"),
        # Not sentence ends: a single letter, an abbreviation of the chunker's list.
        ("Brown v. Board of Education of Topeka [1]", "Brown v. Board of Education of Topeka [1]"),
        ("Gen. Lee [2]. He surrendered.", "Gen. Lee [2]."),
        ("The Royal College of Art [1]", "The Royal College of Art [1]"),
        ("", ""),
    ],
)
def test_clean_answer(raw: str, clean: str) -> None:
    assert clean_answer(raw) == clean


def test_worked_example_shows_a_multi_word_span() -> None:
    answer = FEW_SHOT[0].answer
    assert len(answer.split()) >= 3 and answer.endswith("[1]")
    assert answer.removesuffix(" [1]") in FEW_SHOT[0].question


def test_verify_prompt_shows_a_yes_and_a_no_then_the_case() -> None:
    text = verify_prompt(
        "Who was the first director?",
        "Henry Cole [1]",
        "Its first  director was\nHenry Cole.",
        InstructFormat(),
    )
    assert [t.answer for t in VERIFY_EXAMPLES] == ["Yes", "No"]
    assert text.count("Instruct:") == 3 and text.endswith("Output:")
    last = text.rsplit("Instruct:", 1)[1]
    assert "Passage: Its first director was Henry Cole." in last
    assert "Question: Who was the first director?" in last
    assert "Proposed answer: Henry Cole [1]" in last


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Describe the history of the lighthouse.", "explain"),
        ("How did the fog signal work, and why was it replaced?", "explain"),
        ("Explain how the lamp was lit", "explain"),
        ("Compare the two keepers.", "explain"),
        ("Tell me everything about the history of the light.", "explain"),
        ("Who built the lighthouse?", "lookup"),
        ("How many steps does the tower have?", "lookup"),
        ("How long did he keep the light?", "lookup"),
        ("When was the lamp electrified?", "lookup"),
        ("Who was the first keeper, and how long did he keep the light?", "explain"),
        ("Who built it? When was it lit?", "explain"),
        ("Along with diesel engines, what engines replaced steam?", "lookup"),
        ("In 1942, what was North Fresno called?", "lookup"),
        # yes/no questions (qa._answer_yes_no; an explanation where that can't run)
        ("Was the lighthouse automated?", "explain"),
        ("Didn't the keepers have a dog", "explain"),
        ("Is the packet header long", "explain"),
        ("Where is the island?", "lookup"),
        ("Island of Islay: who lived there?", "lookup"),
    ],
)
def test_question_kind(question: str, kind: str) -> None:
    from ragchat.answer.prompts import question_kind

    assert question_kind(question) == kind


def test_yes_no_questions_begin_with_an_auxiliary_verb() -> None:
    from ragchat.answer.prompts import yes_no_question

    asks = ["Was it lit in 1871?", "  did anyone die?", "Has it been rebuilt?", "Can I visit?"]
    assert all(map(yes_no_question, asks))
    assert not any(map(yes_no_question, ["Who built it?", "Island life?", "Hashimoto's?", ""]))


def test_clean_answer_keeps_whole_sentences_of_an_explanation() -> None:
    raw = (
        "According to the passages, it was built in 1871 [1]. Alder designed it [2].\n"
        "- It had 112 steps [1]. The lens came from Paris [3]. A fifth one [1]. Later it"
    )
    assert clean_answer(raw, "explain") == (
        "it was built in 1871 [1]. Alder designed it [2]. It had 112 steps [1]. The lens "
        "came from Paris [3]."
    )
    assert clean_answer("It was lit in 1871 [1]. Then it was", "explain") == (
        "It was lit in 1871 [1]."
    )
    assert clean_answer(raw) == "it was built in 1871 [1]."  # a lookup: the first sentence
