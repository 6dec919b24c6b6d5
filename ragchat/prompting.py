"""Prompt formats, the RAG prompt under a token budget, citation rendering and abstention
detection. Pure: no torch; a tokenizer is only used through `apply_chat_template`.

The wording targets small models (0.5B): short extractive answers, passage numbers as
citations, one fixed sentence for "not in the documents" that is easy to detect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ragchat.records import Passage

ABSTAIN = "The documents don't say."

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True)
class Turn:
    """A finished exchange of the conversation, for follow-up questions."""

    question: str
    answer: str


@dataclass(frozen=True)
class Citation:
    """A passage the answer cites; pages are 1-based and inclusive."""

    number: int  # the [n] the model wrote
    doc: str
    page: int
    page_end: int

    @property
    def label(self) -> str:
        """`file.pdf p.3` or `file.pdf p.3–4`."""
        pages = f"p.{self.page}" if self.page_end <= self.page else f"p.{self.page}–{self.page_end}"
        return f"{self.doc} {pages}"


@dataclass(frozen=True)
class RagPrompt:
    """A rendered prompt, the passages that went in (numbered 1.. in this order) and the
    stop sequences to generate with."""

    text: str
    passages: tuple[Passage, ...]
    stop: tuple[str, ...]
    prompt_tokens: int


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that prompt formats use."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


# Base models (Phi-2) continue past the answer with new exercises, questions or turns.
BASE_STOPS: tuple[str, ...] = (
    "\nInstruct:",
    "Instruct:",
    "\nExercise",
    "\nQuestion:",
    "\nUser:",
    "\n<|user|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|end|>",
    "</s>",
    "[INST]",
)


class PromptFormat:
    """Turns messages into the model's prompt text. Subclasses: InstructFormat (Phi-2 and
    models without a chat template) and ChatTemplateFormat."""

    name: str = "?"
    stop: tuple[str, ...] = BASE_STOPS

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text, ending where the model's answer starts."""
        raise NotImplementedError


class InstructFormat(PromptFormat):
    """Phi-2's QA format: `Instruct: …\\nOutput:`. The system text opens the first turn."""

    name = "instruct"

    def render(self, messages: Sequence[Message]) -> str:
        parts: list[str] = []
        pending_system = ""
        for message in messages:
            if message.role == "system":
                pending_system += message.content.strip() + "\n\n"
            elif message.role == "user":
                parts.append(f"Instruct: {pending_system}{message.content.strip()}\nOutput:")
                pending_system = ""
            else:
                parts[-1:] = [f"{parts[-1]} {message.content.strip()}\n"] if parts else []
        return "".join(parts)


class ChatTemplateFormat(PromptFormat):
    """The tokenizer's own chat template (Qwen, SmolLM, Phi-3, Mistral …) with the generation
    prompt added. Templates that reject a system role (Mistral) get it folded into the first
    user turn."""

    name = "chat-template"

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tokenizer = tokenizer
        self._fold_system: bool | None = None

    def _apply(self, messages: Sequence[Message]) -> str:
        text = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)

    def render(self, messages: Sequence[Message]) -> str:
        if self._fold_system is not True:
            try:
                text = self._apply(messages)
                if any(m.role == "system" for m in messages):
                    self._fold_system = False
                return text
            except Exception:  # jinja raises TemplateError via raise_exception(); any kind
                if self._fold_system is False or not any(m.role == "system" for m in messages):
                    raise
                self._fold_system = True
        return self._apply(fold_system(messages))


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Move system text into the first user message (for templates without a system role)."""
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system")
    out: list[Message] = []
    for message in messages:
        if message.role == "system":
            continue
        if system and message.role == "user":
            message = Message("user", f"{system}\n\n{message.content}")
            system = ""
        out.append(message)
    return out


def prompt_format_for(tokenizer: ChatTokenizer | None) -> PromptFormat:
    """Chat template when the tokenizer has one, else Phi-2's Instruct/Output format."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return ChatTemplateFormat(tokenizer)
    return InstructFormat()


