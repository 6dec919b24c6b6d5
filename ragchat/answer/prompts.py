"""The answer prompt under a token budget, the verification prompt, and cleaning the
model's answer. Pure: no torch.

The wording targets small models (0.5B): short extractive answers, passage numbers as
citations, one fixed sentence for "not in the documents" that is easy to detect."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ragchat.answer.abstention import ABSTAIN
from ragchat.answer.citations import page_label
from ragchat.answer.focus import NOT_AFTER_ABBREVIATION
from ragchat.generation.formats import Message, PromptFormat
from ragchat.records import Passage


@dataclass(frozen=True)
class Turn:
    """A finished exchange of the conversation, for follow-up questions."""

    question: str
    answer: str


@dataclass(frozen=True)
class RagPrompt:
    """A rendered prompt, the passages that went in (numbered 1.. in this order) and the
    stop sequences to generate with."""

    text: str
    passages: tuple[Passage, ...]
    stop: tuple[str, ...]
    prompt_tokens: int


SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages the user gives. Reply with the "
    "exact words of the passage that answer the question: the complete name, number, date "
    "or phrase, nothing else, then the passage number like [1]. If the passages do not "
    f"contain the answer, say: {ABSTAIN}"
)


QUESTION_SUFFIX = ""


# A worked example given as an earlier turn: a 0.5B model copies a demonstrated answer shape
# far more reliably than it follows a described one (answers went from full sentences to
# short spans). The example answer is a multi-word span copied whole ("the Royal College
# of Art", not "College"): SQuAD-style gold answers are full phrases. An abstention example
# as well made Qwen-0.5B abstain on 7 of 10 answerable questions, so abstention is only
# described (qa.py decides it from the model's scores instead).
_EXAMPLE_PASSAGES = (
    "[1] (guide.pdf p.2) The city museum opened in 1857 with 300 paintings. Its first "
    "director was Henry Cole, who had trained at the Royal College of Art.\n\n"
    "[2] (guide.pdf p.5) Entry to the gardens is free on Sundays; the cafe closes at 5 pm."
)


FEW_SHOT: tuple[Turn, ...] = (
    Turn(
        f"Passages:\n{_EXAMPLE_PASSAGES}\n\nQuestion: Where did the museum's first director train?",
        "the Royal College of Art [1]",
    ),
)


QuestionKind = Literal["lookup", "explain"]

# Questions that ask for an account rather than a name, number or date. "how" counts
# unless it asks for a quantity ("how many", "how long", ...).
_EXPLAIN = re.compile(
    r"\b(describe|describing|explain|explaining|summari[sz]e|summary|compare|comparing|"
    r"contrast|outline|discuss|list|overview|why|what happened|tell me (?:\w+\s+){0,2}about|"
    r"in what ways?|how(?!\s+(?:many|much|long|old|far|big|tall|often|large|high|deep|wide|"
    r"fast|few|soon|early|late|heavy|large)\b))\b",
    re.IGNORECASE,
)


# Two questions in one ("Who was the first keeper, and how long did he keep the light?",
# "Who built it? When?"): one span can't answer both. No question of the bench sets
# (qa-public, plays-public, ja-public) has this shape, so their answers are unchanged.
_TWO_QUESTIONS = re.compile(r"\band\s+(?:who|what|when|where|which|whom|whose|how|why)\b", re.I)


# A question that asks yes or no ("Was the light automated?", "Did anyone die?"). As a
# lookup, the model's "Yes" is a word no passage holds, and the answer-coverage rule
# refused every one. qa.py answers it with the sentence that bears on it and the verdict
# from the model's scores (qa._answer_yes_no); it is an explanation where that can't run.
_YES_NO = re.compile(
    r"^\W*(?:is|are|was|were|am|do|does|did|can|could|will|would|shall|should|may|might|"
    r"must|has|have|had)(?:n't)?\b",
    re.IGNORECASE,
)


def yes_no_question(question: str) -> bool:
    """Whether `question` asks yes or no: it begins with an auxiliary verb ("Is", "Did",
    "Has", "Can", "Wasn't" ...)."""
    return bool(_YES_NO.match(question))


def question_kind(question: str) -> QuestionKind:
    """ "explain" for questions that ask to describe, explain, compare, summarise, list, or
    ask why / how, for two questions asked as one and for yes/no questions; "lookup" for
    the rest (who, when, how many, what is the name ...)."""
    two = _TWO_QUESTIONS.search(question) or question.count("?") > 1
    explain = two or _EXPLAIN.search(question) or yes_no_question(question)
    return "explain" if explain else "lookup"


EXPLAIN_SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages the user gives. Answer in one "
    "to four sentences, as few as the question needs, using the words of the passages, "
    "and end each sentence with the number of the passage it comes from, like [2]. If the "
    f"passages do not contain the answer, say: {ABSTAIN}"
)
_EXPLAIN_EXAMPLE_PASSAGES = (
    "[1] (guide.pdf p.2) The city museum opened in 1857 with 300 paintings. A fire in 1901 "
    "destroyed its east wing.\n\n"
    "[2] (guide.pdf p.3) After the fire the museum was rebuilt in stone, and it reopened in "
    "1905 with a new library."
)
EXPLAIN_FEW_SHOT: tuple[Turn, ...] = (
    Turn(
        f"Passages:\n{_EXPLAIN_EXAMPLE_PASSAGES}\n\nQuestion: What happened to the museum "
        "after it opened?",
        "A fire in 1901 destroyed its east wing [1]. It was rebuilt in stone and reopened in "
        "1905 with a new library [2].",
    ),
)

# Scripts (script.py renders their passages as "Name (direction): words"): what answers a
# question about a story is rarely a span of its dialogue ("Who did he think he killed?"
# -> "his father", from "I killed my da"), so the answer is asked for in the reader's own
# few words, or one or two sentences for an explanation.
SCRIPT_SYSTEM_PROMPT = (
    "You answer questions about a play or screenplay using only the numbered passages the "
    "user gives; each line is a character's name and what they say, with stage "
    "directions in brackets. Answer in a few words of your own: the person, thing or "
    "short phrase that answers the question, then the passage number like [1]. If the "
    f"passages do not contain the answer, say: {ABSTAIN}"
)
SCRIPT_EXPLAIN_SYSTEM_PROMPT = (
    "You answer questions about a play or screenplay using only the numbered passages the "
    "user gives; each line is a character's name and what they say, with stage "
    "directions in brackets. Answer in one or two short sentences of your own that say "
    "what happens, and end each sentence with the number of the passage it comes from, "
    f"like [2]. If the passages do not contain the answer, say: {ABSTAIN}"
)
_SCRIPT_EXAMPLE_PASSAGES = (
    "[1] (play.pdf p.4) Mary: Where's Tom gone this morning? Anne (at the window): He took "
    "his brother's boat out at dawn, and the storm came up behind him.\n\n"
    "[2] (play.pdf p.9) Tom (soaked, in the doorway): I lost her on the rocks, Mary. The "
    "boat's gone."
)
SCRIPT_FEW_SHOT: tuple[Turn, ...] = (
    Turn(
        f"Passages:\n{_SCRIPT_EXAMPLE_PASSAGES}\n\nQuestion: Whose boat did Tom take?",
        "his brother's [1]",
    ),
)
SCRIPT_EXPLAIN_FEW_SHOT: tuple[Turn, ...] = (
    Turn(
        f"Passages:\n{_SCRIPT_EXAMPLE_PASSAGES}\n\nQuestion: What happens to the boat?",
        "Tom takes it out in a storm and wrecks it on the rocks [1] [2].",
    ),
)
_PROMPTS: dict[tuple[str, bool], tuple[str, tuple[Turn, ...]]] = {
    ("lookup", False): (SYSTEM_PROMPT, FEW_SHOT),
    ("explain", False): (EXPLAIN_SYSTEM_PROMPT, EXPLAIN_FEW_SHOT),
    ("lookup", True): (SCRIPT_SYSTEM_PROMPT, SCRIPT_FEW_SHOT),
    ("explain", True): (SCRIPT_EXPLAIN_SYSTEM_PROMPT, SCRIPT_EXPLAIN_FEW_SHOT),
}


def example_texts(kind: QuestionKind, script: bool = False) -> tuple[str, ...]:
    """The worked examples' passages and answers in the prompt `build_rag_prompt` makes for
    `kind` and `script`: what an answer read from the demonstration would come from."""
    return tuple(
        text for turn in _PROMPTS[kind, script][1] for text in (turn.question, turn.answer)
    )


_WORD = re.compile(r"\w+")


def _words(text: str) -> str:
    return f" {' '.join(_WORD.findall(text.lower()))} "


def copied_example(answer: str, examples: Sequence[str], passages: Sequence[str]) -> bool:
    """Whether `answer` (its words, in order) comes from the worked examples and from none
    of the `passages`: a small model sometimes answers from the demonstration instead of
    the documents ("his brother's boat", from the script example, for what made a play's
    hero famous)."""
    words = _words(answer)
    if not any(len(w) > 2 for w in words.split()):
        return False
    return any(words in _words(e) for e in examples) and not any(
        words in _words(p) for p in passages
    )


def format_passage(number: int, passage: Passage, text: str | None = None) -> str:
    """`[n] (file.pdf p.3) text`, whitespace collapsed."""
    body = " ".join((passage.text if text is None else text).split())
    return f"[{number}] ({passage.doc} {page_label(passage.page, passage.page_end)}) {body}"


def _history_messages(history: Sequence[Turn] | None) -> list[Message]:
    messages: list[Message] = []
    for turn in history or ():
        messages.append(Message("user", turn.question))
        messages.append(Message("assistant", turn.answer))
    return messages


def rag_messages(
    question: str,
    blocks: Sequence[str],
    history: Sequence[Turn] | None = None,
    examples: Sequence[Turn] = FEW_SHOT,
    system: str = SYSTEM_PROMPT,
) -> list[Message]:
    """System instruction, worked examples, earlier turns, then passages + question as the
    last user turn."""
    passages = "\n\n".join(blocks) if blocks else "(no passages)"
    user = f"Passages:\n{passages}\n\nQuestion: {question.strip()}"
    if QUESTION_SUFFIX:
        user += f"\n\n{QUESTION_SUFFIX}"
    return [
        Message("system", system),
        *_history_messages(examples),
        *_history_messages(history),
        Message("user", user),
    ]


def build_rag_prompt(
    question: str,
    passages: Sequence[Passage],
    *,
    fmt: PromptFormat,
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    history: Sequence[Turn] | None = None,
    kind: QuestionKind = "lookup",
    script: bool = False,
) -> RagPrompt:
    """The answer prompt with as many passages as fit in `budget_tokens` (the prompt's token
    budget: context window minus answer room), taken best first in the given order; a
    passage too long for what is left is skipped for later, shorter ones, except that the
    first is cut to fit when nothing else would. Passages are renumbered 1.. as included.
    `kind` picks the instruction: a short exact span, or 1–4 cited sentences; `script`
    its variant for a play's speeches (a few words of the reader's own, 1–2 sentences)."""
    system, examples = _PROMPTS[kind, script]
    fixed = count_tokens(fmt.render(rag_messages(question, [], history, examples, system)))
    first = count_tokens(format_passage(1, passages[0])) if passages else 0
    if fixed + min(first, 128) > budget_tokens:  # a small window: passages matter more
        examples = ()
        fixed = count_tokens(fmt.render(rag_messages(question, [], history, examples, system)))
    remaining = budget_tokens - fixed
    chosen: list[tuple[Passage, str]] = []  # passage, (possibly cut) text
    for passage in passages:
        block = format_passage(len(chosen) + 1, passage)
        cost = count_tokens(block) + 2  # the blank line between passages
        if cost <= remaining:
            chosen.append((passage, passage.text))
            remaining -= cost
        elif not chosen and remaining > 48:
            text = _cut_to_fit(passage, remaining - 2, count_tokens)
            if text:
                chosen.append((passage, text))
                remaining -= count_tokens(format_passage(1, passage, text)) + 2
    while True:
        blocks = [format_passage(i + 1, p, t) for i, (p, t) in enumerate(chosen)]
        text = fmt.render(rag_messages(question, blocks, history, examples, system))
        tokens = count_tokens(text)
        # Token counts of pieces don't add up exactly (merges across boundaries).
        if tokens <= budget_tokens or not chosen:
            break
        chosen.pop()
    return RagPrompt(
        text=text,
        passages=tuple(p for p, _ in chosen),
        stop=fmt.stop,
        prompt_tokens=tokens,
    )


def _cut_to_fit(passage: Passage, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest word-boundary prefix of the passage text whose block fits `budget`."""
    words = passage.text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search on the number of words
        mid = (lo + hi + 1) // 2
        if count_tokens(format_passage(1, passage, " ".join(words[:mid]) + " …")) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " …" if lo else ""


