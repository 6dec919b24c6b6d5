"""The llama.cpp backend on the real packaged SmolLM2 GGUF (llama-cpp-python, the `llama`
extra that the README's test command installs)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from ragchat.answer.abstention import ABSTAIN
from ragchat.config import Settings
from ragchat.generation.formats import Message
from ragchat.generation.loading import auto_backend, load_generator

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install -e '.[llama]'"
)

from ragchat.generation.llamacpp import GGUFChatTemplate, LlamaCppGenerator

pytestmark = pytest.mark.slow

# SmolLM2-135M is tiny: a question answered from a given sentence is one it gets right.
QUESTION = [
    Message(
        "user",
        "Passage: The lighthouse was built by Margaret Alder in 1871.\n"
        "Question: Who built the lighthouse?",
    )
]


@pytest.fixture(scope="module")
def smol(model_cache: Path) -> LlamaCppGenerator:
    gen = load_generator("smollm2", Settings(cache_dir=model_cache, backend="llamacpp", threads=2))
    assert isinstance(gen, LlamaCppGenerator)
    return gen


def test_auto_picks_llamacpp_for_gguf_and_transformers_otherwise(tmp_path: Path) -> None:
    assert auto_backend("qwen0.5b") == "llamacpp"
    assert auto_backend("smollm2") == "llamacpp"
    assert auto_backend(str(tmp_path / "model.gguf")) == "llamacpp"
    assert auto_backend("phi-2") == "transformers"
    assert auto_backend(str(tmp_path)) == "transformers"
    assert auto_backend("qwen0.5b", device="cuda") == "transformers"


def test_chat_template_renders_like_transformers(
    smol: LlamaCppGenerator, model_cache: Path
) -> None:
    """The GGUF's template rendered by our jinja2 environment gives the prompt that
    transformers' own apply_chat_template gives for the same file."""
    from transformers import AutoTokenizer

    from ragchat.weights import resolve_gguf

    gguf = resolve_gguf("smollm2", Settings(cache_dir=model_cache))
    assert gguf is not None
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    conversation = [{"role": m.role, "content": m.content} for m in QUESTION]
    expected = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    assert smol.format_prompt(QUESTION) == expected
    assert smol.count_tokens(expected) == len(tokenizer.encode(expected, add_special_tokens=False))


def test_template_errors_surface_as_exceptions() -> None:
    template = GGUFChatTemplate(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    )
    assert template.apply_chat_template([{"role": "user", "content": "hi"}]) == "[hi]"
    with pytest.raises(Exception, match="no system"):
        template.apply_chat_template([{"role": "system", "content": "x"}])


def test_greedy_generation_is_deterministic_and_stops(smol: LlamaCppGenerator) -> None:
    prompt = smol.format_prompt(QUESTION)
    first = "".join(smol.stream(prompt, max_new_tokens=12, stop=smol.stop))
    stats = smol.last_stats
    second = "".join(smol.stream(prompt, max_new_tokens=12, stop=smol.stop))
    assert "Margaret Alder" in first
    assert first == second
    assert stats is not None and 0 < stats.gen_tokens <= 12
    assert stats.prompt_tokens == len(smol.encode_prompt(prompt))
    assert stats.first_token_s is not None and stats.tokens_per_s > 0
    # A stop sequence is never shown, even when it is the first thing generated.
    cut = "".join(smol.stream(prompt, max_new_tokens=12, stop=(first.strip()[:3],)))
    assert first.strip()[:3] not in cut


def test_prefix_cache_gives_the_same_answer_as_a_fresh_context(
    smol: LlamaCppGenerator, model_cache: Path
) -> None:
    """The reused prefix gives the model the state a fresh context would have. Not always
    the same bits: the part after the prefix is evaluated in a batch of another size, and
    on some CPUs (this AMX machine) llama.cpp's kernels for small batches round
    differently (evaluating this prompt 8 tokens at a time instead of 512 moves a
    log-probability by up to 5 nats), enough to flip a 135M model's greedy choice. What
    must hold everywhere: log-probabilities close on average, the answer about the same
    person. A stale or misplaced cache gives neither."""
    other = [Message("user", "Passage: The bridge is 503 metres long.\nQuestion: How long?")]
    prompt = smol.format_prompt(QUESTION)
    said = ("The lighthouse was built by Margaret Alder.",)
    fresh = load_generator("smollm2", Settings(cache_dir=model_cache, backend="llamacpp"))
    answer = "".join(fresh.stream(prompt, max_new_tokens=10, score=said))
    assert fresh.last_stats is not None
    expected = fresh.last_stats.continuation_logprobs[0]

    "".join(smol.stream(smol.format_prompt(other), max_new_tokens=6))  # shares the prefix
    warm = "".join(smol.stream(prompt, max_new_tokens=10, score=said))
    assert smol.last_stats is not None
    got = smol.last_stats.continuation_logprobs[0]
    assert len(got) == len(expected)
    assert sum(abs(a - b) for a, b in zip(got, expected, strict=True)) / len(got) < 0.5
    assert "Margaret" in warm and "Margaret" in answer