# --- the RAG prompt ----------------------------------------------------------------------

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


def page_label(page: int, page_end: int) -> str:
    """`p.3` or `p.3–4` (1-based, inclusive)."""
    return f"p.{page}" if page_end <= page else f"p.{page}–{page_end}"


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
) -> list[Message]:
    """System instruction, worked examples, earlier turns, then passages + question as the
    last user turn."""
    passages = "\n\n".join(blocks) if blocks else "(no passages)"
    user = f"Passages:\n{passages}\n\nQuestion: {question.strip()}"
    if QUESTION_SUFFIX:
        user += f"\n\n{QUESTION_SUFFIX}"
    return [
        Message("system", SYSTEM_PROMPT),
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
) -> RagPrompt:
    """The answer prompt with as many passages as fit in `budget_tokens` (the prompt's token
    budget: context window minus answer room), taken best first in the given order; a
    passage too long for what is left is skipped for later, shorter ones, except that the
    first is cut to fit when nothing else would. Passages are renumbered 1.. as included."""
    examples: Sequence[Turn] = FEW_SHOT
    fixed = count_tokens(fmt.render(rag_messages(question, [], history, examples)))
    first = count_tokens(format_passage(1, passages[0])) if passages else 0
    if fixed + min(first, 128) > budget_tokens:  # a small window: passages matter more
        examples = ()
        fixed = count_tokens(fmt.render(rag_messages(question, [], history, examples)))
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
        text = fmt.render(rag_messages(question, blocks, history, examples))
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


# --- verifying an answer ----------------------------------------------------------------

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


# --- follow-up questions -----------------------------------------------------------------

CONDENSE_SYSTEM = (
    "Rewrite the user's last question so that it can be understood without the conversation: "
    "keep its meaning, but replace words like he, she, it, they, there, that year with what "
    "they refer to. Reply with the rewritten last question only. Example: after 'Who wrote "
    "Hamlet?', the last question 'when did he die?' becomes 'When did William Shakespeare die?'"
)


def condense_question(history: Sequence[Turn], question: str, fmt: PromptFormat) -> str:
    """A prompt asking the model to turn a follow-up ("and when did he die?") into a
    standalone question, using the last few turns."""
    lines = []
    for turn in list(history)[-3:]:
        lines.append(f"User: {turn.question.strip()}")
        lines.append(f"Assistant: {' '.join(turn.answer.split())[:400]}")
    conversation = "\n".join(lines)
    user = (
        f"Conversation:\n{conversation}\n\nLast question: {question.strip()}\n\nRewritten question:"
    )
    return fmt.render([Message("system", CONDENSE_SYSTEM), Message("user", user)])


def clean_condensed(output: str, question: str) -> str:
    """The standalone question from the model's condense output; the original question when
    the output is empty or implausible (several lines of text, far too long)."""
    text = output.strip().strip("`").strip()
    text = re.sub(r"^(rewritten|standalone)?\s*question\s*:\s*", "", text, flags=re.I)
    text = text.splitlines()[0].strip().strip('"“”').strip() if text else ""
    if not text or len(text) > max(300, 4 * len(question)):
        return question
    return text


# --- cleaning the answer -----------------------------------------------------------------

_LEAD_INS = re.compile(
    r"^\s*(?:(?:according to|based on|as stated in|from)\s+(?:the\s+)?(?:passages?|documents?|"
    r"context|texts?)\s*(?:\[[^\]]*\]\s*)*,?\s*|(?:the\s+)?(?:short\s+|final\s+)?answer\s*"
    r"(?:is\s*:?|:)\s*|answer\s*:\s*)",
    re.IGNORECASE,
)


_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z])(?<!\b(?:Mr|Dr|St|Mt|vs|No))\.(\s*\[[^\]]*\])*\s+(?=[A-Z])"
)


