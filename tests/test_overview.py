"""Questions about the documents as a whole ("Summarize the document."): which questions
are, and what the reader is given for them (real ingest, real MiniLM, real FAISS; the
scripted generator of tests/scripted.py stands in for the model, test_qa.py has the real
one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragchat.answer.overview import MAX_SOURCES, overview_sources, spread
from ragchat.answer.qa import AnswerPolicy, answer
from ragchat.answer.story import is_summary
from ragchat.config import Settings
from ragchat.index.store import IndexStore, SourceRecord
from ragchat.ingest.pipeline import ingest
from ragchat.retrieval.retriever import open_retriever
from tests.scripted import ScriptedGenerator


def _source(n: int, name: str) -> SourceRecord:
    return SourceRecord(n, f"/docs/{name}", name, "0" * 64, 1, 1, 1, "pypdf", 0.0, 3)


SOURCES = [_source(1, "gull-point.pdf"), _source(2, "Fresno_California.pdf")]


@pytest.mark.parametrize(
    "question",
    [
        "Summarize the document.",
        "summarise this",
        "What is this PDF about?",
        "What's the play about?",
        "Give me an overview.",
        "What are the main points of the paper?",
        "Give me a brief summary of the documents, please.",
    ],
)
def test_questions_about_the_whole_documents_are_overviews(question: str) -> None:
    assert overview_sources(question, SOURCES) == SOURCES


def test_an_overview_of_a_named_document_reads_that_one() -> None:
    assert overview_sources("Summarize gull-point.pdf", SOURCES) == SOURCES[:1]
    assert overview_sources("What is the Fresno document about?", SOURCES) == SOURCES[1:]


@pytest.mark.parametrize(
    "question",
    [
        "Summarize the history of the lighthouse.",
        "What does the document say about the fog bell?",
        "What is the lighthouse made of?",
        "Who built the lighthouse?",
        "Tell me about Margaret Alder.",
        "Summarize Fresno's economy.",
    ],
)
def test_questions_about_something_in_the_documents_are_not(question: str) -> None:
    assert overview_sources(question, SOURCES) is None


def test_spread_goes_coarse_to_fine_and_takes_every_index_once() -> None:
    assert spread(0) == [] and spread(1) == [0] and spread(2) == [0, 1]
    assert spread(5) == [0, 4, 2, 1, 3]
    for n in (3, 7, 10, 33):
        assert sorted(spread(n)) == list(range(n))
        assert spread(n)[:2] == [0, n - 1]


def _docs(tmp_path: Path, texts: dict[str, str]) -> tuple[Path, Settings]:
    settings = Settings(cache_dir=tmp_path / "cache", index_dir=tmp_path / "indexes")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in texts.items():
        (docs / name).write_text(text)
    ingest([docs], tmp_path / "idx", settings)
    return tmp_path / "idx", settings


def _history(steps: int) -> str:
    return " ".join(
        f"In year {1800 + 10 * n} the harbour board met for the {n + 1}th time and "
        f"recorded decision number {n + 1} about the pier, the light and the dues."
        for n in range(steps)
    )


def test_summarize_the_document_reads_its_first_and_last_passages(tmp_path: Path) -> None:
    """Before, "Summarize the document." was refused: "document" occurs in no chunk. Now
    the model reads chunks spread over the document, in order, the first and the last
    among them, and its cited sentences are the answer (no retrieval rule applies)."""
    index, settings = _docs(tmp_path, {"harbour.txt": _history(120)})
    with IndexStore.open(index) as store:
        ids = store.source_chunk_ids(store.sources()[0].id).tolist()
    assert len(ids) > 6
    retriever = open_retriever(index, settings)
    generator = ScriptedGenerator("The board met often [1]. It ruled on the pier [2].")
    result = answer("Summarize the document.", retriever, generator, policy=AnswerPolicy())
    retriever.close()
    assert not result.abstained and result.signals["overview"] == 1.0
    given = [p.chunk_id for p in result.passages]
    assert given[0] == ids[0] and given[-1] == ids[-1] and given == sorted(given)
    assert 2 <= len(given) < len(ids)
    assert "1800" in generator.prompts[-1]  # the opening sentence
    assert result.citations and {c.doc for c in result.citations} == {"harbour.txt"}
    assert result.text == "The board met often [harbour.txt]. It ruled on the pier [harbour.txt]."


def test_an_overview_reads_the_section_summaries_where_the_index_has_them(
    tmp_path: Path,
) -> None:
    index, settings = _docs(tmp_path, {"harbour.txt": _history(120)})
    with IndexStore.open(index) as store:
        source = store.sources()[0].id
        for n, event in enumerate(["The board is founded.", "The pier is built.", "It ends."]):
            store.add_summary(source, n + 1, n + 1, "t", event)
    retriever = open_retriever(index, settings)
    generator = ScriptedGenerator("The board built a pier [2].")
    result = answer("What is this document about?", retriever, generator, policy=AnswerPolicy())
    retriever.close()
    assert all(is_summary(p) for p in result.passages)
    assert [p.text for p in result.passages] == [
        "Summary of these pages: The board is founded.",
        "Summary of these pages: The pier is built.",
        "Summary of these pages: It ends.",
    ]
    assert not result.abstained


def test_many_documents_get_their_list_and_a_named_one_its_summary(tmp_path: Path) -> None:
    names = [f"report-{n}.txt" for n in range(MAX_SOURCES + 1)]
    index, settings = _docs(tmp_path, {name: _history(8) for name in names})
    retriever = open_retriever(index, settings)
    generator = ScriptedGenerator("The board met [1].")
    listed = answer("Summarize the documents.", retriever, generator, policy=AnswerPolicy())
    assert not generator.prompts  # nothing generated
    assert listed.text.startswith(f"This index holds {len(names)} documents: report-0.txt")
    assert 'e.g. "Summarize report-0.txt"' in listed.text and not listed.abstained
    one = answer("Summarize report-3.txt", retriever, generator, policy=AnswerPolicy())
    retriever.close()
    assert {p.doc for p in one.passages} == {"report-3.txt"}
    assert one.citations[0].doc == "report-3.txt"


def test_uncited_sentences_are_cited_to_the_passage_that_holds_them() -> None:
    from ragchat.answer.citations import cite_uncited
    from ragchat.records import Passage

    given = [
        Passage(1, "a.pdf", "a.pdf", 1, 1, 1.0, "The tower was built of local granite in 1869."),
        Passage(2, "a.pdf", "a.pdf", 3, 3, 1.0, "The light was automated in 1962."),
    ]
    text = (
        "The tower was built of granite. It was automated in 1962 [2]. The light was "
        "automated in 1962. Visitors love the cafe and its cakes. The granite tower "
        "was automated. "
    )
    # The last sentence joins both passages: neither alone holds half its words.
    assert cite_uncited(text, given, share=0.75) == (
        "The tower was built of granite [1]. It was automated in 1962 [2]. The light was "
        "automated in 1962 [2]. Visitors love the cafe and its cakes. The granite tower "
        "was automated [1, 2]."
    )
