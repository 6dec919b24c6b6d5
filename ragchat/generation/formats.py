"""Prompt formats: Phi-2's `Instruct: …\nOutput:` for models without a chat template, the
tokenizer's chat template for the rest (Qwen, SmolLM, Phi-3, Mistral …), and the stop
sequences base models need. Pure: a tokenizer is only used through
`apply_chat_template`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that prompt formats use."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


# Base models (Phi-2) continue past the answer with new exercises, questions or turns.
BASE_STOPS: tuple[str, ...] = (
    "\nInstruct:",
    "Instruct:",
    "\nExercise",
    "\nQuestion:",
    "\nUser:",
    "\n<|user|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|im_start|>",
    "<|end|>",
    "</s>",
    "[INST]",
)


class PromptFormat:
    """Turns messages into the model's prompt text. Subclasses: InstructFormat (Phi-2 and
    models without a chat template) and ChatTemplateFormat."""

    name: str = "?"
    stop: tuple[str, ...] = BASE_STOPS

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text, ending where the model's answer starts."""
        raise NotImplementedError


class InstructFormat(PromptFormat):
    """Phi-2's QA format: `Instruct: …\\nOutput:`. The system text opens the first turn."""

    name = "instruct"

    def render(self, messages: Sequence[Message]) -> str:
        parts: list[str] = []
        pending_system = ""
        for message in messages:
            if message.role == "system":
                pending_system += message.content.strip() + "\n\n"
            elif message.role == "user":
                parts.append(f"Instruct: {pending_system}{message.content.strip()}\nOutput:")
                pending_system = ""
            else:
                parts[-1:] = [f"{parts[-1]} {message.content.strip()}\n"] if parts else []
        return "".join(parts)


class ChatTemplateFormat(PromptFormat):
    """The tokenizer's own chat template (Qwen, SmolLM, Phi-3, Mistral …) with the generation
    prompt added. Templates that reject a system role (Mistral) get it folded into the first
    user turn."""

    name = "chat-template"

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tokenizer = tokenizer
        self._fold_system: bool | None = None

    def _apply(self, messages: Sequence[Message]) -> str:
        text = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)

    def render(self, messages: Sequence[Message]) -> str:
        if self._fold_system is not True:
            try:
                text = self._apply(messages)
                if any(m.role == "system" for m in messages):
                    self._fold_system = False
                return text
            except Exception:  # jinja raises TemplateError via raise_exception(); any kind
                if self._fold_system is False or not any(m.role == "system" for m in messages):
                    raise
                self._fold_system = True
        return self._apply(fold_system(messages))


def fold_system(messages: Sequence[Message]) -> list[Message]:
    """Move system text into the first user message (for templates without a system role)."""
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system")
    out: list[Message] = []
    for message in messages:
        if message.role == "system":
            continue
        if system and message.role == "user":
            message = Message("user", f"{system}\n\n{message.content}")
            system = ""
        out.append(message)
    return out


def prompt_format_for(tokenizer: ChatTokenizer | None) -> PromptFormat:
    """Chat template when the tokenizer has one, else Phi-2's Instruct/Output format."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return ChatTemplateFormat(tokenizer)
    return InstructFormat()