VERIFY_SYSTEM = "You check whether a passage answers a question. Reply Yes or No."


# The verdict tokens scored after the verification prompt (both capitalisations; the first
# token of the model's reply is scored, nothing is generated).
VERIFY_YES: tuple[str, ...] = ("Yes", "yes")


VERIFY_NO: tuple[str, ...] = ("No", "no")


def _verify_turn(passage: str, question: str, proposed: str) -> str:
    return (
        f"Passage: {' '.join(passage.split())}\nQuestion: {question.strip()}\n"
        f"Proposed answer: {' '.join(proposed.split())}\n"
        "Is the question answered by the passage with this answer?"
    )


# One Yes and one No example (the No: a plausible span from the passage, but the question
# asks something the passage doesn't say): without them Qwen-0.5B's verdict was close to a
# coin toss on toy cases; with them correct answers scored above wrong ones.
_VERIFY_EXAMPLE = "The bridge was finished in 1932 and is 503 metres long."


VERIFY_EXAMPLES: tuple[Turn, ...] = (
    Turn(_verify_turn(_VERIFY_EXAMPLE, "How long is the bridge?", "503 metres"), "Yes"),
    Turn(_verify_turn(_VERIFY_EXAMPLE, "When was the bridge demolished?", "1932"), "No"),
)


