"""Answer a question from retrieved passages: retrieve, build the prompt under the model's
token budget, generate (streaming), render citations, decide abstention."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ragchat.answer.abstention import (
    ABSTAIN,
    DEFAULT_THRESHOLDS,
    Decision,
    Thresholds,
    answer_coverage,
    answer_signals,
    coverage_signals,
    decide,
    for_embedder,
    is_abstention,
    latin_share,
    needs_sentence_top,
    thresholds_for,
    verify_margin,
)
from ragchat.answer.citations import (
    Citation,
    CitationStream,
    cite_uncited,
    render_citations,
    strip_citations,
)
from ragchat.answer.focus import Ranking, focus_passages, rank_units
from ragchat.answer.followup import standalone
from ragchat.answer.overview import MAX_SOURCES, document_list, overview_passages, overview_sources
from ragchat.answer.prompts import (
    MAX_SENTENCES,
    VERIFY_NO,
    VERIFY_YES,
    Turn,
    build_rag_prompt,
    clean_answer,
    copied_example,
    example_texts,
    format_passage,
    question_kind,
    sentence_cut,
    verify_prompt,
    yes_no_question,
)
from ragchat.answer.story import story_passages
from ragchat.answer.summaries import script_document
from ragchat.ingest.script import is_script
from ragchat.records import Passage

if TYPE_CHECKING:
    from ragchat.config import Settings
    from ragchat.generation.base import Generator
    from ragchat.index.store import IndexStore, SourceRecord
    from ragchat.retrieval.retriever import Retriever


@dataclass(frozen=True)
class AnswerPolicy:
    """How answers are made: the prompt's size, what of the passages the model reads, and
    the abstention bars. `policy_for` builds it from Settings and the model's preset."""

    # The prompt never grows past this many tokens, whatever the model's window: on a CPU
    # the prompt is read at a few hundred tokens/s, and more than a handful of passages only
    # distracts a small model.
    max_prompt_tokens: int = 800
    # Give the model only this many question-ranked sentences of the retrieved passages
    # (focus.py); 0 gives whole passages. An explanation gets `explain_sentences`.
    focus_sentences: int = 3
    explain_sentences: int = 8
    # A script's passages are focused to this many speeches (short lines: a lookup needs
    # the exchange around the answer, not three lines of it).
    script_speeches: int = 8
    script_neighbours: int = 0
    # ... with the summaries of this many of the script's sections (answer/summaries.py,
    # where the index has them) before the speeches, on top of `max_prompt_tokens`.
    story_sections: int = 3
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    # Run the yes/no verification pass (1–2 s) and record its margin in signals["verify"];
    # None: only while the verify threshold can decide.
    verify_answers: bool | None = None


def policy_for(settings: Settings, generator: Generator | None = None) -> AnswerPolicy:
    """The answer policy of `settings` for `generator`'s preset (its calibrated thresholds,
    unless a setting gives one)."""
    return AnswerPolicy(
        max_prompt_tokens=settings.max_prompt_tokens,
        focus_sentences=settings.focus_sentences,
        explain_sentences=settings.explain_sentences,
        script_speeches=settings.script_speeches,
        script_neighbours=settings.script_neighbours,
        story_sections=settings.story_sections,
        thresholds=thresholds_for(
            getattr(generator, "preset", None),
            min_coverage=settings.min_coverage,
            max_unknown_names=settings.max_unknown_names,
            no_answer=settings.no_answer_threshold,
            verify=settings.verify_threshold,
            min_dense_top=settings.min_dense_top,
            min_passage_coverage=settings.min_passage_coverage,
            min_sentence_top=settings.min_sentence_top,
            min_script_passage_coverage=settings.min_script_passage_coverage,
            min_answer_coverage=settings.min_answer_coverage,
        ),
    )


@dataclass(frozen=True)
class Timings:
    """Seconds and token counts of one answer. `first_token_s` excludes model loading."""

    load_s: float
    retrieve_s: float
    first_token_s: float | None
    total_s: float
    prompt_tokens: int
    gen_tokens: int
    tok_per_s: float
    condense_s: float = 0.0  # rewriting a follow-up into a standalone question