def test_a_kept_prompt_state_is_restored_and_answers_the_same(
    smol: LlamaCppGenerator, model_cache: Path
) -> None:
    """A prompt after one of another shape restores the KV state it shares the longest
    prefix with (not prefilled again), and answers exactly as a fresh context does."""
    long_system = Message("system", "You answer from the passage. " * 12)
    first = smol.format_prompt([long_system, *QUESTION])
    "".join(smol.stream(first, max_new_tokens=6))
    "".join(smol.stream(smol.format_prompt([Message("user", "Say hi.")]), max_new_tokens=3))
    again = smol.format_prompt(
        [long_system, Message("user", "Passage: The bridge is 503 metres long.\nQ: How long?")]
    )
    warm = "".join(smol.stream(again, max_new_tokens=8))
    shared = len(smol.encode_prompt(smol.format_prompt([long_system])))
    assert smol.reused_tokens >= shared - 8  # the system prompt was not prefilled again
    fresh = load_generator("smollm2", Settings(cache_dir=model_cache, backend="llamacpp"))
    assert "".join(fresh.stream(again, max_new_tokens=8)) == warm
    smol.forget_prompts()
    "".join(smol.stream(again, max_new_tokens=1))
    assert smol.reused_tokens == 0


def test_scoring_continuations_leaves_the_answer_unchanged(smol: LlamaCppGenerator) -> None:
    prompt = smol.format_prompt(QUESTION)
    plain = "".join(smol.stream(prompt, max_new_tokens=8))
    scored = "".join(smol.stream(prompt, max_new_tokens=8, score=(ABSTAIN, "Margaret Alder")))
    stats = smol.last_stats
    assert stats is not None
    assert scored == plain
    assert len(stats.answer_logprobs) == stats.gen_tokens
    assert len(stats.continuation_logprobs) == 2
    assert len(stats.continuation_logprobs[0]) == smol.count_tokens(ABSTAIN)
    assert all(lp <= 0.0 for lps in stats.continuation_logprobs for lp in lps)
    # The model finds the right answer far likelier than the abstention sentence.
    abstain, right = (sum(lps) / len(lps) for lps in stats.continuation_logprobs)
    assert right > abstain


def test_cancel_stops_generation(smol: LlamaCppGenerator) -> None:
    cancel = threading.Event()
    cancel.set()
    pieces = list(smol.stream(smol.format_prompt(QUESTION), max_new_tokens=50, cancel=cancel))
    assert pieces == []
    assert smol.last_stats is not None and smol.last_stats.stop_reason == "cancelled"


def test_prompt_longer_than_the_window_is_a_clear_error(smol: LlamaCppGenerator) -> None:
    from ragchat.errors import GenerationError

    with pytest.raises(GenerationError, match="reads at most"):
        list(smol.stream("word " * (smol.context_window + 10), max_new_tokens=4))


def test_llamacpp_refuses_a_model_folder(tmp_path: Path, model_cache: Path) -> None:
    from ragchat.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="GGUF"):
        load_generator(str(tmp_path), Settings(cache_dir=model_cache, backend="llamacpp"))


def test_on_an_amx_cpu_models_load_without_the_amx_kernels(
    monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    import llama_cpp.llama_cpp as lib

    import ragchat.hardware
    from ragchat.generation.llamacpp import _without_amx_kernels
    from ragchat.weights import resolve_gguf

    monkeypatch.delenv("RAGCHAT_LLAMA_AMX", raising=False)
    monkeypatch.setattr(ragchat.hardware, "cpu_has_amx", lambda: True)
    settings = Settings(cache_dir=model_cache, backend="llamacpp")
    gguf = resolve_gguf("smollm2", settings)
    assert gguf is not None
    with _without_amx_kernels(gguf):
        params = lib.llama_model_default_params()
        assert params.use_extra_bufts is False
        smol = load_generator("smollm2", settings)
    assert lib.llama_model_default_params().use_extra_bufts is True  # restored
    assert "Margaret" in "".join(smol.stream(smol.format_prompt(QUESTION), max_new_tokens=12))
    monkeypatch.setenv("RAGCHAT_LLAMA_AMX", "1")
    with _without_amx_kernels(gguf):
        assert lib.llama_model_default_params().use_extra_bufts is True


def test_the_repack_list_names_only_matrices_llama_cpp_can_repack(model_cache: Path) -> None:
    """The weight matrices kept in the interleaved AVX2 layout without AMX: Q4 matrices of
    the transformer blocks, never the embedding table nor a type repack.cpp can't take
    (it crashes on those)."""
    from gguf import GGUFReader

    from ragchat.generation.llamacpp import _repack_overrides
    from ragchat.weights import resolve_gguf

    gguf = resolve_gguf("qwen0.5b", Settings(cache_dir=model_cache))
    assert gguf is not None
    overrides = _repack_overrides(gguf)
    if overrides is None:
        pytest.skip("this CPU or llama.cpp build has no CPU_REPACK layout (no AVX2)")
    assert overrides[1].pattern is None and overrides[1].buft is None  # the terminator
    pattern = overrides[0].pattern.decode()
    named = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(str(gguf)).tensors}
    listed = {name for name in named if re.fullmatch(pattern, name)}
    assert listed, "no matrix of the model listed"
    assert all(named[name] in ("Q4_0", "Q4_K") for name in listed)
    assert "token_embd.weight" not in listed