def verify_prompt(question: str, proposed: str, passage: str, fmt: PromptFormat) -> str:
    """A short prompt asking whether `passage` answers `question` with `proposed`; the
    model's next token is the verdict (VERIFY_YES / VERIFY_NO)."""
    return fmt.render(
        [
            Message("system", VERIFY_SYSTEM),
            *_history_messages(VERIFY_EXAMPLES),
            Message("user", _verify_turn(passage, question, proposed)),
        ]
    )


_LEAD_INS = re.compile(
    r"^\s*(?:(?:according to|based on|as stated in|from)\s+(?:the\s+)?(?:passages?|documents?|"
    r"context|texts?)\s*(?:\[[^\]]*\]\s*)*,?\s*|(?:the\s+)?(?:short\s+|final\s+)?answer\s*"
    r"(?:is\s*:?|:)\s*|answer\s*:\s*)",
    re.IGNORECASE,
)


# An explanation keeps at most this many sentences.
MAX_SENTENCES = 4


# A full stop (then any citation markers) before a capitalised word, not after an
# abbreviation or an initial ("Brown v. Board of Education" is one answer).
_SENTENCE_END = re.compile(NOT_AFTER_ABBREVIATION + r"\.(\s*\[[^\]]*\])*\s+(?=[A-Z])")