@dataclass(frozen=True)
class Answer:
    """An answer with its evidence. `text` has citations rendered as [file p.N];
    `passages` are the ones the model was given (citations only point at these)."""

    question: str
    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]
    timings: Timings
    standalone_question: str = ""
    raw_text: str = ""
    cancelled: bool = False
    retrieved: tuple[Passage, ...] = field(default=(), repr=False)
    # The abstention signals (abstention.answer_signals, coverage, ...); the model's score
    # signals are missing when the generator cannot score continuations.
    signals: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    # The abstention rule that decided (abstention.RULES), "answered" when none did.
    decided_by: str = "answered"


def answer(
    question: str,
    retriever: Retriever,
    generator: Generator,
    *,
    k: int = 5,
    max_new_tokens: int = 160,
    history: Sequence[Turn] = (),
    on_query: Callable[[str], None] | None = None,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    load_s: float = 0.0,
    policy: AnswerPolicy | None = None,
) -> Answer:
    """Answer `question` from the `k` best passages. `on_query` hears the query searched
    with (the standalone rewrite of a follow-up). Streams display text to `on_text`;
    `cancel` stops generation early (the partial answer is returned, `cancelled` set).
    `policy` defaults to AnswerPolicy() with the generator's preset thresholds."""
    if policy is None:
        policy = AnswerPolicy(thresholds=thresholds_for(getattr(generator, "preset", None)))
    embedder = getattr(retriever, "embedder", None)
    thresholds = for_embedder(policy.thresholds, getattr(embedder, "id", None))
    verify_answers = policy.verify_answers
    if verify_answers is None:
        verify_answers = thresholds.verify is not None
    started = time.perf_counter()
    query = standalone(question, history, generator, cancel)
    condensed = time.perf_counter()
    if on_query is not None:
        on_query(query)
    store = getattr(retriever, "store", None)
    # "Summarize the document.": about the documents as a whole, so no passage matches it
    # by its words; it is read from passages spread over them (overview.py).
    asked = None
    if store is not None:
        asked = overview_sources(query, [s for s in store.sources() if s.chunks])
    if asked is not None and len(asked) > MAX_SOURCES:
        listed = time.perf_counter() - condensed
        return _document_list(question, query, asked, load_s, listed, on_text)
    if asked is not None:
        assert store is not None
        retrieved, evidence = _overview(asked, store, generator, policy, max_new_tokens), {}
    else:
        retrieved, evidence = retriever.search_with_evidence(query, k)
    retrieve_s = time.perf_counter() - condensed
    signals: dict[str, float] = {"passages": float(len(retrieved)), **evidence}
    if asked is not None:
        signals["overview"] = 1.0
    elif store is not None and retrieved:
        lexical = store.lexical_index()
        respelled = lexical.respellings(query)  # misspelt names, as the index spells them
        unknown = lexical.unknown_names(query)
        coverage = coverage_signals(query, retrieved, lexical.idf, respelled, unknown)
        signals.update({name: round(v, 4) for name, v in coverage.items()})
    # Most of the passages laid out as a play or screenplay, or taken from one: read as
    # speeches (a play's long prose stage directions are still the play's), and judged
    # off-topic by a script's bars.
    script = asked is None and reads_as_script(retriever, retrieved)
    signals["script"] = float(script)
    verdict = decide(signals, thresholds)
    if verdict.abstain:
        return _abstain(question, query, retrieve_s, load_s, on_text, retrieved, signals, verdict)

    kind = "explain" if asked is not None else question_kind(query)
    scoring = bool(getattr(generator, "scores_continuations", False))
    # A yes/no question is answered with the sentence that bears on it, and the verdict
    # from the model's scores where its check is calibrated (_answer_yes_no).
    yes_no = asked is None and yes_no_question(query)
    sentences = 0 if asked is not None else policy.focus_sentences
    if kind == "explain" and not yes_no:
        sentences = policy.explain_sentences
    if script:
        sentences = max(sentences, policy.script_speeches)
    ranking = None
    if embedder is not None and retrieved and needs_sentence_top(signals, thresholds):
        # The sentences scored against the question once: the closest one's cosine is the
        # prose off-topic rule's evidence, the best few are what the model reads.
        ranking = rank_units(query, retrieved, embedder, sentences=sentences, script=script)
        signals["sentence_top"] = round(ranking.top, 4)
        verdict = decide(signals, thresholds)
        if verdict.abstain:
            return _abstain(
                question, query, retrieve_s, load_s, on_text, retrieved, signals, verdict
            )
    if ranking is None and yes_no and embedder is not None and retrieved:
        ranking = rank_units(query, retrieved, embedder, sentences=sentences, script=script)
    signals["explain"] = float(kind == "explain")
    signals["latin"] = round(latin_share(query), 4)
    budget = min(generator.context_window - max_new_tokens - 16, policy.max_prompt_tokens)
    given = retrieved
    if sentences and embedder is not None:
        given = focus_passages(
            query,
            retrieved,
            embedder,
            sentences=sentences,
            script=script,
            neighbours=policy.script_neighbours if script else 0,
            ranking=ranking,
        )
    if yes_no and given and ranking is not None and len(ranking.units):
        return _answer_yes_no(
            question,
            query,
            given,
            retrieved,
            ranking,
            generator,
            signals,
            thresholds,
            verify_answers,
            Timings(load_s, retrieve_s, None, 0.0, 0, 0, 0.0, condensed - started),
            started,
            on_text,
        )
    if script and store is not None and embedder is not None and policy.story_sections > 0:
        # What happens in the sections of the story that match the question best: the
        # summaries come first, and on top of the budget, so the speeches keep their room.
        story = story_passages(
            query, store, embedder, _sources(store, retrieved), policy.story_sections
        )
        signals["story"] = float(len(story))
        if story:
            room = sum(generator.count_tokens(format_passage(1, p)) + 2 for p in story)
            budget = min(generator.context_window - max_new_tokens - 16, budget + room)
            given = [*story, *given]
    prompt = build_rag_prompt(
        query,
        given,
        fmt=generator.prompt_format,
        count_tokens=generator.count_tokens,
        budget_tokens=budget,
        kind=kind,
        script=script,
    )
    # A lookup is a few tokens: it is shown once decided, so a guess is never shown and
    # then withdrawn. An explanation streams as it is written; an overview is shown once
    # each of its sentences is cited (cite_uncited).
    streams = on_text and kind == "explain" and asked is None
    stream = CitationStream(prompt.passages, on_text) if streams else None
    pieces: list[str] = []
    gen_started = time.perf_counter()
    first_token_s: float | None = None
    extra = {"score": (ABSTAIN,)} if scoring else {}
    written = 0  # characters of the answer so far
    for piece in generator.stream(
        prompt.text, max_new_tokens=max_new_tokens, stop=prompt.stop, cancel=cancel, **extra
    ):
        if first_token_s is None:
            first_token_s = time.perf_counter() - gen_started
        pieces.append(piece)
        # An explanation ends with its MAX_SENTENCES-th sentence: what the model writes
        # after it is neither shown nor generated.
        cut = sentence_cut("".join(pieces), MAX_SENTENCES) if kind == "explain" else None
        if cut is not None:
            pieces = ["".join(pieces)[:cut]]
            piece = pieces[0][written:]
        if stream and piece:
            stream.feed(piece)
        written += len(piece)
        if cut is not None:
            break
    if stream:
        stream.close()
    raw = "".join(pieces).strip()
    cleaned = clean_answer(raw, kind)
    if asked is not None and not is_abstention(cleaned):
        cleaned = cite_uncited(cleaned, prompt.passages)
    text, citations = render_citations(cleaned, prompt.passages)
    if kind == "lookup" and cleaned and not is_abstention(cleaned):
        # A small model often cites the wrong passage number ("China [2]" read from [1]):
        # a lookup is cited to the passage it was copied from, which the check then reads.
        recited = _cite_source(strip_citations(cleaned), prompt.passages, citations)
        if recited is not None:
            cleaned = recited
            text, citations = render_citations(cleaned, prompt.passages)
    stats = generator.last_stats
    if scoring and stats is not None and stats.continuation_logprobs:
        signals.update(
            answer_signals(
                strip_citations(cleaned),
                [p.text for p in prompt.passages],
                stats.answer_logprobs,
                stats.continuation_logprobs[0],
            )
        )
    signals["model_abstained"] = float(not cleaned or is_abstention(raw))
    if kind == "lookup" and not signals["model_abstained"]:
        signals["copied_example"] = float(
            copied_example(
                strip_citations(cleaned),
                example_texts(kind, script),
                [p.text for p in prompt.passages],
            )
        )
    if store is not None and not signals["model_abstained"] and kind == "lookup":
        signals["answer_coverage"] = round(
            answer_coverage(
                query,
                strip_citations(cleaned),
                prompt.passages,
                lexical.idf,
                respelled,
            ),
            4,
        )
    # Lookups only, in a Latin script: an explanation has streamed by now, and neither a
    # script's answer in the reader's own words nor a Japanese question is what the check
    # was calibrated on (on ja-public it refused 4 of 15 lookups, 3 of them right).
    checkable = (
        kind == "lookup"
        and not script
        and signals["latin"] >= 0.5
        and not signals["model_abstained"]
    )
    if verify_answers and scoring and "no_answer" in signals and checkable:
        evidence = _evidence(citations, prompt.passages)
        margin = verify(query, strip_citations(cleaned), evidence, generator)
        if margin is not None:
            signals["verify"] = margin
    verdict = decide(signals, thresholds)
    if verdict.abstain:
        text, citations = ABSTAIN, []
    if on_text and stream is None:
        on_text(text)
    elif on_text and verdict.abstain and verdict.rule != "model":
        on_text(f"\n{ABSTAIN}")  # the streamed explanation failed its check
    whole = {p.chunk_id: p for p in retrieved}
    return Answer(
        question=question,
        text=text,
        abstained=verdict.abstain,
        citations=tuple(citations),
        # The whole retrieved chunks (the model may have seen only some of their sentences).
        passages=tuple(whole.get(p.chunk_id, p) for p in prompt.passages),
        timings=Timings(
            load_s=load_s,
            retrieve_s=retrieve_s,
            first_token_s=first_token_s,
            total_s=time.perf_counter() - started,
            prompt_tokens=stats.prompt_tokens if stats else prompt.prompt_tokens,
            gen_tokens=stats.gen_tokens if stats else 0,
            tok_per_s=stats.tokens_per_s if stats else 0.0,
            condense_s=condensed - started,
        ),
        standalone_question=query,
        raw_text=raw,
        cancelled=bool(stats and stats.stop_reason == "cancelled"),
        retrieved=tuple(retrieved),
        signals=signals,
        decided_by=verdict.rule,
    )


