"""A script's story map: a short summary of each section of a play or screenplay, made by
the language model once, after ingest, and kept in the index (`IndexStore.summaries`).

Questions about a story ("Who saves Christy from being hanged?") were written from plot
summaries, and eight speeches of a 90-page play rarely hold their answer: what happens is
spread over scenes. Beside the best speeches the reader is given the summaries of the
sections that match the question best (answer/story.py). On the 57 plays-public questions
this took ROUGE-L from 0.136 to 0.180 (docs/answering.md, "A script's story map").

The price is paid at ingest: the model reads the whole script once, about 27 s per section
of SECTION_WORDS words with the default model on two cores (9-10 minutes for a 90-page play).
Only documents that read as scripts are summarised; `summarise_scripts = false` (or
`ragchat ingest --no-summaries`) skips it, and an interrupted run keeps every summary made,
so the next ingest goes on where it stopped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragchat.answer.prompts import sentence_cut
from ragchat.generation.formats import Message
from ragchat.ingest.script import is_script
from ragchat.records import Page

if TYPE_CHECKING:
    from ragchat.generation.base import Generator
    from ragchat.index.store import IndexStore, SourceRecord

# A section is whole pages, at least this many words (the last may be shorter): about
# 1,300-1,700 prompt tokens, a few minutes of reading per play on a laptop CPU.
SECTION_WORDS = 900
# Room for a summary of three or four sentences; what comes after the fourth is cut.
SUMMARY_TOKENS = 160
SUMMARY_SENTENCES = 4

SUMMARY_INSTRUCTION = (
    "In one paragraph of three or four sentences, no lists, tell what happens in this part "
    "of the play: who does what, to whom, and why. Call the characters by their names."
)


@dataclass(frozen=True)
class Section:
    """Pages first..last of a document (1-based, inclusive) and their text."""

    first: int
    last: int
    text: str


def sections(pages: Sequence[Page], words: int = SECTION_WORDS) -> list[Section]:
    """The document's pages in runs of whole pages of at least `words` words each."""
    out: list[Section] = []
    run: list[Page] = []
    count = 0
    for page in pages:
        run.append(page)
        count += len(page.text.split())
        if count >= words:
            out.append(Section(run[0].number, page.number, "\n".join(p.text for p in run)))
            run, count = [], 0
    if run:
        out.append(Section(run[0].number, run[-1].number, "\n".join(p.text for p in run)))
    return out


def summary_prompt(section: Section, generator: Generator) -> str:
    """The model's prompt asking for the summary of `section`."""
    pages = (
        f"page {section.first}"
        if section.first == section.last
        else (f"pages {section.first}-{section.last}")
    )
    message = f"Here is part of a play ({pages}):\n\n{section.text}\n\n{SUMMARY_INSTRUCTION}"
    return generator.format_prompt([Message("user", message)])


_LEAD_IN = re.compile(
    r"\s(?:(?:here(?:'s| is) )?(?:a )?summary of (?:what happens|the (?:key )?events)"
    r"|the following events (?:occur|take place|happen))\s*:",
    re.I,
)
_LIST_MARK = re.compile(r"^(?:\d{1,2}[.)]|[-*•])\s+")
_INLINE_NUMBER = re.compile(r"(?<=[.:!?])\s+\d{1,2}[.)]\s+")


def clean_summary(raw: str) -> str:
    """The summary on one line, without a lead-in ("In this part of the play, ", "Here is
    a summary of what happens:", "The following events occur:"), list marks ("1.", "-")
    nor a sentence cut off by the token limit, at most SUMMARY_SENTENCES sentences."""
    lines = (_LIST_MARK.sub("", line.strip()) for line in raw.replace("**", "").splitlines())
    text = _INLINE_NUMBER.sub(" ", _LEAD_IN.sub(" ", " " + " ".join(lines)))
    text = " ".join(text.split())
    for lead in ("In this part of the play, ", "In this part of the play "):
        if text.startswith(lead) and len(text) > len(lead):
            text = text[len(lead)].upper() + text[len(lead) + 1 :]
    cut = sentence_cut(text + " X", SUMMARY_SENTENCES)
    if cut is not None:
        text = text[:cut]
    elif text and text[-1] not in ".!?\"'”)":
        last = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        text = text[: last + 1] if last > 0 else text
    return text.strip()


_SCRIPT_DOCUMENTS: dict[tuple[str, int, int], bool] = {}


def script_document(store: IndexStore, source_id: int) -> bool:
    """Whether at least half the chunks of a document are laid out as a script (cached
    per index generation: a few microseconds a chunk, once)."""
    key = (str(store.path), store.generation, source_id)
    if key not in _SCRIPT_DOCUMENTS:
        texts = store.source_texts(source_id)
        _SCRIPT_DOCUMENTS[key] = bool(texts) and 2 * sum(map(is_script, texts)) >= len(texts)
    return _SCRIPT_DOCUMENTS[key]


@dataclass(frozen=True)
class Pending:
    """A script document and the sections of it that have no summary yet."""

    source: SourceRecord
    sections: tuple[Section, ...]


def pending(store: IndexStore) -> list[Pending]:
    """The script documents of the index with sections still to summarise."""
    done = {(s.source_id, s.page_start) for s in store.summaries()}
    out = []
    for source in store.sources():
        if not source.chunks or not script_document(store, source.id):
            continue
        todo = [s for s in sections(store.pages(source.id)) if (source.id, s.first) not in done]
        if todo:
            out.append(Pending(source, tuple(todo)))
    return out


def summarise(
    store: IndexStore,
    work: Sequence[Pending],
    generator: Generator,
    *,
    on_section: Callable[[Pending, Section], None] | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Summarise the pending sections with `generator`, each stored as it is made (the
    caller holds the index's writer lock). Returns how many were made; stops early, keeping
    them, when `cancel` is set."""
    made = 0
    for item in work:
        for section in item.sections:
            if cancel is not None and cancel.is_set():
                return made
            pieces = generator.stream(
                summary_prompt(section, generator),
                max_new_tokens=SUMMARY_TOKENS,
                cancel=cancel,
            )
            text = clean_summary("".join(pieces))
            stats = generator.last_stats
            if stats is not None and stats.stop_reason == "cancelled":
                return made
            # Kept even when empty (a model that wrote nothing), so it is not asked again.
            store.add_summary(item.source.id, section.first, section.last, generator.name, text)
            made += 1
            if on_section is not None:
                on_section(item, section)
    return made
