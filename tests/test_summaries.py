"""A script's story map: sections summarised after ingest, kept in the index, and given to
the reader beside the speeches (answer/summaries.py, answer/story.py)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from ragchat.answer.qa import AnswerPolicy, answer
from ragchat.answer.story import is_summary, story_passages
from ragchat.answer.summaries import clean_summary, pending, sections, summarise
from ragchat.config import Settings
from ragchat.index.store import IndexStore
from ragchat.ingest.pipeline import ingest
from ragchat.records import Page
from ragchat.retrieval.retriever import open_retriever
from tests.scripted import ScriptedGenerator


def _play(acts: int = 3) -> str:
    """A play of `acts` acts, each a page (form feed) of speeches about its own event."""
    events = ["the storm wrecks the boat", "Tom is married to Anne", "the house burns down"]
    out = []
    for act in range(acts):
        out.append(f"\fACT {act + 1}\n" if act else f"ACT {act + 1}\n")
        for i in range(30):
            out.append(f"MARY\nDid you hear that {events[act % 3]}? Line {act}.{i}.\n")
            out.append(f"ANNE\n(at the window)\nI did, and I saw it, Mary. Line {act}.{i}.\n")
    return "\n".join(out)


def _index(tmp_path: Path, text: str) -> tuple[Path, Settings]:
    settings = Settings(cache_dir=tmp_path / "cache", index_dir=tmp_path / "indexes")
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "play.txt").write_text(text)
    (docs / "article.txt").write_text("The lighthouse was built in 1871 by Margaret Alder. " * 60)
    ingest([docs], tmp_path / "idx", settings)
    return tmp_path / "idx", settings


def test_sections_are_runs_of_whole_pages_of_enough_words() -> None:
    pages = [Page(n, "word " * w) for n, w in [(1, 500), (2, 500), (3, 100), (4, 950), (5, 40)]]
    got = [(s.first, s.last) for s in sections(pages, words=900)]
    assert got == [(1, 2), (3, 4), (5, 5)]
    assert sections(pages, words=900)[0].text.count("word") == 1000


def test_a_summary_loses_its_lead_in_markup_and_a_sentence_cut_off() -> None:
    raw = "In this part of the play, **Tom** takes the boat.\nMary waits. The storm comes. " * 2
    assert clean_summary(raw) == (
        "Tom takes the boat. Mary waits. The storm comes. In this part of the play, Tom "
        "takes the boat."
    )
    assert clean_summary("Tom takes the boat. Mary waits for him on the") == ("Tom takes the boat.")
    listed = (
        "In this part of the play, the two sisters quarrel. Here's a summary of what "
        "happens:\n\n1. **Mary** hides the letter - again.\n2. Anne finds it.\n- Tom"
    )
    assert clean_summary(listed) == (
        "The two sisters quarrel. Mary hides the letter - again. Anne finds it."
    )
    assert clean_summary("They meet. Here is a summary of the events: Tom: leaves.") == (
        "They meet. Tom: leaves."
    )
    # Lead-ins the default model wrote in 9 of the plays' 43 summaries (stop 31).
    assert clean_summary("The following events occur: Tom leaves. Mary waits.") == (
        "Tom leaves. Mary waits."
    )
    assert clean_summary("They quarrel. Here is a summary of the key events: Tom leaves.") == (
        "They quarrel. Tom leaves."
    )


def test_scripts_are_summarised_once_and_kept_in_the_index(tmp_path: Path) -> None:
    """Only the script is pending; each section's summary is stored as it is made, an
    interrupted run keeps what it made, and a rerun does only the rest."""
    path, _ = _index(tmp_path, _play())
    generator = ScriptedGenerator("In this part of the play, Mary and Anne talk.")
    with IndexStore.open(path) as store:
        work = pending(store)
        assert [item.source.name for item in work] == ["play.txt"]
        total = len(work[0].sections)
        assert total >= 2
        stop = threading.Event()
        made = summarise(store, work, generator, on_section=lambda *_: stop.set(), cancel=stop)
        assert made == 1
        assert len(store.summaries()) == 1
        rest = pending(store)
        assert len(rest[0].sections) == total - 1
        assert summarise(store, rest, generator) == total - 1
        assert pending(store) == []
        kept = store.summaries()
        assert [s.text for s in kept] == ["Mary and Anne talk."] * total
        assert {s.doc for s in kept} == {"play.txt"}
        pages = [(s.page_start, s.page_end) for s in kept]
        assert pages == sorted(pages)


def test_a_changed_script_loses_its_old_summaries(tmp_path: Path) -> None:
    path, settings = _index(tmp_path, _play())
    with IndexStore.open(path) as store:
        summarise(store, pending(store), ScriptedGenerator("Mary and Anne talk."))
        assert store.summaries()
    (tmp_path / "docs" / "play.txt").write_text(_play(acts=2))
    ingest([tmp_path / "docs"], path, settings)
    with IndexStore.open(path) as store:
        assert store.summaries() == []
        assert pending(store)


def test_a_rebuild_keeps_the_summaries(tmp_path: Path) -> None:
    from ragchat.ingest.pipeline import rebuild

    path, settings = _index(tmp_path, _play())
    with IndexStore.open(path) as store:
        summarise(store, pending(store), ScriptedGenerator("Mary and Anne talk."))
        before = [(s.doc, s.page_start, s.page_end, s.text) for s in store.summaries()]
    rebuild(path, settings, chunk_tokens=120)
    with IndexStore.open(path) as store:
        assert store.config.chunk_tokens == 120
        assert [(s.doc, s.page_start, s.page_end, s.text) for s in store.summaries()] == before
        assert pending(store) == []


def test_a_script_question_is_answered_with_the_matching_summaries(tmp_path: Path) -> None:
    """The summary of the section about the question comes before the speeches (with the
    real MiniLM embedder ranking them); an index without summaries answers as before."""
    path, settings = _index(tmp_path, _play())
    retriever = open_retriever(path, settings)
    generator = ScriptedGenerator("the storm [1]")
    question = "What wrecks the boat?"
    answer(question, retriever, generator, policy=AnswerPolicy())
    assert "Summary of these pages" not in generator.prompts[-1]

    events = {1: "A storm wrecks the boat.", 2: "Tom marries Anne.", 3: "The house burns."}
    with IndexStore.open(path) as store:
        work = pending(store)
        for item in work:
            for n, section in enumerate(item.sections):
                store.add_summary(
                    item.source.id, section.first, section.last, "t", events[n % 3 + 1]
                )
        play = work[0].source.id
        best = story_passages(question, store, retriever.embedder, [play], n=1)
        assert [p.text for p in best] == ["Summary of these pages: A storm wrecks the boat."]
        assert is_summary(best[0]) and best[0].doc == "play.txt"
        assert story_passages(question, store, retriever.embedder, [play + 99]) == []

    result = answer(question, retriever, generator, policy=AnswerPolicy(story_sections=2))
    prompt = generator.prompts[-1]
    assert "Summary of these pages: A storm wrecks the boat." in prompt
    # The summaries are passages [1] and [2], the speeches follow.
    assert re.search(r"\[1\] \(play\.txt [^)]*\) Summary of these pages", prompt)
    assert re.search(r"\[3\] \(play\.txt [^)]*\) (?!Summary)", prompt)
    assert result.signals["story"] == 2.0
    assert result.citations and result.citations[0].doc == "play.txt"
    assert not result.abstained
    retriever.close()


def test_the_ingest_command_summarises_a_script_with_a_real_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragchat ingest` has the model (SmolLM2 here, the default in use) summarise the
    script after indexing it; a second ingest has nothing left to do; --no-summaries skips
    it."""
    from ragchat.cli.main import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "play.txt").write_text(_play(acts=1))
    monkeypatch.setenv("RAGCHAT_MODEL", "smollm2")
    assert main(["ingest", str(docs), "--index", "p", "--quiet", "--no-summaries"]) == 0
    index = tmp_path / "indexes" / "p"
    with IndexStore.open(index) as store:
        assert store.summaries() == [] and pending(store)
    assert main(["ingest", str(docs), "--index", "p", "--quiet"]) == 0
    with IndexStore.open(index) as store:
        kept = store.summaries()
        assert kept and pending(store) == []
        assert all(s.model == "smollm2" for s in kept)
        assert any(len(s.text.split()) >= 3 for s in kept)