def yes_no_verdict(question: str, passage: str, generator: Generator) -> tuple[float, float] | None:
    """The verification margins (`verify`) of "Yes" and of "No" as the answer to the yes/no
    `question` from `passage`: the larger is the verdict. None when a prompt doesn't fit
    the model's window."""
    yes = verify(question, "Yes", passage, generator)
    no = verify(question, "No", passage, generator) if yes is not None else None
    return None if yes is None or no is None else (yes, no)


def _answer_yes_no(
    question: str,
    query: str,
    given: Sequence[Passage],
    retrieved: Sequence[Passage],
    ranking: Ranking,
    generator: Generator,
    signals: dict[str, float],
    thresholds: Thresholds,
    check: bool,
    timings: Timings,
    started: float,
    on_text: Callable[[str], None] | None,
) -> Answer:
    """A yes/no question's answer, nothing generated: the best sentence quoted with its
    citation, after the verdict when `check` runs and the preset's check is calibrated (a
    verify bar) — `No — "… it could not be heard above the surf." [gull-point.pdf p.2]`.

    Asked to write the answer, qwen1.5b began "Yes" to all 16 questions of
    bench/sample_yesno.jsonl (9 right); scored both ways (`yes_no_verdict`, over the
    passages a lookup reads), it chose right on all 14 that reached the model. It abstains
    when neither verdict reaches the bar. qwen0.5b scored "Yes" higher on all 16, so a
    preset without a bar gets the sentence alone: `The documents say: "…" [p.2]`."""
    margins = None
    if check and getattr(generator, "scores_continuations", False):
        margins = yes_no_verdict(query, " ".join(p.text for p in given), generator)
    signals["yes_no"] = 1.0
    if margins is not None:
        signals["verify_yes"], signals["verify_no"] = margins
    verdict = decide(signals, thresholds)
    source, sentence = ranking.units[int(np.argmax(ranking.score))]
    # What /sources shows: the whole chunks of the passages the check read, the quoted
    # sentence's among them (focusing keeps the best sentences).
    whole = {p.chunk_id: p for p in retrieved}
    shown = [whole.get(p.chunk_id, p) for p in given]
    ids = [p.chunk_id for p in shown]
    if retrieved[source].chunk_id not in ids:
        shown.append(retrieved[source])
        ids.append(retrieved[source].chunk_id)
    number = ids.index(retrieved[source].chunk_id) + 1
    if margins is None or thresholds.verify is None:
        raw = f'The documents say: "{sentence}" [{number}]'
    else:
        raw = f'{"Yes" if margins[0] >= margins[1] else "No"} — "{sentence}" [{number}]'
    text, citations = (ABSTAIN, []) if verdict.abstain else render_citations(raw, shown)
    if on_text:
        on_text(text)
    stats = generator.last_stats if margins is not None else None
    return Answer(
        question=question,
        text=text,
        abstained=verdict.abstain,
        citations=tuple(citations),
        passages=tuple(shown),
        timings=dataclasses.replace(
            timings,
            total_s=time.perf_counter() - started,
            prompt_tokens=stats.prompt_tokens if stats else 0,
        ),
        standalone_question=query,
        raw_text=raw,
        retrieved=tuple(retrieved),
        signals=signals,
        decided_by=verdict.rule,
    )


