"""Follow-up questions: detect a question that leans on the conversation and rewrite it
into one that stands alone before retrieval."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ragchat.answer.prompts import (
    Turn,
)
from ragchat.generation.formats import Message, PromptFormat

if TYPE_CHECKING:
    from ragchat.generation.base import Generator


CONDENSE_MAX_TOKENS = 48


_FOLLOW_UP = re.compile(
    r"^(and|but|so|also|what about|how about)\b|\b(he|she|him|his|her|hers|it|its|they|them|"
    r"their|theirs|this|that|these|those|there|then)\b",
    re.IGNORECASE,
)


_UNRESOLVED = re.compile(r"\b(he|she|him|his|her|it|its|they|them|their)\b", re.IGNORECASE)


def is_follow_up(question: str) -> bool:
    """Whether a question leans on the conversation (pronouns, "and …", very short)."""
    return bool(_FOLLOW_UP.search(question)) or len(question.split()) <= 3


def standalone(question: str, history: Sequence[Turn], generator: Generator) -> str:
    """Rewrite a follow-up ("and when did he die?") into a question that stands alone,
    using the conversation; the question itself when there is no history or it needs none.

    Small models often fail at the rewrite (they answer, or string earlier questions
    together), so an implausible rewrite is replaced by the previous question followed by
    this one: crude, but retrieval then sees what the pronouns point at."""
    if not history or not is_follow_up(question):
        return question
    prompt = condense_question(history, question, generator.prompt_format)
    pieces = generator.stream(
        prompt, max_new_tokens=CONDENSE_MAX_TOKENS, stop=(*generator.prompt_format.stop, "\n")
    )
    rewritten = clean_condensed("".join(pieces), question)
    if _plausible_rewrite(rewritten, question, history):
        return rewritten
    return f"{history[-1].question.strip()} {question.strip()}"


def _plausible_rewrite(rewritten: str, question: str, history: Sequence[Turn]) -> bool:
    return (
        rewritten.strip() != question.strip()
        and rewritten.count("?") <= 1
        and len(rewritten.split()) <= len(question.split()) + 20
        and all(rewritten.strip() != t.question.strip() for t in history)
        and not _UNRESOLVED.search(rewritten)
    )


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
