"""The transformers backend end to end on tiny random models of real architectures (Phi-2,
Phi-3, Mistral) and on the real packaged SmolLM2."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tinymodels import make_tiny_mistral, make_tiny_phi, make_tiny_phi3

from ragchat.answer.prompts import build_rag_prompt
from ragchat.config import Settings
from ragchat.errors import ConfigError, GenerationError
from ragchat.generation.base import find_stop, stop_holdback
from ragchat.generation.formats import ChatTemplateFormat, InstructFormat, Message
from ragchat.generation.hf import TransformersGenerator
from ragchat.generation.loading import BACKENDS, load_generator
from ragchat.records import Passage

MESSAGES = [Message("system", "Be brief."), Message("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("cache"), threads=1)


@pytest.fixture(scope="module")
def phi(tiny_dir: Path, settings: Settings) -> TransformersGenerator:
    gen = load_generator(str(make_tiny_phi(tiny_dir / "phi")), settings)
    assert isinstance(gen, TransformersGenerator)
    return gen


@pytest.fixture(scope="module")
def phi3(tiny_dir: Path, settings: Settings) -> TransformersGenerator:
    gen = load_generator(str(make_tiny_phi3(tiny_dir / "phi3")), settings)
    assert isinstance(gen, TransformersGenerator)
    return gen


@pytest.fixture(scope="module")
def mistral(tiny_dir: Path, settings: Settings) -> TransformersGenerator:
    gen = load_generator(str(make_tiny_mistral(tiny_dir / "mistral")), settings)
    assert isinstance(gen, TransformersGenerator)
    return gen


def test_stop_helpers() -> None:
    assert find_stop("abc\nInstruct: x", ["\nInstruct:"]) == 3
    assert find_stop("abc", ["\nInstruct:"]) is None
    assert stop_holdback("answer\nInst", ["\nInstruct:"]) == 5
    assert stop_holdback("answer", ["\nInstruct:"]) == 0
    assert stop_holdback("caf\ufffd", []) == 1


def test_phi_uses_instruct_output_format(phi: TransformersGenerator) -> None:
    assert isinstance(phi.prompt_format, InstructFormat)
    prompt = phi.format_prompt(MESSAGES)
    assert prompt == "Instruct: Be brief.\n\nWhat is the capital of France?\nOutput:"
    assert "\nInstruct:" in phi.stop
    assert phi.context_window == 512


def test_phi3_uses_its_chat_template(phi3: TransformersGenerator) -> None:
    assert isinstance(phi3.prompt_format, ChatTemplateFormat)
    prompt = phi3.format_prompt(MESSAGES)
    assert prompt == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is the capital of France?<|end|>\n"
        "<|assistant|>\n"
    )
    end_id = phi3.tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_id in phi3._end_ids  # an instruct model's turn ends there


def test_mistral_template_gets_system_folded_and_one_bos(mistral: TransformersGenerator) -> None:
    prompt = mistral.format_prompt(MESSAGES)
    assert prompt == "<s>[INST] Be brief.\n\nWhat is the capital of France? [/INST]"
    ids = mistral.encode_prompt(prompt)
    assert ids.count(mistral.tokenizer.bos_token_id) == 1
    assert ids[0] == mistral.tokenizer.bos_token_id


def test_count_tokens_matches_encoding(phi: TransformersGenerator) -> None:
    text = "The capital of France is Paris."
    assert phi.count_tokens(text) == len(phi.tokenizer.encode(text, add_special_tokens=False))
    assert phi.count_tokens("") == 0


@pytest.mark.parametrize("name", ["phi", "phi3", "mistral"])
def test_stream_respects_max_new_tokens_and_is_deterministic(
    name: str, request: pytest.FixtureRequest
) -> None:
    gen: TransformersGenerator = request.getfixturevalue(name)
    prompt = gen.format_prompt(MESSAGES)
    first = list(gen.stream(prompt, max_new_tokens=6))
    stats = gen.last_stats
    assert stats is not None
    assert stats.prompt_tokens == len(gen.encode_prompt(prompt))
    assert 0 < stats.gen_tokens <= 6
    assert stats.stop_reason in ("max_tokens", "eos")
    assert all(isinstance(piece, str) and piece for piece in first)
    assert "".join(gen.stream(prompt, max_new_tokens=6)) == "".join(first)


def _long_output(gen: TransformersGenerator, prompt: str) -> str:
    text = "".join(gen.stream(prompt, max_new_tokens=24))
    # The tiny models are seeded, so their text is the same every run; it must be long
    # enough to put a stop sequence inside it.
    assert gen.last_stats is not None and gen.last_stats.gen_tokens >= 8 and len(text) >= 8, text
    return text


@pytest.mark.parametrize("name", ["phi", "phi3", "mistral"])
def test_text_after_a_stop_sequence_is_never_emitted(
    name: str, request: pytest.FixtureRequest
) -> None:
    gen: TransformersGenerator = request.getfixturevalue(name)
    prompt = gen.format_prompt(MESSAGES)
    full = _long_output(gen, prompt)
    # A stop string that straddles token boundaries: the middle of the output.
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    pieces = list(gen.stream(prompt, max_new_tokens=24, stop=[stop]))
    out = "".join(pieces)
    assert out == full[: full.find(stop)]
    assert gen.last_stats is not None and gen.last_stats.stop_reason == "stop"
    assert all(stop not in piece for piece in pieces)


def test_stop_split_across_tokens_is_caught(phi: TransformersGenerator) -> None:
    prompt = phi.format_prompt(MESSAGES)
    full = _long_output(phi, prompt)
    ids = phi.tokenizer.encode(full, add_special_tokens=False)
    # Find a token boundary inside the text and make the stop span it.
    boundary = len(phi.tokenizer.decode(ids[: len(ids) // 2]))
    stop = full[max(0, boundary - 2) : boundary + 2]
    assert len(stop) >= 3, f"no usable token boundary in {full!r}"
    out = "".join(phi.stream(prompt, max_new_tokens=24, stop=[stop]))
    assert out == full[: full.find(stop)]
    assert stop not in out


def test_cancel_stops_generation(phi: TransformersGenerator) -> None:
    prompt = phi.format_prompt(MESSAGES)
    cancel = threading.Event()
    pieces = []
    for piece in phi.stream(prompt, max_new_tokens=40, cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert len(pieces) == 1
    assert phi.last_stats is not None
    assert phi.last_stats.stop_reason == "cancelled"
    assert phi.last_stats.gen_tokens < 40

    cancel = threading.Event()
    cancel.set()
    assert list(phi.stream(prompt, max_new_tokens=10, cancel=cancel)) == []
    assert phi.last_stats.stop_reason == "cancelled"
    assert phi.last_stats.gen_tokens == 0


def test_closing_the_stream_early_records_stats(phi: TransformersGenerator) -> None:
    stream = phi.stream(phi.format_prompt(MESSAGES), max_new_tokens=40)
    next(stream)
    stream.close()
    assert phi.last_stats is not None and phi.last_stats.gen_tokens < 40


def test_prompt_longer_than_the_context_window_is_refused(phi: TransformersGenerator) -> None:
    with pytest.raises(GenerationError, match="reads at most 512"):
        list(phi.stream("Paris " * 600, max_new_tokens=4))


def test_rag_prompt_through_a_tiny_model(phi3: TransformersGenerator) -> None:
    passages = [
        Passage(i, "f.pdf", "f.pdf", i + 1, i + 1, 1.0, "The capital of France is Paris. " * 8)
        for i in range(10)
    ]
    budget = phi3.context_window - 32
    prompt = build_rag_prompt(
        "What is the capital of France?",
        passages,
        fmt=phi3.prompt_format,
        count_tokens=phi3.count_tokens,
        budget_tokens=budget,
    )
    assert 0 < len(prompt.passages) < 10
    assert len(phi3.encode_prompt(prompt.text)) <= budget
    list(phi3.stream(prompt.text, max_new_tokens=4, stop=prompt.stop))
    assert phi3.last_stats is not None and phi3.last_stats.prompt_tokens <= budget


def test_unknown_backend_is_a_config_error(settings: Settings) -> None:
    assert "transformers" in BACKENDS
    with pytest.raises(ConfigError, match="transformers"):
        load_generator("smollm2", settings.replace(backend="llama.cpp"))


@pytest.mark.slow
def test_real_smollm2_generates_deterministic_text(model_cache: Path) -> None:
    settings = Settings(cache_dir=model_cache, threads=0, backend="transformers")
    gen = load_generator("smollm2", settings)
    prompt = gen.format_prompt([Message("user", "What is the capital of France?")])
    assert prompt.startswith("<|im_start|>")
    first = "".join(gen.stream(prompt, max_new_tokens=8, stop=gen.prompt_format.stop))
    second = "".join(gen.stream(prompt, max_new_tokens=8, stop=gen.prompt_format.stop))
    assert first.strip()
    assert first == second
    assert gen.last_stats is not None and 0 < gen.last_stats.gen_tokens <= 8


@pytest.mark.parametrize("name", ["phi", "phi3", "mistral"])
def test_scoring_continuations_leaves_the_answer_unchanged(
    name: str, request: pytest.FixtureRequest
) -> None:
    gen: TransformersGenerator = request.getfixturevalue(name)
    assert gen.scores_continuations
    prompt = gen.format_prompt(MESSAGES)
    plain = "".join(gen.stream(prompt, max_new_tokens=8))
    plain_stats = gen.last_stats
    scored = "".join(gen.stream(prompt, max_new_tokens=8, score=("The documents don't say.", "x")))
    stats = gen.last_stats
    assert plain_stats is not None and stats is not None
    assert scored == plain
    assert len(stats.answer_logprobs) == stats.gen_tokens
    assert plain_stats.continuation_logprobs == ()
    assert len(stats.continuation_logprobs) == 2
    assert len(stats.continuation_logprobs[0]) == gen.count_tokens("The documents don't say.")
    assert all(lp <= 0.0 for lps in stats.continuation_logprobs for lp in lps)
    # the scoring is timed apart, so tokens/s is the decoding speed alone
    assert plain_stats.score_s == 0.0 and stats.score_s > 0.0
    assert stats.prefill_s + stats.score_s <= stats.total_s


def test_scored_continuations_are_consistent_with_greedy_choices(
    phi3: TransformersGenerator,
) -> None:
    """The cache is rolled back between continuations (the same text scores the same),
    and no first token is likelier than the greedy one."""
    prompt = phi3.format_prompt(MESSAGES)
    text = "The documents don't say."
    list(phi3.stream(prompt, max_new_tokens=4, score=(text, "Paris", text)))
    stats = phi3.last_stats
    assert stats is not None and stats.answer_logprobs
    first, paris, again = stats.continuation_logprobs
    assert again == pytest.approx(first, abs=1e-4)
    assert max(first[0], paris[0]) <= stats.answer_logprobs[0] + 1e-4