def clean_answer(raw: str) -> str:
    """The model's answer without lead-ins ("According to the passages,", "The answer is")
    and without anything after its first line or first sentence (small models restate or
    ramble); citation markers [n] are kept."""
    text = raw.strip()
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    previous = None
    while previous != text:
        previous = text
        text = _LEAD_INS.sub("", text, count=1)
    # First sentence: a full stop followed by a capitalised word, keeping markers right
    # after it ("… in 1857 [1]. It …" -> "… in 1857 [1].").
    match = _SENTENCE_END.search(text)
    if match:
        text = text[: match.end()].rstrip()
    return text.strip()


# --- citations and abstention ------------------------------------------------------------

# [1]  [1, 2]  [1][2]  [1-3]  [Passage 2]  [passages 1 and 3]
_MARKER = re.compile(
    r"\[\s*(?:passages?\s*)?(\d+(?:\s*(?:,|;|and|&|-|–)\s*(?:passages?\s*)?\d+)*)\s*\]",
    re.IGNORECASE,
)


def _numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for piece in re.split(r"\s*(?:,|;|and|&)\s*", group, flags=re.I):
        piece = re.sub(r"passages?\s*", "", piece, flags=re.I)
        if m := re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", piece):
            lo, hi = int(m.group(1)), int(m.group(2))
            numbers += list(range(lo, hi + 1)) if 0 < hi - lo < 20 else [lo, hi]
        elif piece.strip().isdigit():
            numbers.append(int(piece))
    return numbers


def render_citations(
    answer_text: str, given_passages: Sequence[Passage]
) -> tuple[str, list[Citation]]:
    """Replace [n] markers with `[file.pdf p.N]` (`p.N–M` for chunks spanning pages), drop
    markers that point at no given passage, and return the text plus the distinct cited
    passages in order of first mention. `given_passages[n-1]` is passage [n]."""
    citations: list[Citation] = []
    seen: set[tuple[str, int, int]] = set()

    def replace(match: re.Match[str]) -> str:
        labels: list[str] = []
        for number in _numbers(match.group(1)):
            if not 1 <= number <= len(given_passages):
                continue
            p = given_passages[number - 1]
            cite = Citation(number, p.doc, p.page, max(p.page, p.page_end))
            if cite.label not in labels:
                labels.append(cite.label)
            key = (cite.doc, cite.page, cite.page_end)
            if key not in seen:
                seen.add(key)
                citations.append(cite)
        return "".join(f"[{label}]" for label in labels)

    text = _MARKER.sub(replace, answer_text)
    text = re.sub(r"(\[[^\[\]]+\])(?:\1)+", r"\1", text)  # [a p.1][a p.1] -> [a p.1]
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "answer ." left by a dropped marker
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text, citations


_ABSTAIN_PATTERNS = [
    r"\b(documents?|passages?|context|texts?|sources?)\b[^.]{0,30}\b(do(es)?n'?t|do(es)? not)\s+"
    r"(say|mention|contain|include|provide|specify|state|answer|discuss|have)",
    r"\bnot\s+(mentioned|provided|stated|specified|given|found|contained|included|answered"
    r"|discussed|available)\s+in\s+the\s+(documents?|passages?|context|texts?|sources?)",
    r"^(there is |i have )?no (relevant )?information\b",
    r"\b(cannot|can ?not|can't|unable to)\s+(be\s+)?(determined?|answer(ed)?|find|found|"
    r"tell)\b",
    r"^i (do not|don'?t) know\b",
    r"^(the )?answer is not (in|provided|given|mentioned)",
]


def is_abstention(text: str) -> bool:
    """True when the answer says the documents don't contain it: the fixed ABSTAIN sentence
    or a close variant, near the start of the answer."""
    head = " ".join(text.replace("’", "'").lower().split())[:160]
    head = re.sub(r"^(answer|output)\s*:\s*", "", head)
    if not head:
        return False
    if ABSTAIN.lower().rstrip(".") in head:
        return True
    return any(re.search(pattern, head) for pattern in _ABSTAIN_PATTERNS)