def _overview(
    sources: Sequence[SourceRecord],
    store: IndexStore,
    generator: Generator,
    policy: AnswerPolicy,
    max_new_tokens: int,
) -> list[Passage]:
    """Passages spread over `sources` (overview.overview_passages), as many as an
    explanation's prompt holds."""
    budget = min(generator.context_window - max_new_tokens - 16, policy.max_prompt_tokens)

    def fits(candidates: Sequence[Passage]) -> Sequence[Passage]:
        prompt = build_rag_prompt(
            "Summarize the documents.",
            candidates,
            fmt=generator.prompt_format,
            count_tokens=generator.count_tokens,
            budget_tokens=budget,
            kind="explain",
        )
        return prompt.passages

    return overview_passages(store, sources, fits)


def _document_list(
    question: str,
    query: str,
    sources: Sequence[SourceRecord],
    load_s: float,
    retrieve_s: float,
    on_text: Callable[[str], None] | None,
) -> Answer:
    """An index of many documents asked to summarise them all: what it holds, and how to
    ask about one (nothing generated)."""
    signals = {"overview": 1.0, "sources": float(len(sources))}
    text = document_list(sources)
    return _without_model(question, query, text, load_s, retrieve_s, on_text, signals=signals)


def _sources(store: IndexStore, passages: Sequence[Passage]) -> list[int]:
    """The source ids of `passages`' documents, best passage's first."""
    ids = np.fromiter((p.chunk_id for p in passages), dtype=np.int64, count=len(passages))
    return list(dict.fromkeys(store.chunk_sources(ids).tolist()))


