"""Scripts (plays, screenplays) read as speeches: who says what.

A screenplay's text layer puts the speaker's cue on a line of its own ("PEGEEN"), then an
optional parenthetical ("(very sharply)"), then the lines spoken; page breaks add "(MORE)",
a page number ("18.") and "NAME (CONT'D)". Split into sentences the way prose is, a
script loses who is speaking: the answer prompt would hold "Will you whisht?" with no one
saying it. Here the passage becomes speeches, "PEGEEN (very sharply): Will you whisht?
Who's speaking to you?", each one unit for question focusing. Pure: strings only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A cue: one to four upper-case words on a line of their own, optionally marked as a
# continuation or an off-screen voice. Lines such as "ACT I" or "SCENE 2" are headings.
_CUE = re.compile(
    r"^\s*(?P<name>[A-Z][A-Z'’.\-]*(?: [A-Z][A-Z'’.\-]*){0,3})"
    r"(?:\s*\((?:CONT['’]D|V\.O\.|O\.S\.|O\.C\.)\))?\s*$"
)
_HEADING = re.compile(r"^(ACT|SCENE|CURTAIN|END|THE END|INT|EXT|FADE|CUT)\b")
_PAGE_NUMBER = re.compile(r"^\s*\d{1,4}\.?\s*$")
_MORE = re.compile(r"\s*\(MORE\)\s*$")

# A passage is read as a script when it holds at least this many cues, or two cues of
# which one speaker speaks twice: a page of prose may well have two upper-case headings.
MIN_CUES = 3


@dataclass(frozen=True)
class Speech:
    """One speech: the speaker ("" for text before the passage's first cue, whose speaker
    is in the previous chunk), the parenthetical direction, and the words."""

    speaker: str
    direction: str
    text: str

    def render(self) -> str:
        """`NAME (direction): words`; the bare words when the speaker is unknown."""
        if not self.speaker:
            return self.text
        head = self.speaker.title() if self.speaker.isupper() else self.speaker
        if self.direction:
            head += f" {self.direction}"
        return f"{head}: {self.text}"


def _cue(line: str) -> str | None:
    """The speaker a cue line names; "" for a heading ("ACT II"); None for other lines."""
    match = _CUE.match(line)
    if not match:
        return None
    name = match.group("name").strip()
    if _HEADING.match(name):
        return ""
    return name if len(name) >= 2 else None


# Lines that introduce what follows: a speaker's cue or an upper-case heading ("ACT II",
# "HISTORY"). A chunk must not end on one, or the speech is cut from its speaker.
_LEAD_LINE = re.compile(
    r"^[ \t]*[A-Z][A-Z'’.\-]*(?: [A-Z0-9][A-Z0-9'’.\-]*){0,3}"
    r"(?:[ \t]*\((?:CONT['’]D|V\.O\.|O\.S\.|O\.C\.)\))?[ \t]*$",
    re.MULTILINE,
)


def lead_line_ends(text: str) -> list[int]:
    """The end positions (before the newline) of lines that introduce the text after
    them: speaker cues and upper-case headings of up to four words."""
    return [m.end() for m in _LEAD_LINE.finditer(text) if len(m.group().strip()) >= 2]


def is_script(text: str) -> bool:
    """True when `text` is laid out as a script: at least MIN_CUES speaker cues, or two
    by the same speaker."""
    names = [name for line in text.splitlines() if (name := _cue(line))]
    return len(names) >= MIN_CUES or (len(names) == 2 and names[0] == names[1])


def speeches(text: str) -> list[Speech]:
    """The speeches of script-formatted `text`, in order, whitespace collapsed; a speech
    continued across a page break ("(MORE)", page number, "NAME (CONT'D)") stays one."""
    found: list[Speech] = []
    speaker, direction, words = "", "", []
    in_direction = False  # inside a parenthetical that runs over several lines

    def close() -> None:
        body = " ".join(" ".join(words).split())
        if body:
            found.append(Speech(speaker, " ".join(direction.split()), body))

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _PAGE_NUMBER.match(stripped):
            continue
        name = _cue(stripped)
        if name is not None:  # a cue, or a heading ("") that ends the speech before it
            if name and name == speaker and "CONT" in stripped.upper():
                continue  # the same speech after a page break
            close()
            speaker, direction, words, in_direction = name, "", [], False
            continue
        if in_direction or (speaker and not words and not direction and stripped[0] == "("):
            direction += " " + stripped
            in_direction = not stripped.endswith(")")
            continue
        words.append(_MORE.sub("", stripped))
    close()
    return found
