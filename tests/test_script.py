"""Scripts read as speeches: cues, parentheticals and page breaks, on hand-made text and on
the real plays-public PDFs through pypdf."""

from __future__ import annotations

import pytest

from ragchat.answer.focus import focus_passages, passage_units
from ragchat.answer.prompts import build_rag_prompt
from ragchat.config import Settings
from ragchat.generation.formats import InstructFormat
from ragchat.ingest.script import Speech, is_script, speeches
from ragchat.records import Passage
from ragchat.retrieval.embedders import load_embedder


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory):
    return load_embedder("minilm", Settings(cache_dir=tmp_path_factory.mktemp("cache")))


SCENE = """He's a close man, and he's right, surely.

PEGEEN
(very sharply,
and turning)

Will you whisht? Who's speaking to you?

SHAWN

[retreating.] A bloody-handed murderer the like of...
MICHAEL
(with deference)

Would you stop here and be pot-boy, if we (MORE)

18.
MICHAEL (CONT'D)

gave you good wages?

ACT II

JIMMY"""


def test_speeches_name_their_speakers_across_page_breaks() -> None:
    assert is_script(SCENE)
    assert speeches(SCENE) == [
        Speech("", "", "He's a close man, and he's right, surely."),
        Speech("PEGEEN", "(very sharply, and turning)", "Will you whisht? Who's speaking to you?"),
        Speech("SHAWN", "", "[retreating.] A bloody-handed murderer the like of..."),
        Speech(
            "MICHAEL",
            "(with deference)",
            "Would you stop here and be pot-boy, if we gave you good wages?",
        ),
    ]
    rendered = [s.render() for s in speeches(SCENE)]
    assert (
        rendered[1] == "Pegeen (very sharply, and turning): Will you whisht? Who's speaking to you?"
    )
    # A speaker left at the end of a passage, with nothing said, is no speech; "ACT II" is
    # a heading, not a speaker.
    assert not any(s.speaker in ("JIMMY", "ACT II") for s in speeches(SCENE))


def test_prose_is_not_a_script() -> None:
    prose = (
        "THE LIGHTHOUSE\n\nThe lighthouse was built in 1871 by Margaret Alder.\n"
        "It stands on Gull Point.\n\nHISTORY\n\nIts light was first lit in 1872."
    )
    assert is_script("THE LIGHTHOUSE\nIt was built in 1871.") is False
    assert passage_units("Dr. Alder built it. It is tall.") == [
        "Dr. Alder built it.",
        "It is tall.",
    ]
    # Two upper-case headings are not two speakers.
    assert not is_script(prose)
    assert all(":" not in unit for unit in passage_units(prose))
    assert passage_units(prose, script=True)[0].startswith("The Lighthouse: ")


def _passage(text: str) -> Passage:
    return Passage(1, "play.pdf", "/x/play.pdf", 17, 18, 1.0, text)


def test_focus_picks_speeches_with_their_speakers(minilm) -> None:
    focused = focus_passages("Who asked him to be pot-boy?", [_passage(SCENE)], minilm, sentences=2)
    text = focused[0].text
    assert "Michael (with deference): Would you stop here and be pot-boy" in text
    # Few units: all kept, still rendered with their speakers.
    whole = focus_passages("Who spoke?", [_passage(SCENE)], minilm, sentences=8)
    assert whole[0].text.count(":") >= 3 and "PEGEEN" not in whole[0].text


def test_script_prompt_asks_for_the_readers_own_words() -> None:
    def prompt(script: bool) -> str:
        return build_rag_prompt(
            "Who asked him to be pot-boy?",
            [_passage(SCENE)],
            fmt=InstructFormat(),
            count_tokens=lambda text: len(text.split()),
            budget_tokens=800,
            script=script,
        ).text

    assert "play or screenplay" in prompt(True) and "a few words of your own" in prompt(True)
    assert "play or screenplay" not in prompt(False)


def test_the_plays_are_read_as_scripts(bench_dir) -> None:
    """Every page of the plays-public PDFs, as pypdf extracts them, reads as a script and
    keeps its speakers."""
    from ragchat.ingest.pdf import extract_document_inprocess

    path = bench_dir / "plays-public" / "docs" / "playboy_of_the_western_world.pdf"
    pages = [p for p in extract_document_inprocess(path).pages if len(p.text) > 400]
    assert len(pages) > 50
    scripted = [p for p in pages if is_script(p.text)]
    assert len(scripted) >= 0.9 * len(pages)
    names = {s.speaker for p in scripted for s in speeches(p.text)}
    assert {"CHRISTY", "PEGEEN", "MAHON", "WIDOW QUIN"} <= names


def test_a_plays_prose_stage_directions_are_read_as_the_play(tmp_path) -> None:
    """A document most of whose chunks are laid out as a script is one: its long prose stage
    directions are read as speeches too; an article with one quoted exchange is not."""
    from ragchat.answer.qa import _reads_as_script, script_document
    from ragchat.ingest.pipeline import ingest
    from ragchat.retrieval.retriever import open_retriever

    settings = Settings(cache_dir=tmp_path / "cache", index_dir=tmp_path / "indexes")
    direction = (
        "The scene is the blue and white room in the house of the Misses Throssel, where "
        "everything is white or blue and the street outside is broad and grass-grown. "
    ) * 12
    speeches_ = "".join(
        f"PHOEBE\n(at the window)\nIs that the captain, Susan? Line {i}.\n\n"
        f"SUSAN\nIt is, and he is coming up the street. Line {i}.\n\n"
        for i in range(40)
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "play.txt").write_text(f"ACT I\n\n{direction}\n\n{speeches_}")
    (docs / "article.txt").write_text(
        "The lighthouse was built in 1871 by the engineer Margaret Alder. " * 40
        + "\n\nKEEPER\nThe lamp is lit.\n\nPILOT\nI see it.\n"
    )
    ingest([docs], tmp_path / "idx", settings)
    retriever = open_retriever(tmp_path / "idx", settings)
    store = retriever.store
    by_name = {s.name: s.id for s in store.sources()}
    assert script_document(store, by_name["play.txt"])
    assert not script_document(store, by_name["article.txt"])
    passages = retriever.search("the blue and white room in the house of the Misses Throssel", 3)
    prose = [p for p in passages if p.doc == "play.txt" and not is_script(p.text)]
    assert prose  # a chunk of the play that does not look like one
    ids = [p.chunk_id for p in passages]
    reads = dict(zip(ids, _reads_as_script(retriever, passages), strict=True))
    assert all(reads[p.chunk_id] for p in prose)
    assert not any(reads[p.chunk_id] for p in passages if p.doc == "article.txt")
    retriever.close()