def reads_as_script(retriever: Retriever, passages: Sequence[Passage]) -> bool:
    """Whether most of `passages` read as a script (`_reads_as_script`)."""
    return 2 * sum(_reads_as_script(retriever, passages)) > len(passages)


def _reads_as_script(retriever: Retriever, passages: Sequence[Passage]) -> list[bool]:
    """For each passage: laid out as a script itself, or from a document most of whose
    chunks are (`script_document`)."""
    store = getattr(retriever, "store", None)
    looks = [is_script(p.text) for p in passages]
    if store is None or all(looks):
        return looks
    ids = np.fromiter((p.chunk_id for p in passages), dtype=np.int64, count=len(passages))
    sources = store.chunk_sources(ids).tolist()
    pairs = zip(looks, sources, strict=True)
    return [look or script_document(store, source) for look, source in pairs]


def verify(question: str, proposed: str, passage: str, generator: Generator) -> float | None:
    """The verification margin (grounding.verify_margin) of `proposed` as the answer to
    `question` in `passage`: one short prefill, nothing generated. None when the prompt
    doesn't fit the model's window (tiny models). Needs a generator that scores
    continuations."""
    prompt = verify_prompt(question, proposed, passage, generator.prompt_format)
    if generator.count_tokens(prompt) >= generator.context_window - 1:
        return None
    for _ in generator.stream(prompt, max_new_tokens=0, score=(*VERIFY_YES, *VERIFY_NO)):
        pass
    stats = generator.last_stats
    scored = stats.continuation_logprobs if stats else ()
    yes = [sum(lps) for lps in scored[: len(VERIFY_YES)]]
    no = [sum(lps) for lps in scored[len(VERIFY_YES) :]]
    return verify_margin(yes, no)