def sentence_cut(text: str, n: int) -> int | None:
    """Where the `n`-th sentence of `text` ends (after its citation markers), once a next
    sentence has begun; None before that."""
    ends = list(_SENTENCE_END.finditer(text))
    if len(ends) < n:
        return None
    match = ends[n - 1]
    return match.end() - len(match.group(0)) + len(match.group(0).rstrip())


def clean_answer(raw: str, kind: QuestionKind = "lookup") -> str:
    """The model's answer without lead-ins ("According to the passages,", "The answer is");
    citation markers [n] are kept. A lookup keeps its first line and first sentence (small
    models restate or ramble); an explanation keeps up to MAX_SENTENCES whole sentences,
    across lines, without a last sentence cut off by the token limit."""
    text = raw.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if kind == "explain":
        text = " ".join(line.lstrip("-*• ").strip() for line in lines)
    else:
        text = lines[0] if lines else ""
    previous = None
    while previous != text:
        previous = text
        text = _LEAD_INS.sub("", text, count=1)
    ends = list(_SENTENCE_END.finditer(text))
    if kind == "lookup":
        # First sentence: a full stop followed by a capitalised word, keeping markers right
        # after it ("… in 1857 [1]. It …" -> "… in 1857 [1].").
        if ends:
            text = text[: ends[0].end()].rstrip()
        return text.strip()
    if len(ends) >= MAX_SENTENCES:
        text = text[: ends[MAX_SENTENCES - 1].end()].rstrip()
    elif ends and not re.search(r"[.!?。](\s*\[[^\]]*\])*\s*$", text):
        text = text[: ends[-1].end()].rstrip()  # drop an unfinished last sentence
    return text.strip()
