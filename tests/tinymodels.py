"""Tiny random-initialised causal LMs of real architectures (Phi-2, Phi-3, Mistral), saved as
ordinary Hugging Face folders with an offline-trained byte-level BPE tokenizer and the
architectures' real chat templates. Random weights produce garbage text: tests assert on
structure (prompt formats, token counts, stops, cancellation), not on content."""

from __future__ import annotations

from pathlib import Path

# Phi-3-mini-4k-instruct's chat template.
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Mistral-7B-Instruct-v0.1's chat template: no system role, strictly alternating turns.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

_CORPUS = (
    "the of and to in is was for on that with as by at from his her it an were are which "
    "this be or has had first new also after its their who not but one two three year "
    "years city state team game season church school war river music film company people "
    "time world question answer passage document page file network television station "
    "program show series season rights pageant strike writers guild production miss "
    "america broadcasting what when where who why how many much did does do is are was "
    "were will would could instruct output exercise user assistant system documents "
    "don't say cite number short phrase sentence copy words exactly reply the answer "
    "passages numbered contain Paris France London England Berlin Germany capital river "
    "Seine Thames Spree population million born died king queen president university "
    "college science physics chemistry biology 1976 1977 2006 2007 2008 ABC TLC CBS NBC "
    "[1] [2] [3] p.3 (file.pdf) . , ? ! : ; - "
)


def _train_tokenizer(special: list[str], vocab_size: int = 400):
    """A byte-level BPE trained on a small fixed corpus (deterministic, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = _CORPUS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 7)]
    tok.train_from_iterator(lines * 3, trainer=trainer)
    return tok


def _save(folder: Path, model, tokenizer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _fast_tokenizer(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **special)


def make_tiny_phi(folder: Path) -> Path:
    """Phi-2's architecture (PhiForCausalLM), CodeGen-style tokenizer, no chat template."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    tok = _train_tokenizer(["<|endoftext|>"])
    eos = tok.token_to_id("<|endoftext|>")
    tokenizer = _fast_tokenizer(
        tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = PhiConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return _save(folder, PhiForCausalLM(config), tokenizer)


def make_tiny_phi3(folder: Path) -> Path:
    """Phi-3's architecture (Phi3ForCausalLM) with the real Phi-3 chat template."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    extra = ["<|assistant|>", "<|end|>", "<|system|>", "<|user|>"]
    tok = _train_tokenizer(["<unk>", "<s>", "</s>", "<|endoftext|>", *extra])
    tokenizer = _fast_tokenizer(
        tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=extra,
    )
    tokenizer.chat_template = PHI3_TEMPLATE
    torch.manual_seed(0)
    config = Phi3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        original_max_position_embeddings=512,
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("<|endoftext|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    return _save(folder, Phi3ForCausalLM(config), tokenizer)


def make_tiny_mistral(folder: Path) -> Path:
    """Mistral's architecture (MistralForCausalLM) with the real [INST] chat template, which
    rejects a system role."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    tok = _train_tokenizer(["<unk>", "<s>", "</s>"])
    tokenizer = _fast_tokenizer(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = MISTRAL_TEMPLATE
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=None,
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
    )
    return _save(folder, MistralForCausalLM(config), tokenizer)
