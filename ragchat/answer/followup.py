"""Follow-up questions: decide whether a question leans on the conversation, and if it
does, rewrite it into one that stands alone before retrieval.

A question leans on the conversation only when it holds a reference it cannot resolve
itself: "and where did it happen?" does, "How long ago did oxygen reach 10% of its present
level?" does not (its = oxygen, named in the question). The rules are in
`unresolved_reference`; docs/answering.md measures them on bench/followup_chains.jsonl.

The rewrite uses the last exchange only (the one a reference nearly always points at): the
model rewrites, `check_rewrite` accepts or refuses its output (it must keep every content
term of the new question, resolve the reference with words from that exchange, and be one
question, not two glued together), and a refused rewrite falls back to `substitute`, which
puts the last exchange's subject in the pronoun's place.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragchat.answer.abstention import is_abstention
from ragchat.answer.citations import strip_citations
from ragchat.answer.prompts import Turn
from ragchat.generation.formats import Message, PromptFormat
from ragchat.index.lexical import tokenize

if TYPE_CHECKING:
    from ragchat.generation.base import Generator


CONDENSE_MAX_TOKENS = 48


# A question opening with one of these continues the conversation ("and when?").
_CONTINUES = re.compile(r"^\s*(and|but|also|what about|how about)\b", re.IGNORECASE)


_PERSON = {"he", "she", "him", "his", "her", "hers"}
_THING = {"it", "its", "they", "them", "their", "theirs", "this", "these", "those"}
_POSSESSIVE = {"his", "her", "hers", "its", "their", "theirs"}


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_AUXILIARIES = _word_set(
    "is are was were be been being do does did has have had can could will would shall "
    "should may might must"
)


# Words that frame a question instead of naming what it is about: none of them is
# something a pronoun can point back to.
_FRAME = _word_set(
    "who whom whose what when where which why how and or but so also not no yes many much "
    "long ago often far old year years time times date day kind type sort name number "
    "percent percentage amount part one ones some any all each other another first last "
    "same the a an of in on at to for from by with about as into than then there here "
    "that this these those such very more most less least just only still ever even again"
)


_PREPOSITIONS = _word_set(
    "of in on at to for from by with about into after before during since until over "
    "under between through against without within like"
)


_CLAUSE_BREAKS = {"and", "but", "or", ",", ";"}


_ADJECTIVE_ENDINGS = ("able", "ible", "ous", "ful", "ive", "less", "ish")


_WORD = re.compile(r"[A-Za-z0-9][\w'’.\-%]*")


@dataclass(frozen=True)
class Reference:
    """A word of a question that points outside it: `word` as written, at word `position`."""

    word: str
    position: int


def _words(text: str) -> list[str]:
    return [w.rstrip(".") for w in _WORD.findall(text)]


def _is_content(word: str) -> bool:
    low = word.lower().replace("’", "'")
    low = low[:-2] if low.endswith("'s") else low
    return (
        bool(low)
        and low not in _FRAME
        and low not in _AUXILIARIES
        and low
        not in _PERSON
        | {
            "it",
            "its",
            "they",
            "them",
            "their",
            "theirs",
        }
    )


def _is_anchor(words: Sequence[str], i: int) -> bool:
    """Whether words[i] can be what a later pronoun points at: a name (capitalised, not
    the first word), a number, or a noun-like content word — not a verb taking an object
    ("develop it", "stated a change"), a past participle, an adjective, nor the head of
    the noun phrase the pronoun itself sits in ("a change of its length")."""
    word = words[i]
    if not _is_content(word):
        return False
    if (i > 0 and word[0].isupper()) or any(c.isdigit() for c in word):
        return True
    low = word.lower()
    nxt = words[i + 1].lower() if i + 1 < len(words) else ""
    if nxt in {"a", "an", "the", "it", "its", "his", "her", "their", "them", "him", "this"}:
        return False  # a verb with its object
    if nxt in _PREPOSITIONS - {"of"}:
        return False  # a predicate ("available worldwide from its airport")
    if nxt == "of" and i + 2 < len(words) and words[i + 2].lower() in _POSSESSIVE | {"it"}:
        return False  # "a change of its length": its ≠ the change
    return not (low.endswith(("ed", "ly")) or low.endswith(_ADJECTIVE_ENDINGS))


def _plural(word: str) -> bool:
    """A lowercase plural noun ("destinations"), which "it"/"its" cannot point at."""
    return word.islower() and word.endswith("s") and not word.endswith(("ss", "us", "is"))


def unresolved_reference(question: str) -> Reference | None:
    """The first word of `question` that points at something the question does not name:
    a pronoun (he, it, its, they, this…) with no possible antecedent before it, or a
    locative "there" (not "is there"/"there are"). None when the question stands alone.

    An antecedent counts only before the pronoun, and a pronoun that is the subject right
    after the first auxiliary ("how many sports does it compete in?") cannot point back
    into the wh-phrase before it."""
    words = _words(question)
    lowered = [w.lower() for w in words]
    first_aux = next((i for i, w in enumerate(lowered) if w in _AUXILIARIES), None)
    for i, low in enumerate(lowered):
        if len(words[i]) > 1 and words[i].isupper():
            continue  # an acronym ("Most IT enabled"), not a pronoun
        before = lowered[i - 1] if i > 0 else ""
        after = lowered[i + 1] if i + 1 < len(lowered) else ""
        if low == "there":
            if before in _AUXILIARIES or after in _AUXILIARIES:
                continue  # existential: "were there", "there are"
            return Reference(words[i], i)
        if low == "that":
            # Demonstrative only at the end or after a preposition ("in that year");
            # elsewhere it is a conjunction or relative pronoun.
            if i + 1 < len(lowered) and before not in _PREPOSITIONS:
                continue
        elif low not in _PERSON | _THING:
            continue
        # Where an antecedent may be: before the pronoun, except (a) for a subject right
        # after an auxiliary ("how many sports does it compete in?"), the wh-phrase of its
        # own clause, and (b) for the object of a wh-subject's verb ("which network aired
        # it?"), that subject.
        candidates = range(i)
        if i > 0 and before in _AUXILIARIES:
            clause = max((j + 1 for j in range(i) if lowered[j] in _CLAUSE_BREAKS), default=0)
            candidates = range(clause)
        elif (
            lowered[0] in {"what", "which", "whose"}
            and low in {"it", "them", "him", "her"}
            and i <= 4
            and (first_aux is None or first_aux > i)
            and "of" not in lowered[1:i]
        ):
            candidates = range(0)
        singular = low in {"it", "its"}
        if not any(
            _is_anchor(words, j) and not (singular and _plural(words[j])) for j in candidates
        ):
            return Reference(words[i], i)
    return None


def is_follow_up(question: str) -> bool:
    """Whether `question` leans on the conversation: it opens with "and/but/also/what
    about", has no content word at all ("Why?", "When?"), or holds an unresolved reference
    (see `unresolved_reference`)."""
    if _CONTINUES.match(question):
        return True
    if not any(_is_content(w) for w in _words(question)):
        return True
    return unresolved_reference(question) is not None


def content_terms(text: str) -> set[str]:
    """Stemmed content terms of `text` (stopwords, question words and pronouns out): what a
    rewrite of it must keep."""
    return set(tokenize(" ".join(w for w in _words(text) if _is_content(w)), stopwords=True))


@dataclass(frozen=True)
class Rewrite:
    """A standalone form of a follow-up: `text`, and how it was made: "none" (the question
    stood alone), "model" (a checked model rewrite) or "substituted" (the fallback)."""

    text: str
    how: str


def standalone(
    question: str,
    history: Sequence[Turn],
    generator: Generator,
    cancel: threading.Event | None = None,
) -> str:
    """The question as it reads without the conversation ("and when did he die?" → "When
    did Tobias Wren die?"); the question itself when there is no history or it stands
    alone. `cancel` stops the model's rewrite (the substitution is used instead)."""
    return rewrite(question, history, generator, cancel).text


def rewrite(
    question: str,
    history: Sequence[Turn],
    generator: Generator | None,
    cancel: threading.Event | None = None,
) -> Rewrite:
    """Make a follow-up standalone from the last exchange: the model's rewrite when
    `check_rewrite` accepts it, else `substitute`'s. No generator: substitution only."""
    if not history or not is_follow_up(question):
        return Rewrite(question, "none")
    if generator is not None:
        proposed = propose(question, history, generator, cancel)
        cancelled = cancel is not None and cancel.is_set()
        if not cancelled and check_rewrite(proposed, question, history) is None:
            return Rewrite(proposed, "model")
    return Rewrite(substitute(question, history[-1]), "substituted")


def propose(
    question: str,
    history: Sequence[Turn],
    generator: Generator,
    cancel: threading.Event | None = None,
) -> str:
    """The model's standalone form of `question`, from the last exchange only (unchecked)."""
    fmt = generator.prompt_format
    prompt = condense_question(history[-1:], question, fmt)
    pieces = generator.stream(
        prompt, max_new_tokens=CONDENSE_MAX_TOKENS, stop=(*fmt.stop, "\n"), cancel=cancel
    )
    return clean_condensed("".join(pieces), question)


def check_rewrite(rewritten: str, question: str, history: Sequence[Turn]) -> str | None:
    """Why `rewritten` is not an acceptable standalone form of `question` after `history`
    (None when it is): it must keep every content term of the question, bring in a term of
    the last exchange, leave no reference unresolved, and be one question of sensible
    length that is not an earlier question."""
    text = rewritten.strip()
    if not text or text.lower() == question.strip().lower():
        return "unchanged"
    if text.count("?") > 1:
        return "several questions"
    if len(_words(text)) > len(_words(question)) + 12:
        return "too long"
    lowered = " ".join(text.lower().split())
    for turn in history:
        earlier = " ".join(turn.question.lower().split()).rstrip("?")
        if earlier and earlier in lowered:
            return "contains an earlier question"
    missing = content_terms(question) - set(tokenize(text, stopwords=True))
    if missing:
        return "drops " + ", ".join(sorted(missing))
    if history:
        last = history[-1]
        known = content_terms(last.question) | content_terms(_answer_text(last))
        if not (content_terms(text) - content_terms(question)) & known:
            return "brings in nothing from the last exchange"
    if is_follow_up(text):
        return "still leans on the conversation"
    return None


def _answer_text(turn: Turn) -> str:
    """The last answer without citations; empty for an abstention or a long answer (a
    sentence is not a name a pronoun can stand for)."""
    answer = strip_citations(turn.answer).strip().rstrip(".")
    if not answer or is_abstention(answer) or len(_words(answer)) > 6:
        return ""
    return answer


def subject(turn: Turn, pronoun: str) -> str:
    """What `pronoun` after `turn` most likely points at: the answer when it is a short
    name or thing the question asked for ("Who invented X?" → he = the answer; "What is
    formed when…?" → it = the answer), else the name the question is about ("When was the
    UMC formed?" → it = the UMC), else the question's longest run of content words."""
    low = pronoun.lower()
    answer = _answer_text(turn)
    words = _words(turn.question)
    asks = words[0].lower() if words else ""
    numeric = any(c.isdigit() for c in answer)
    if asks == "where" and answer[:1].isupper() and low not in _PERSON:
        return answer  # "Where is Audra McDonald from?" "Fresno" → there, its = Fresno
    if low == "there":  # a place: the one the question names
        return _name(words, extend=False) or answer
    if answer and not numeric:
        if asks == "who" and (low in _PERSON or low in {"they", "them", "their", "theirs"}):
            return answer
        short = asks in {"what", "which"} and len(_words(answer)) <= 4
        if short and (low not in _PERSON or answer[:1].isupper()):
            return answer
    name = _name(words, extend=low != "there")
    if name:
        return name
    runs: list[list[str]] = [[]]
    for i in range(len(words)):
        if _is_anchor(words, i):
            runs[-1].append(words[i])
        elif runs[-1]:
            runs.append([])
    best = max(runs, key=len)
    return " ".join(best) if best else answer or turn.question.strip().rstrip("?")


def _name(words: Sequence[str], extend: bool) -> str:
    """The first run of capitalised words after the first word ("Rhine Knee", "Thomas
    Davis"); with `extend`, followed by the noun it names ("Europe's last major epidemic",
    "Merit network"); "" when there is none."""
    for i in range(len(words)):
        if not (words[i][0].isupper() and _is_content(words[i])):
            continue
        j = i
        while j + 1 < len(words) and words[j + 1][0].isupper() and _is_content(words[j + 1]):
            j += 1
        run = list(words[i : j + 1])
        possessive = run[-1].lower().endswith(("'s", "’s"))
        # After an auxiliary a name is the subject and the next word its verb ("What did
        # Newcomen build?"), unless it is a possessive ("When was Europe's last epidemic?").
        subject = i > 0 and words[i - 1].lower() in _AUXILIARIES and not possessive
        if extend and not subject:
            for k in range(j + 1, len(words)):
                low = words[k].lower()
                if low in _AUXILIARIES or low in _PREPOSITIONS or low in _PERSON | _THING:
                    break
                if not possessive and not _is_anchor(words, k):
                    break
                run.append(words[k])
        return " ".join(run)
    return ""


def substitute(question: str, last: Turn) -> str:
    """The fallback rewrite: the first unresolved reference replaced by what it most
    likely points at in the last exchange ("and when did he develop it?" after "What was
    invented by Savery?" → "When did Savery develop it?"); a reference-free follow-up
    ("what about Kenya?", "Why?") gets the last question's subject appended."""
    body = _CONTINUES.sub("", question, count=1).strip(" ,")
    reference = unresolved_reference(body)
    if reference is None:
        given = content_terms(body)
        extra = [
            w for w in _words(last.question) if _is_content(w) and not content_terms(w) & given
        ]
        return _capitalise(f"{body.rstrip('?').strip()} ({' '.join(extra)})?")
    low = reference.word.lower()
    target = subject(last, reference.word)
    if low in _POSSESSIVE:
        target = target + "'s" if not target.endswith("s") else target + "'"
    elif low == "there":
        target = f"in {target}"
    pattern = re.compile(rf"\b{re.escape(reference.word)}\b")
    words_before = 0
    for match in pattern.finditer(body):
        if len(_words(body[: match.start()])) == reference.position:
            words_before = match.start()
            body = body[:words_before] + target + body[match.end() :]
            break
    return _capitalise(body)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


CONDENSE_SYSTEM = (
    "Rewrite the user's last question so that it can be understood on its own: replace "
    "words like he, she, it, its, they, there with the name or thing they refer to in the "
    "conversation, and keep every other word of the question. Reply with the rewritten "
    "question only, one line."
)


# Worked examples: a 1.5B model copies a demonstrated rewrite far more reliably than it
# follows the instruction alone.
CONDENSE_EXAMPLES = (
    (
        "User: Who wrote Hamlet?\nAssistant: William Shakespeare",
        "and when did he die?",
        "When did William Shakespeare die?",
    ),
    (
        "User: Where is the Eiffel Tower?\nAssistant: Paris",
        "how tall is it?",
        "How tall is the Eiffel Tower?",
    ),
)


def condense_question(history: Sequence[Turn], question: str, fmt: PromptFormat) -> str:
    """A prompt asking the model to turn a follow-up ("and when did he die?") into a
    standalone question, given the exchanges in `history` (the console passes the last)."""
    examples = "\n\n".join(
        f"Conversation:\n{conv}\nLast question: {q}\nRewritten question: {a}"
        for conv, q, a in CONDENSE_EXAMPLES
    )
    lines = []
    for turn in history:
        lines.append(f"User: {turn.question.strip()}")
        lines.append(f"Assistant: {' '.join(strip_citations(turn.answer).split())[:300]}")
    conversation = "\n".join(lines)
    user = (
        f"{examples}\n\nConversation:\n{conversation}\nLast question: {question.strip()}\n"
        "Rewritten question:"
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
