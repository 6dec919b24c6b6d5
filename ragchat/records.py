"""Data that crosses module boundaries: frozen dataclasses. Pages are 1-based everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Page:
    """The normalised text of one PDF page; `number` is 1-based."""

    number: int
    text: str


@dataclass(frozen=True)
class Document:
    """A PDF turned into text: its pages (only those with text are required to be present,
    in order) and the extractor that produced them ("pypdf" or "pdfium")."""

    path: Path
    pages: tuple[Page, ...]
    page_count: int
    extractor: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A slice of a document's text.

    `char_start`/`char_end` index into the document text built by
    `chunking.document_text(pages)` (pages joined by `chunking.PAGE_SEPARATOR`), and
    `text == document_text[char_start:char_end]`: the document's own characters, never
    tokenizer-decoded text. `page_start`/`page_end` are 1-based and inclusive.
    """

    text: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    n_tokens: int


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with where it came from; higher `score` is better."""

    chunk_id: int
    doc: str  # file name
    path: str  # path as recorded at ingest
    page: int
    page_end: int
    score: float
    text: str


FileStatus = Literal["indexed", "unchanged", "skipped", "failed", "removed", "missing"]


@dataclass(frozen=True)
class FileOutcome:
    """What ingest did with one file. `reason` is None when status is "indexed"."""

    path: str
    status: FileStatus
    reason: str | None = None
    pages: int = 0
    chunks: int = 0
    extractor: str | None = None
    seconds: float = 0.0


@dataclass
class IngestReport:
    """Per-file outcomes of one ingest run, in the order the files were processed."""

    index: str
    files: list[FileOutcome] = field(default_factory=list)
    chunks_before: int = 0
    seconds: float = 0.0

    def count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status == status)
