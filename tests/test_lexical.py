"""BM25 keyword index: real PyStemmer, real bm25s as the reference scorer, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragchat.errors import IndexMismatchError, IndexNotFoundError
from ragchat.index.lexical import (
    FILE_NAME,
    LexicalIndex,
    closest_spelling,
    edit_distance,
    raw_tokens,
    tokenize,
)

TEXTS = [
    "The lighthouse keeper climbed the spiral stairs every evening to light the lamp.",
    "A cat sat on the warm mat while the rain fell on the harbour.",
    "Harbour pilots guide large ships past the rocks near the lighthouse.",
    "Ships carried spices, silk and tea between distant ports for centuries.",
    "The committee approved the budget for the new railway station.",
]
IDS = [101, 7, 55, 3000, 42]


@pytest.fixture
def index() -> LexicalIndex:
    return LexicalIndex.build(IDS, TEXTS)


def test_exact_term_ranks_its_chunk_first(index: LexicalIndex) -> None:
    assert index.search("railway budget", 3)[0][0] == 42
    assert index.search("spices silk", 3)[0][0] == 3000


def test_results_are_best_first_and_only_matching_chunks(index: LexicalIndex) -> None:
    results = index.search("harbour", 10)
    assert {chunk_id for chunk_id, _ in results} == {7, 55}
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(score > 0 for score in scores)


def test_stemming_matches_plural_to_singular(index: LexicalIndex) -> None:
    found = [chunk_id for chunk_id, _ in index.search("lighthouses", 5)]
    assert set(found) == {101, 55}
    assert tokenize("lighthouses") == tokenize("lighthouse")


def test_ids_are_the_callers_not_positions(index: LexicalIndex) -> None:
    returned = {chunk_id for chunk_id, _ in index.search("the ships cat lamp station", 10)}
    assert returned <= set(IDS)
    assert 3000 in returned and 101 in returned


def test_k_limits_results(index: LexicalIndex) -> None:
    assert len(index.search("the harbour lighthouse ships", 2)) == 2
    assert index.search("harbour", 0) == []


def test_query_without_known_terms_finds_nothing(index: LexicalIndex) -> None:
    assert index.search("zeppelin", 5) == []
    assert index.search("", 5) == []
    assert index.search("!!! ???", 5) == []


def test_scores_equal_bm25s_lucene_on_the_same_tokens() -> None:
    import bm25s

    corpus_tokens = [tokenize(t) for t in TEXTS]
    reference = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    reference.index(corpus_tokens, show_progress=False)
    ours = LexicalIndex.build(list(range(len(TEXTS))), TEXTS)
    for query in ("lighthouse keeper", "harbour ships", "railway"):
        expected = reference.get_scores(tokenize(query))
        got = np.zeros(len(TEXTS))
        for chunk_id, score in ours.search(query, len(TEXTS)):
            got[chunk_id] = score
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(index: LexicalIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "lexical")
    assert [p.name for p in (tmp_path / "lexical").iterdir()] == [FILE_NAME]
    loaded = LexicalIndex.load(tmp_path / "lexical")
    assert len(loaded) == len(index)
    for query in ("lighthouse", "harbour ships", "budget"):
        assert loaded.search(query, 5) == index.search(query, 5)


def test_save_replaces_previous_file(index: LexicalIndex, tmp_path: Path) -> None:
    index.save(tmp_path)
    LexicalIndex.build([1], ["only zeppelins here"]).save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert len(loaded) == 1
    assert loaded.search("zeppelin", 3)[0][0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_empty_index(tmp_path: Path) -> None:
    empty = LexicalIndex.build([], [])
    assert len(empty) == 0
    assert empty.search("anything", 5) == []
    empty.save(tmp_path)
    assert LexicalIndex.load(tmp_path).search("anything", 5) == []


def test_chunks_with_no_terms_are_kept_but_never_found() -> None:
    index = LexicalIndex.build([1, 2], ["", "the lighthouse"])
    assert len(index) == 2
    assert [chunk_id for chunk_id, _ in index.search("lighthouse", 5)] == [2]


def test_missing_index_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="ingest"):
        LexicalIndex.load(tmp_path)


def test_damaged_file_is_an_index_error(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a zip file at all")
    with pytest.raises(IndexMismatchError, match="damaged"):
        LexicalIndex.load(tmp_path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ids"):
        LexicalIndex.build([1, 2], ["one text"])
    with pytest.raises(ValueError, match="unique"):
        LexicalIndex.build([1, 1], ["a lighthouse", "a harbour"])


def test_japanese_is_split_into_character_ngrams() -> None:
    tokens = raw_tokens("東京は日本の首都です。")
    assert "首都" in tokens and "東京" in tokens and "首" in tokens
    assert "東京は日本の首都です" not in tokens


def test_cjk_text_is_findable() -> None:
    texts = [
        "東京は日本の首都です。人口は約千四百万人です。",
        "富士山は日本で一番高い山です。",
        "北京是中华人民共和国的首都。",
        "The capital of France is Paris.",
    ]
    index = LexicalIndex.build([1, 2, 3, 4], texts)
    assert index.search("富士山", 4)[0][0] == 2
    assert index.search("日本の首都", 4)[0][0] == 1
    assert index.search("北京", 4)[0][0] == 3
    assert index.search("Paris", 4)[0][0] == 4


def test_scripts_with_combining_marks_stay_whole_words() -> None:
    assert raw_tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    index = LexicalIndex.build([1, 2], ["हिन्दी भाषा भारत में बोली जाती है", "English text"])
    assert index.search("हिन्दी", 2)[0][0] == 1


def test_fullwidth_and_case_are_normalised() -> None:
    assert raw_tokens("ＲＡＭ Ram") == ["ram", "ram"]


def test_rebuild_with_reuse_equals_a_full_rebuild(index: LexicalIndex) -> None:
    ids = [7, 55, 3000, 42, 9]  # 101 removed, 9 added
    texts = [*TEXTS[1:], "A new chapter about lighthouses and the keeper's logbook."]
    reused = LexicalIndex.build(ids, texts, reuse=index)
    fresh = LexicalIndex.build(ids, texts)
    assert len(reused) == 5
    assert sorted(reused.vocab) == sorted(fresh.vocab)
    for query in ("lighthouse keeper", "harbour", "spiral stairs", "railway", "logbook"):
        got, want = reused.search(query, 5), fresh.search(query, 5)
        assert [c for c, _ in got] == [c for c, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5)


def test_stopwords_are_kept_by_default_and_dropped_on_request() -> None:
    assert "the" in tokenize("the lighthouse")
    assert "the" not in tokenize("the lighthouse", stopwords=True)
    index = LexicalIndex.build([1, 2], ["The Who played", "a dog barked"])
    assert index.search("the who", 2)[0][0] == 1
    filtered = LexicalIndex.build([1, 2], ["The Who played", "a dog barked"], stopwords=True)
    assert filtered.search("the", 2) == []
    assert filtered.stopwords and not index.stopwords


def test_settings_survive_save_and_load(tmp_path: Path) -> None:
    LexicalIndex.build([1, 2], ["the cat", "a dog"], stopwords=True, k1=1.2, b=0.5).save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert (loaded.stopwords, loaded.k1, loaded.b) == (True, 1.2, 0.5)
    assert loaded.search("the", 2) == []


def test_reuse_retokenizes_an_id_whose_text_changed(index: LexicalIndex) -> None:
    # SQLite may hand out a deleted chunk's id again, for another text
    texts = [*TEXTS[:4], "An entirely different chunk about zeppelins."]
    reused = LexicalIndex.build(IDS, texts, reuse=index)
    assert reused.search("zeppelin", 3)[0][0] == 42
    assert reused.search("railway budget", 3) == []


def test_reuse_survives_save_and_load(index: LexicalIndex, tmp_path: Path) -> None:
    index.save(tmp_path)
    old = LexicalIndex.load(tmp_path)
    ids, texts = [*IDS, 8], [*TEXTS, "Lighthouses of the northern coast."]
    reused = LexicalIndex.build(ids, texts, reuse=old)
    fresh = LexicalIndex.build(ids, texts)
    got, want = reused.search("lighthouse coast", 6), fresh.search("lighthouse coast", 6)
    assert [c for c, _ in got] == [c for c, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5)


def test_idf_ranks_rare_terms_above_common_ones() -> None:
    texts = ["the lighthouse keeper", "the keeper of bees", "the harbour", "lighthouse lamp"]
    index = LexicalIndex.build([1, 2, 3, 4], texts)
    (keeper,) = tokenize("keeper")
    (lamp,) = tokenize("lamp")
    assert index.idf(lamp) > index.idf(keeper) > 0
    assert index.idf("zzzunseen") > index.idf(lamp)


def test_edit_distance_counts_an_adjacent_swap_as_one_edit() -> None:
    assert edit_distance("pheob", "phoeb", 2) == 1
    assert edit_distance("lighthous", "lighthouse", 2) == 1
    assert edit_distance("harbour", "harbor", 2) == 1
    assert edit_distance("kitten", "sitting", 5) == 3
    assert edit_distance("abc", "abcdefgh", 2) == 3  # past the limit: limit + 1


def test_a_misspelt_name_is_searched_as_the_name_the_index_holds() -> None:
    texts = ["Phoebe opens a school for the children.", "Valentine goes to the war."]
    index = LexicalIndex.build([1, 2], texts)
    assert index.respellings("Why does Pheobe open a school?") == {"pheob": "phoeb"}
    assert index.search("Pheobe", 2) == index.search("Phoebe", 2)
    assert index.search("Pheobe", 2)[0][0] == 1


def test_only_names_are_respelt_and_only_when_close() -> None:
    index = LexicalIndex.build(IDS, TEXTS)
    # a lower-case word the index lacks is a real word that is not there, not a misspelling
    assert index.respellings("how do the pilots reach the rocks") == {}
    assert index.respellings("Who is Lighthose's keeper?") == {"lighthos": "lighthous"}
    assert index.respellings("What does Bob eat?") == {}  # too short to guess
    assert index.respellings("Where is Madagascar?") == {}  # nothing close
    assert index.respellings("Where is the Lighthouse?") == {}  # known: nothing to do


def test_closest_spelling_prefers_the_more_frequent_of_equally_close_terms() -> None:
    frequency = {"harbor": 3, "harbur": 1, "harbors": 5}
    candidates = list(frequency)
    assert closest_spelling("harbar", candidates, frequency.__getitem__) == "harbor"
    assert closest_spelling("harb", candidates, frequency.__getitem__) is None  # too short
    assert closest_spelling("harbxyz", candidates, frequency.__getitem__) is None  # too far
    # another form of the word, not a misspelling of it
    assert closest_spelling("harbo", candidates, frequency.__getitem__) is None


def test_english_words_are_not_respelt_as_names() -> None:
    index = LexicalIndex.build([1], ["The ditch ran past the chink in the wall."])
    assert index.respellings("What do the Dutch export to China?") == {}


def test_unknown_names_are_the_names_no_chunk_holds() -> None:
    texts = ["Phoebe opens a school in Quality Street.", "Valentine goes to the war."]
    index = LexicalIndex.build([1, 2], texts)
    assert index.unknown_names("Where is Audra McDonald from?") == {"audra", "mcdonald"}
    assert index.unknown_names("Why does Phoebe open a school?") == set()  # held
    assert index.unknown_names("Why does Pheobe open a school?") == set()  # a misspelling
    assert index.unknown_names("What is the capital of Kenya?") == {"kenya"}  # real words too
    # the first word is capitalised as a sentence's; lower-case words are not names
    assert index.unknown_names("Madagascar: where is it?") == set()
    assert index.unknown_names("how did the pilots reach the rocks") == set()


def test_a_questions_content_terms_leave_out_how_it_is_asked() -> None:
    """Asking words carry no topic: "Tell me about the lens." is about the lens alone, so a
    passage on the lens covers the whole question."""
    from ragchat.index.lexical import content_terms

    assert content_terms("Tell me about the lens.") == {"len"}
    assert content_terms("Give me an overview of the fog signal.") == {"fog", "signal"}
    assert content_terms("Who built the lighthouse?") == {"lighthous", "built"}
