"""A deterministic generator of our own on the `Generator` protocol, for fast tests of the
answering policy: it runs ragchat's real greedy loop (generation/base.py GreedyLoop: stop
sequences, cancellation, continuation scoring) over a word-level "model" whose reply to a
prompt is scripted by the test, with log-probabilities the test chooses."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ragchat.generation.base import GenerationStats, GreedyLoop
from ragchat.generation.formats import InstructFormat

_PIECES = re.compile(r"\s+|[^\s]+")
_END = -1


class ScriptedGenerator(GreedyLoop):
    """Answers every prompt with `reply(prompt)` (a string, or a function of the prompt),
    one word or space per token, each with log-probability `answer_logprob`; a scored
    continuation gets `continuation_logprob` per token, or `scores(prompt, text)` when
    given. `prompts` records what it read."""

    scores_continuations = True

    def __init__(
        self,
        reply: str | Callable[[str], str],
        *,
        answer_logprob: float = -0.1,
        continuation_logprob: float = -3.0,
        preset: str | None = None,
        context_window: int = 4096,
        scores: Callable[[str, str], float] | None = None,
    ) -> None:
        super().__init__()
        self.name = "scripted"
        self.preset = preset
        self.context_window = context_window
        self.prompt_format = InstructFormat()
        self.load_seconds = 0.0
        self.last_stats: GenerationStats | None = None
        self.prompts: list[str] = []
        self._reply = reply if callable(reply) else (lambda _prompt: reply)
        self._answer_lp = answer_logprob
        self._continuation_lp = continuation_logprob
        self._scores = scores
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []
        self._script: list[int] = []
        self._at = 0

    def _id(self, piece: str) -> int:
        if piece not in self._vocab:
            self._vocab[piece] = len(self._words)
            self._words.append(piece)
        return self._vocab[piece]

    def count_tokens(self, text: str) -> int:
        return len(_PIECES.findall(text))

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        score: Sequence[str] = (),
    ) -> Iterator[str]:
        self.prompts.append(prompt)
        return super().stream(
            prompt, max_new_tokens=max_new_tokens, stop=stop, cancel=cancel, score=score
        )

    # --- the engine steps GreedyLoop calls ----------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        return [self._id(p) for p in _PIECES.findall(prompt)]

    def _prefill(self, ids: list[int], cancel: threading.Event | None) -> Any | None:
        if cancel is not None and cancel.is_set():
            return None
        prompt = "".join(self._words[i] for i in ids)
        self._script = [self._id(p) for p in _PIECES.findall(self._reply(prompt))]
        self._at = 0
        return self._at

    def _step(self, token: int) -> Any:
        self._at += 1
        return self._at

    def _pick(self, logits: Any) -> tuple[int, float]:
        token = self._script[logits] if logits < len(self._script) else _END
        return token, self._answer_lp

    def _is_end(self, token: int) -> bool:
        return token == _END

    def _decode(self, ids: list[int]) -> str:
        return "".join(self._words[i] for i in ids)

    def _score_continuation(self, text: str, logits: Any, n_prompt: int) -> tuple[float, ...]:
        lp = self._continuation_lp if self._scores is None else self._scores(self.prompts[-1], text)
        return tuple(lp for _ in _PIECES.findall(text))
