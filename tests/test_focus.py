"""Question-focused passages with the real packaged MiniLM embedder."""

from __future__ import annotations

import pytest

from ragchat.answer.abstention import question_coverage as focus_question_coverage
from ragchat.answer.focus import GAP, focus_passages, split_sentences
from ragchat.config import Settings
from ragchat.records import Passage
from ragchat.retrieval.embedders import load_embedder


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory):
    return load_embedder("minilm", Settings(cache_dir=tmp_path_factory.mktemp("cache")))


def test_split_sentences_keeps_abbreviations_and_numbers() -> None:
    text = "Dr. Alder built it in 1871. It is 30 m tall! Was it lit?  Yes: by U.S. oil."
    assert split_sentences(text) == [
        "Dr. Alder built it in 1871.",
        "It is 30 m tall!",
        "Was it lit?",
        "Yes: by U.S. oil.",
    ]
    assert split_sentences(
        "It was Brown v. Board of Education. Capt. Hale ruled. I won't. No."
    ) == [
        "It was Brown v. Board of Education.",
        "Capt. Hale ruled.",
        "I won't.",
        "No.",
    ]
    assert split_sentences("no full stop here") == ["no full stop here"]
    assert split_sentences("灯台は1871年に建てられた。高さは30メートル。") == [
        "灯台は1871年に建てられた。高さは30メートル。"
    ]


def passage(chunk_id: int, text: str, page: int = 1) -> Passage:
    return Passage(chunk_id, "guide.pdf", "/x/guide.pdf", page, page, 1.0 / chunk_id, text)


def test_focus_keeps_the_sentences_that_answer(minilm) -> None:
    passages = [
        passage(
            1,
            "The station has a museum. The lighthouse was built by Margaret Alder in 1871. "
            "Its keeper's cottage is now a cafe. Parking is free on Sundays.",
        ),
        passage(
            2,
            "Ferries leave hourly in summer. The lamp could be seen from 18 nautical miles "
            "away. Tickets are sold at the pier.",
            page=4,
        ),
        passage(3, "The gift shop sells maps. The beach is sandy."),
    ]
    focused = focus_passages("Who built the lighthouse?", passages, minilm, sentences=2)
    assert focused[0].chunk_id == 1
    assert "built by Margaret Alder in 1871." in focused[0].text
    assert "Parking" not in focused[0].text
    kept = " ".join(p.text for p in focused)
    assert sum(kept.count(s) for s in ("museum", "cafe", "Parking", "gift", "beach")) <= 1
    assert all(p.page == q.page for p in focused for q in passages if q.chunk_id == p.chunk_id)
    # Passage order is kept; a passage with no chosen sentence is dropped.
    ids = [p.chunk_id for p in focused]
    assert ids == sorted(ids) and len(ids) <= 2


def test_focus_marks_gaps_and_keeps_short_input_whole(minilm) -> None:
    text = (
        "Alder was born in Leith. She moved to the island in 1860. She married a fisherman. "
        "The lighthouse was built by Alder in 1871."
    )
    focused = focus_passages(
        "Where was Alder born and who built the lighthouse?",
        [passage(1, text)],
        minilm,
        sentences=2,
    )
    assert focused[0].text.startswith("Alder was born in Leith.")
    assert GAP in focused[0].text
    short = [passage(1, "One sentence only.")]
    assert focus_passages("anything?", short, minilm, sentences=3) == short


def test_question_coverage_ignores_stopwords_and_asking_words() -> None:
    passages = [passage(1, "The lighthouse was built by Margaret Alder in 1871.")]

    def idf(term: str) -> float:
        return 1.0

    assert focus_question_coverage("Who won the world cup?", passages, idf) == 0.0
    assert focus_question_coverage("Who built the lighthouse?", passages, idf) == 1.0
    assert focus_question_coverage("Who built the lighthouse in Leith?", passages, idf) == 2 / 3
    assert focus_question_coverage("Who was it?", passages, idf) == 1.0  # nothing to check


def test_a_scripts_speech_can_keep_the_cue_before_it(minilm) -> None:
    scene = Passage(
        doc="play.pdf",
        path="play.pdf",
        page=3,
        page_end=3,
        chunk_id=1,
        score=1.0,
        text=(
            "MARY\nThe kettle's boiling and the bread is in.\n"
            "ANNE\nWhere did you hide the letter from the priest?\n"
            "TOM\nUnder the loose stone by the hearth, where no one looks.\n"
            "MARY\nHush now, the door."
        ),
    )
    question = "Where is the stone by the hearth?"
    alone = focus_passages(question, [scene], minilm, sentences=1, script=True)
    assert alone[0].text.startswith("Tom: Under the loose stone")
    cued = focus_passages(question, [scene], minilm, sentences=1, script=True, neighbours=1)
    assert cued[0].text == (
        "Anne: Where did you hide the letter from the priest? "
        "Tom: Under the loose stone by the hearth, where no one looks."
    )


class _Counting:
    """The real embedder, counting the passage texts it is asked to embed."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self.passage_texts = 0

    def embed(self, texts, *, kind, **kwargs):
        if kind == "passage":
            self.passage_texts += len(texts)
        return self.embedder.embed(texts, kind=kind, **kwargs)


def test_focus_embeds_only_the_lexically_best_candidates(minilm) -> None:
    """Of 30 sentences, the 12 that share most words with the question are embedded; the
    answer's sentence is among them and is kept."""
    from ragchat.answer.focus import CANDIDATES

    filler = [f"The harbour wall was repaired in section {i} by the council." for i in range(29)]
    answer = "The lighthouse keeper Tobias Wren lit the lamp for the first time in 1871."
    texts = [" ".join(filler[:10]), " ".join([*filler[10:20], answer]), " ".join(filler[20:])]
    passages = [Passage(i, "p.pdf", "p.pdf", i + 1, i + 1, 1.0, t) for i, t in enumerate(texts)]
    counting = _Counting(minilm)
    focused = focus_passages("Who lit the lighthouse lamp first?", passages, counting, sentences=3)
    assert counting.passage_texts == CANDIDATES
    assert any(answer in p.text for p in focused)
