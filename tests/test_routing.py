"""Routing a question to the one document it names (retrieval/routing.py): the pure rule,
and the real retriever over two real PDFs (pypdf, the packaged MiniLM, FAISS, BM25)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pdfmaker import make_pdf

from ragchat.config import Settings, load_settings
from ragchat.ingest.pipeline import ingest
from ragchat.retrieval.retriever import Retriever, open_retriever
from ragchat.retrieval.routing import NAME_MIN_CHUNKS, NAME_SHARE, ROUTE_MARGIN, named_source, route


def test_a_question_naming_what_one_document_holds_is_routed_there() -> None:
    weights = {"christi": 4.0, "kill": 2.0, "father": 1.0}
    holders = {"christi": {1}, "kill": {1, 2}, "father": {1, 2}}
    assert route(weights, holders) == 1


def test_no_route_when_two_documents_hold_every_term() -> None:
    weights = {"lamp": 2.0, "oil": 2.0}
    assert route(weights, {"lamp": {1, 2}, "oil": {1, 2, 3}}) is None


def test_no_route_when_the_lead_is_below_the_margin() -> None:
    # Source 1 holds every term, but source 2 holds all but a light common word.
    weights = {"mediterranean": 5.0, "death": 4.0, "make": 1.0}
    holders = {"mediterranean": {1, 2}, "death": {1, 2}, "make": {1}}
    assert ROUTE_MARGIN > 1.0 / 10.0
    assert route(weights, holders) is None
    weights["make"] = 3.0  # now the missing word weighs a quarter of the question
    assert route(weights, holders) == 1


def test_words_no_document_holds_are_ignored_and_none_found_routes_nowhere() -> None:
    assert route({"zeppelin": 6.0, "christi": 4.0}, {"christi": {2}}) == 2
    assert route({"zeppelin": 6.0}, {}) is None
    assert route({}, {}) is None


def test_a_term_only_one_document_holds_throughout_is_its_name() -> None:
    sizes = {1: 200, 2: 250}
    # "christi" is in most of the first play's chunks and none of the other's; "love" in both.
    assert named_source({"christi": {1: 150}, "love": {1: 9, 2: 14}}, sizes) == 1
    # A rare word of the other play (one chunk) is no name of it: still the first play.
    assert named_source({"christi": {1: 150}, "regain": {2: 1}}, sizes) == 1
    # Names of both plays: nowhere.
    assert named_source({"christi": {1: 150}, "phoebe": {2: 120}}, sizes) is None
    # Only one document holds it, but in too few of its chunks to be what it is about.
    few = int(NAME_SHARE * sizes[1]) - 1
    assert few >= NAME_MIN_CHUNKS and named_source({"lighthous": {1: few}}, sizes) is None
    assert named_source({"lighthous": {1: NAME_MIN_CHUNKS - 1}}, {1: 5}) is None
    assert named_source({}, sizes) is None


PLAYBOY = [
    "CHRISTY: I killed my father with a loy, a week since, and buried him in the field.\n"
    "PEGEEN: You did not. Is it the truth you're telling, Christy Mahon?",
    "SHAWN: The whole town is praising Christy for the killing of his da.\n"
    "PEGEEN: Let him stop in the tavern as the pot-boy, and I'll not be afraid.",
    "WIDOW QUIN: Come with me, Christy, I've a fine room and a good fire.\n"
    "CHRISTY: I'll stay in the tavern with Pegeen, where there's kindness.",
]
QUALITY = [
    "PHOEBE: Our father left us the little house in Quality Street.\n"
    "SUSAN: And Valentine Brown is gone to the war against Napoleon.",
    "PHOEBE: We shall open a school for the children of the street.\n"
    "SUSAN: The rent must be paid, sister, whatever the neighbours say.",
    "VALENTINE: Ten years at the war, and I come home to find a school.\n"
    "PHOEBE: Who killed the spirit in me? The years did, Captain Brown.",
]


@pytest.fixture(scope="module")
def two_plays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    root = tmp_path_factory.mktemp("plays")
    docs = root / "docs"
    docs.mkdir()
    make_pdf(PLAYBOY, docs / "playboy.pdf")
    make_pdf(QUALITY, docs / "quality.pdf")
    settings = load_settings({"index_dir": root / "indexes", "chunk_tokens": 40})
    index = root / "indexes" / "plays"
    ingest([docs], index, settings)
    return index, settings


def test_passages_come_from_the_play_the_question_names(two_plays) -> None:
    index, settings = two_plays
    retriever = open_retriever(index, settings.replace(route_documents=True))
    question = "Who did Christy think he killed, and where did he stay?"
    # Unrouted, the search reaches into the other play (its father, its killing).
    plain = Retriever(retriever.store, retriever.embedder, route=False)
    unrouted, unrouted_evidence = plain.search_with_evidence(question, 5)
    assert "routed" not in unrouted_evidence
    assert {p.doc for p in unrouted} == {"playboy.pdf", "quality.pdf"}
    # Routed, the other play's passages are dropped; the rest keep their order.
    passages, evidence = retriever.search_with_evidence(question, 5)
    assert evidence["routed"] == 1.0
    assert passages == [p for p in unrouted if p.doc == "playboy.pdf"]
    # The evidence the off-topic rule reads is the same either way.
    assert unrouted_evidence["dense_top"] == evidence["dense_top"]
    retriever.close()


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
def test_every_method_is_routed(two_plays, method: str) -> None:
    index, settings = two_plays
    retriever = open_retriever(index, settings.replace(retrieval=method, route_documents=True))
    passages = retriever.search("Where did Phoebe open the school?", 6)
    assert passages and {p.doc for p in passages} == {"quality.pdf"}
    retriever.close()


def test_a_question_naming_a_character_is_routed_by_the_name(two_plays) -> None:
    index, settings = two_plays
    retriever = open_retriever(index, settings.replace(route_documents=True))
    question = "Was Christy ever as brave as Napoleon?"
    # No play holds every term ("napoleon" is in one speech of the other play), so the
    # weight rule can't route; "christy" is in most chunks of one play, none of the other.
    lexical = retriever.store.lexical_index()
    holders = {
        t: set(retriever.store.chunk_sources(lexical.chunks_with(t)).tolist())
        for t in ("christi", "war")
    }
    assert len(holders["christi"]) == 1 and holders["christi"] != holders["war"]
    passages, evidence = retriever.search_with_evidence(question, 6)
    assert evidence["routed"] == 1.0
    assert passages and {p.doc for p in passages} == {"playboy.pdf"}
    retriever.close()


def test_a_question_both_plays_answer_is_not_routed(two_plays) -> None:
    index, settings = two_plays
    retriever = open_retriever(index, settings.replace(route_documents=True))
    passages, evidence = retriever.search_with_evidence("Who killed whom?", 6)
    assert "routed" not in evidence
    assert {p.doc for p in passages} == {"playboy.pdf", "quality.pdf"}
    retriever.close()


def test_routing_is_on_by_default_and_a_setting_switches_it_off(two_plays) -> None:
    index, settings = two_plays
    question = "Where did Phoebe open the school?"
    routed = open_retriever(index, settings)
    passages, evidence = routed.search_with_evidence(question, 6)
    assert evidence["routed"] == 1.0 and {p.doc for p in passages} == {"quality.pdf"}
    routed.close()
    plain = open_retriever(index, settings.replace(route_documents=False))
    passages, evidence = plain.search_with_evidence(question, 6)
    assert "routed" not in evidence
    assert {p.doc for p in passages} == {"playboy.pdf", "quality.pdf"}
    plain.close()