def _cite_source(
    answer_text: str, passages: Sequence[Passage], citations: Sequence[Citation] = ()
) -> str | None:
    """A lookup cited to the given passage it was copied from: None when a passage it cites
    holds its words (or none does and it cites one); else `answer_text` with the marker of
    the first passage that holds them, or of the only passage there was."""
    cited = [passages[c.number - 1] for c in citations if 1 <= c.number <= len(passages)]
    if any(_holds(passage, answer_text) for passage in cited):
        return None
    for number, passage in enumerate(passages, start=1):
        if _holds(passage, answer_text):
            return f"{answer_text} [{number}]"
    if citations:
        return None
    return f"{answer_text} [1]" if len(passages) == 1 else answer_text


def _holds(passage: Passage, answer_text: str) -> bool:
    """Whether the passage holds the answer's words, in order (case and spacing aside)."""
    wanted = " ".join(answer_text.lower().split()).rstrip(".")
    return bool(wanted) and wanted in " ".join(passage.text.lower().split())


def _evidence(citations: Sequence[Citation], passages: Sequence[Passage]) -> str:
    """The text the answer rests on: the first cited passage, else the top one."""
    for citation in citations:
        if 1 <= citation.number <= len(passages):
            return passages[citation.number - 1].text
    return passages[0].text if passages else ""


def _abstain(
    question: str,
    query: str,
    retrieve_s: float,
    load_s: float,
    on_text: Callable[[str], None] | None,
    retrieved: Sequence[Passage],
    signals: dict[str, float],
    verdict: Decision,
) -> Answer:
    """The answer when the retrieval signals decide before the model runs."""
    return _without_model(
        question,
        query,
        ABSTAIN,
        load_s,
        retrieve_s,
        on_text,
        signals=signals,
        retrieved=retrieved,
        decided_by=verdict.rule,
    )


def _without_model(
    question: str,
    query: str,
    text: str,
    load_s: float,
    retrieve_s: float,
    on_text: Callable[[str], None] | None,
    *,
    signals: dict[str, float],
    retrieved: Sequence[Passage] = (),
    decided_by: str = "answered",
) -> Answer:
    """An answer settled before any model runs: `text` as it is, nothing generated; an
    abstention when `text` is the fixed sentence."""
    if on_text:
        on_text(text)
    return Answer(
        question=question,
        text=text,
        abstained=text == ABSTAIN,
        citations=(),
        passages=(),
        timings=Timings(load_s, retrieve_s, None, retrieve_s, 0, 0, 0.0),
        standalone_question=query,
        retrieved=tuple(retrieved),
        signals=signals,
        decided_by=decided_by,
    )
