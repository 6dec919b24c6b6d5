"""Plain-text files (.txt, .md) as documents: a page is a form-feed-separated section, or
the whole file when it has no form feed. Citations then read `[notes.txt]` for a one-page
file and `[notes.txt §2]` for a section (answer/citations.source_label).

Read in the ingest process (no worker: reading text cannot hang like a PDF parser can).
"""

from __future__ import annotations

from pathlib import Path

from ragchat.errors import PdfError
from ragchat.records import Document, Page

TEXT_SUFFIXES = (".txt", ".md")


# Files bigger than this are almost never notes or scripts (logs, data dumps): refused
# with a reason instead of filling the index.
MAX_TEXT_BYTES = 50 * 1024 * 1024


def is_text_file(path: Path | str) -> bool:
    """Whether ingest reads `path` as plain text (by its suffix, any case)."""
    return str(path).lower().endswith(TEXT_SUFFIXES)


def extract_text_document(path: Path) -> Document:
    """The sections of the text file at `path` as 1-based pages (sections without text
    left out). UTF-8 (a BOM is dropped); a file that is not UTF-8 is read as cp1252, which
    decodes any byte. Raises PdfError ("failed": unreadable or too big; "skipped": no
    text)."""
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise PdfError(
                f"{path.name}: {size / 2**20:.0f} MiB of text is more than the "
                f"{MAX_TEXT_BYTES // 2**20} MiB ragchat reads from one text file",
                status="failed",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise PdfError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = text.split("\f")
    pages = tuple(
        Page(number, section.strip())
        for number, section in enumerate(sections, 1)
        if section.strip()
    )
    if not pages:
        raise PdfError(f"{path.name}: the file holds no text", status="skipped")
    return Document(path, pages, len(sections), "text")
