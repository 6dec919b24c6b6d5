"""PDF text extraction: 1-based pages of normalised text, pypdf first and PDFium (pypdfium2)
as fallback, run in a worker process with a hard per-file time limit.

Normalisation (see docs/extraction.md): ligatures spelled out, NFC, control characters
dropped, spaces collapsed, running headers/footers and page numbers removed, words
hyphenated across line breaks rejoined, lines of a paragraph joined into one line with a
blank line between paragraphs.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragchat.errors import PdfError
from ragchat.records import Document, Page

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


ProgressFn = Callable[[int, int], None]


OCR_HINT = "no extractable text — scanned? ingest it with --ocr (Tesseract OCR)"


GARBLED_HINT = (
    "text is garbled (fonts without a Unicode map) — ingest it with --ocr (Tesseract OCR)"
)


Passwords = str | Sequence[str] | None


def password_list(password: Passwords) -> list[str]:
    """The passwords to try, in order (a single string is one password)."""
    if password is None:
        return []
    if isinstance(password, str):
        return [password]
    return list(dict.fromkeys(password))


def _password_failure(passwords: list[str]) -> str:
    """Why an encrypted file stays closed; never shows a password."""
    if not passwords:
        return "encrypted: needs a password — pass it with --password or --password-file"
    if len(passwords) == 1:
        return "encrypted: the password given (--password, --password-file) is wrong"
    return (
        f"encrypted: none of the {len(passwords)} passwords given (--password, "
        "--password-file) opens it"
    )


# Fewer non-space characters than this in a whole file is "almost no text": the other
# extractor is tried; the text is still kept if it has SHORT_TEXT_CHARS and looks clean.
MIN_TEXT_CHARS = 20


SHORT_TEXT_CHARS = 4


# Targeted compatibility mapping instead of NFKC: NFKC would also rewrite full-width CJK
# punctuation, superscripts, "①" etc. Arabic presentation forms are mapped because pypdf
# emits them for some Arabic fonts and they defeat search.
_LIGATURES = {
    "ﬀ": "ff",
    "ﬁ": "fi",
    "ﬂ": "fl",
    "ﬃ": "ffi",
    "ﬄ": "ffl",
    "ﬅ": "st",
    "ﬆ": "st",
    "Ĳ": "IJ",
    "ĳ": "ij",
}


_TRANSLATE: dict[int, str | None] = {ord(k): v for k, v in _LIGATURES.items()}
for _cp in [*range(0xFB50, 0xFE00), *range(0xFE70, 0xFEFF)]:
    _mapped = unicodedata.normalize("NFKC", chr(_cp))
    if _mapped != chr(_cp):
        _TRANSLATE[_cp] = _mapped
# Unicode spaces become plain spaces; zero-width characters and BOMs disappear.
for _cp in [0xA0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000, 0x09]:
    _TRANSLATE[_cp] = " "
for _cp in [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]:
    _TRANSLATE[_cp] = None
# C0/C1 control characters other than \n (and the hyphen markers handled first).
for _cp in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]:
    _TRANSLATE.setdefault(_cp, None)


_SPACES = re.compile(r" {2,}")


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# PDFium writes U+FFFE (sometimes U+0002) where it removed a line-end hyphen; pypdf keeps
# U+00AD soft hyphens. Both become "-" + line break so one de-hyphenation rule applies.
_HYPHEN_MARK = re.compile(r"[\ufffe\x02]\n?|\u00ad\n")


_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def clean_text(raw: str) -> str:
    """Page text with line breaks unified, ligatures spelled out, NFC, control characters
    removed, spaces collapsed and every line stripped; line structure is kept."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _HYPHEN_MARK.sub("-\n", text).replace("\u00ad", "")
    if text.isascii():
        text = _ASCII_CONTROL.sub("", text.replace("\t", " "))  # translate() is slower
    else:
        text = unicodedata.normalize("NFC", text.translate(_TRANSLATE))
    text = _SPACES.sub(" ", text)
    return "\n".join(line.strip() for line in text.split("\n"))


# Bare page numbers at the top/bottom of a page: "12", "- 12 -", "(12)", "Page 12",
# "Page 12 of 40", "12 / 40", and roman numerals of two or more letters ("xii").
_PAGE_NUMBER = re.compile(
    r"^(?:page\s*)?[-–—(]?\s*(?:\d{1,5}|[ivxlc]{2,7})\s*[-–—)]?(?:\s*(?:of|/)\s*\d{1,5})?$",
    re.IGNORECASE,
)


_DIGITS = re.compile(r"\d+")


_NUMBER_TOKEN = re.compile(r"^\d{1,5}$")


ZONE_LINES = 3  # header/footer candidates: this many non-empty lines at the top and bottom


def _zone(lines: list[str]) -> list[int]:
    """Indices of the first and last ZONE_LINES non-empty lines."""
    filled = [i for i, line in enumerate(lines) if line]
    if len(filled) <= 2 * ZONE_LINES:
        return filled
    return filled[:ZONE_LINES] + filled[-ZONE_LINES:]


def _masked(line: str) -> str:
    return _DIGITS.sub("#", line.lower())


def _printed_numbers(line: str) -> list[int]:
    """Integers at the start or end of a line ("Chapter 6: Lists 32", "60 / 233")."""
    tokens = line.replace("/", " / ").split()
    found = []
    for tok in (tokens[0], tokens[-1]) if tokens else ():
        if _NUMBER_TOKEN.match(tok):
            found.append(int(tok))
    if len(tokens) >= 3 and tokens[-2] in {"/", "of"} and _NUMBER_TOKEN.match(tokens[-3]):
        found.append(int(tokens[-3]))
    return found


def remove_running_lines(pages: list[list[str]]) -> tuple[list[list[str]], int]:
    """Drop running headers/footers and page numbers from per-page line lists.

    Only the first/last ZONE_LINES non-empty lines of a page are candidates. A candidate is
    removed when it (a) is a bare page number, (b) recurs with digits masked on at least
    40% of the pages (and >= 3 pages, documents of >= 3 pages), each recurring line at
    most once per zone, or (c) starts or ends with the printed page number, where printed
    = physical page + an offset seen on at least 25% of pages. Returns the new pages and
    the number of lines removed.
    """
    n_pages = sum(1 for lines in pages if any(lines))
    zones = [_zone(lines) for lines in pages]

    recurring: set[str] = set()
    if n_pages >= 3:
        counts: Counter[str] = Counter()
        for lines, zone in zip(pages, zones, strict=True):
            counts.update({_masked(lines[i]) for i in zone})
        need = max(3, math.ceil(0.4 * n_pages))
        # At least three letters: a bare "# # #" row of a figure is not a header.
        recurring = {
            key for key, c in counts.items() if c >= need and sum(ch.isalpha() for ch in key) >= 3
        }

    offset: int | None = None
    if n_pages >= 3:
        offsets: Counter[int] = Counter()
        for number, (lines, zone) in enumerate(zip(pages, zones, strict=True), start=1):
            offsets.update({n - number for i in zone for n in _printed_numbers(lines[i])})
        if offsets:
            best, count = offsets.most_common(1)[0]
            if count >= max(3, math.ceil(0.25 * n_pages)):
                offset = best

    removed = 0
    out: list[list[str]] = []
    for number, (lines, zone) in enumerate(zip(pages, zones, strict=True), start=1):
        drop: set[int] = set()
        seen: set[str] = set()
        for i in zone:
            line = lines[i]
            key = _masked(line)
            if _PAGE_NUMBER.match(line):
                drop.add(i)
            elif key in recurring and key not in seen:
                drop.add(i)
                seen.add(key)
            elif (
                offset is not None
                and len(line) <= 120
                and number + offset in _printed_numbers(line)
            ):
                drop.add(i)
        if drop and len(drop) == sum(1 for line in lines if line):
            # Everything on the page looks "running" (one-line pages like "Potato 7"): it is
            # the content itself, keep it.
            drop = set()
        removed += len(drop)
        out.append([line for i, line in enumerate(lines) if i not in drop] if drop else lines)
    return out, removed


_LIST_MARKER = re.compile(r"^(?:[•●◦▪■□◆►‣∙*–—-]\s|\d{1,2}[.)]\s|\(\d{1,2}\)\s|\(?[a-z]\)\s)")


_HYPHEN_END = re.compile(r"([^\W\d_]+)-$")


_FIRST_WORD = re.compile(r"^([^\W\d_]+)")


def _join_hyphenated(head: str, tail: str, vocab: set[str]) -> str | None:
    """ "exam-" + "ple ..." -> "example ..." (or "well-known ...") when `head` ends in a
    letter hyphen and `tail` starts with a lowercase letter; None when it is no such pair.

    Rule: the spelling the document itself uses elsewhere wins (joined word, else
    hyphenated word); otherwise the hyphen is dropped when the fragment before it is all
    lowercase (typeset hyphenation) and kept otherwise ("French-speaking", "19th-century").
    """
    if not head.endswith("-") or not tail[:1].islower():
        return None
    m = _HYPHEN_END.search(head[-64:])  # only the tail: `head` is the paragraph so far
    if not m:
        return None
    w = _FIRST_WORD.match(tail)
    if not w:
        return None
    left, right = m.group(1), w.group(1)
    joined = (left + right).lower()
    hyphenated = f"{left}-{right}".lower()
    if joined in vocab:
        keep = False
    elif hyphenated in vocab:
        keep = True
    else:
        keep = not left.islower()
    return head + tail if keep else head[:-1] + tail


def build_paragraphs(lines: list[str], vocab: set[str]) -> str:
    """Join the visual lines of a page into paragraphs.

    A line continues into the next when the next line's first word would not have fitted
    on it (len(line) + 1 + len(word) > 0.9 x the page's typical line length, its 90th
    percentile) and the next line does not start a list item; a line ending in a
    hyphenated word is always continued. Paragraphs are separated by a blank line; runs of
    single-line paragraphs (code, tables, lists) keep single line breaks. Pages with fewer
    than 3 lines or a typical line under 25 characters keep their lines as they are.
    """
    filled = sorted(len(line) for line in lines if line)
    if not filled:
        return ""
    width = filled[min(len(filled) - 1, int(0.9 * len(filled)))]
    join_lines = len(filled) >= 3 and width >= 25

    paragraphs: list[tuple[str, int]] = []  # (text, number of visual lines)
    cur = ""
    n_lines = 0
    prev_len = 0  # length of the last visual line in `cur`
    for line in lines:
        if not line:
            if n_lines:
                paragraphs.append((cur, n_lines))
                cur, n_lines = "", 0
            continue
        if not n_lines:
            cur, n_lines, prev_len = line, 1, len(line)
            continue
        merged = _join_hyphenated(cur, line, vocab)
        if merged is not None:
            cur, n_lines, prev_len = merged, n_lines + 1, len(line)
            continue
        first_word = line.split(" ", 1)[0]
        if (
            join_lines
            and prev_len + 1 + len(first_word) > 0.9 * width
            and not _LIST_MARKER.match(line)
        ):
            cur, n_lines = cur + " " + line, n_lines + 1
        else:
            paragraphs.append((cur, n_lines))
            cur, n_lines = line, 1
        prev_len = len(line)
    if n_lines:
        paragraphs.append((cur, n_lines))

    parts: list[str] = []
    prev_single = False
    for text, count in paragraphs:
        single = count == 1
        if parts:
            parts.append("\n" if single and prev_single else "\n\n")
        parts.append(text)
        prev_single = single
    return "".join(parts)


def _vocabulary(texts: Iterable[str]) -> set[str]:
    """Lowercased words (letters, inner hyphens allowed) that occur inside lines."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(_WORD.findall(text.lower()))
    return vocab


def normalise_pages(raw_pages: list[str]) -> tuple[list[str], int]:
    """Normalise raw per-page texts of one document (see module docstring); returns the
    page texts (same length, "" for pages without text) and the header lines removed."""
    cleaned = [clean_text(raw).split("\n") for raw in raw_pages]
    cleaned, removed = remove_running_lines(cleaned)
    needs_vocab = any(line.endswith("-") for lines in cleaned for line in lines)
    vocab = _vocabulary("\n".join(lines) for lines in cleaned) if needs_vocab else set()
    return [build_paragraphs(lines, vocab) for lines in cleaned], removed


# U+FFFE and \x02 are left out: PDFium marks removed line-end hyphens with them.
_BAD_CHARS = re.compile(r"[\ufffd\ue000-\uf8ff\x00\x01\x03-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


_SCRIPT_GROUPS = {
    "HIRAGANA": "CJK",
    "KATAKANA": "CJK",
    "CJK": "CJK",
    "HALFWIDTH": "CJK",
    "FULLWIDTH": "CJK",
    "IDEOGRAPHIC": "CJK",
    "HANGUL": "CJK",
}


_SAMPLE_CHARS = 20_000


# Scripts written without spaces between words: the word-length check does not apply.
_UNSPACED_SCRIPTS = {"CJK", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}


def text_problem(text: str, min_chars: int = MIN_TEXT_CHARS) -> str | None:
    """Why `text` (a whole document's raw text) is not worth indexing, or None if it looks
    like real text: fewer than `min_chars` non-space characters, replacement/private-use/
    control characters (> 10% of them), too few letters (< 20%), or over 10% of the
    letters outside the two most common scripts (mojibake from fonts without a Unicode
    map: Greek, Armenian, Lao... mixed), one character over half of the text ("aaaa"), or
    in space-separated scripts, words longer than 25 characters on average. Checks a
    sample of <= 20k characters (200k for word lengths)."""
    compact = "".join(text.split())
    if len(compact) < min_chars:
        return "almost no text"
    if len(compact) > _SAMPLE_CHARS:
        step = len(compact) // _SAMPLE_CHARS
        compact = compact[::step][:_SAMPLE_CHARS]
    n = len(compact)
    if len(_BAD_CHARS.findall(compact)) > 0.1 * n:
        return "replacement or control characters"
    letters = [c for c in compact if c.isalpha()]
    # 20%: number-heavy tables (prices, codes) are real text; symbol soup is not.
    if len(letters) < 0.2 * n:
        return "too few letters"
    scripts: Counter[str] = Counter()
    for c in letters[:5000]:
        name = unicodedata.name(c, "UNKNOWN").split(" ", 1)[0]
        scripts[_SCRIPT_GROUPS.get(name, name)] += 1
    total = sum(scripts.values())
    top_two = sum(c for _, c in scripts.most_common(2))
    if top_two < 0.9 * total:
        return "letters from many unrelated scripts"
    if Counter(compact).most_common(1)[0][1] > 0.5 * n:
        return "one character repeated"
    if scripts.most_common(1)[0][0] not in _UNSPACED_SCRIPTS:
        tokens = text[:200_000].split()
        if sum(map(len, tokens)) > 25 * len(tokens):
            return "no word structure (words over 25 letters on average)"
    return None


FailureKind = Literal["password", "broken", "dependency"]


class _ExtractorError(Exception):
    """One extractor could not read the file; `kind` ranks the message shown to the user."""

    def __init__(self, message: str, kind: FailureKind = "broken") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _RawText:
    pages: list[str]
    extractor: str
    warnings: list[str]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_AES_MISSING = "AES-encrypted and the 'cryptography' package is missing"


def _read_pypdf(path: Path, password: Passwords, on_page: ProgressFn | None) -> _RawText:
    import pypdf
    from pypdf import PasswordType
    from pypdf.errors import DependencyError

    notes: list[str] = []
    try:
        reader = pypdf.PdfReader(path, strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            passwords = password_list(password)
            if not any(reader.decrypt(p) != PasswordType.NOT_DECRYPTED for p in passwords):
                raise _ExtractorError(_password_failure(passwords), "password")
        total = len(reader.pages)
    except _ExtractorError:
        raise
    except DependencyError as exc:
        raise _ExtractorError(_AES_MISSING, "dependency") from exc
    except Exception as exc:  # any pypdf failure to open is "could not read"
        raise _ExtractorError(f"unreadable PDF ({_short(exc)})") from exc

    def read_page(index: int) -> str:
        try:
            return _pypdf_page_text(reader.pages[index])
        except DependencyError as exc:
            raise _ExtractorError(_AES_MISSING, "dependency") from exc

    texts = _read_pages("pypdf", total, read_page, on_page, notes)
    return _RawText(texts, "pypdf", notes)


def _read_pages(
    extractor: str,
    total: int,
    read_page: Callable[[int], str],
    on_page: ProgressFn | None,
    notes: list[str],
) -> list[str]:
    """Every page's text, `read_page(i)` for i in 0..total-1. A page that fails is left
    empty and counted (the first failure and the count go to `notes`), so one broken page
    never loses the others; when every page fails, the file is unreadable."""
    texts: list[str] = []
    failed = 0
    for number in range(1, total + 1):
        try:
            texts.append(read_page(number - 1))
        except _ExtractorError:
            raise
        except Exception as exc:  # any failure of one page's text
            failed += 1
            texts.append("")
            if failed == 1:
                notes.append(f"{extractor}: page {number}: {_short(exc)}")
        if on_page is not None:
            on_page(number, total)
    if failed:
        notes.append(f"{extractor} could not read {failed} of {total} pages")
    if total and failed == total:
        raise _ExtractorError(f"unreadable PDF ({notes[0].removeprefix(extractor + ': ')})")
    return texts


def _password_variants(password: str) -> list[str]:
    """The password as given, then SASLprep-like (soft hyphens etc. dropped, NFKC): AES-256
    R6 files expect the SASLprep form, which PDFium does not compute itself."""
    mapped = "".join(
        " " if unicodedata.category(c) == "Zs" else c
        for c in password
        if c not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufeff"
        and not ("\ufe00" <= c <= "\ufe0f")
    )
    variants = [password, unicodedata.normalize("NFKC", mapped)]
    return list(dict.fromkeys(variants))


def _open_pdfium(path: Path, password: Passwords) -> object:
    """The file as a pypdfium2 PdfDocument, trying no password, then each one given
    (as typed and SASLprep-mapped). Raises _ExtractorError."""
    import pypdfium2 as pdfium

    passwords = password_list(password)
    tries: list[str | None] = [None, *(v for p in passwords for v in _password_variants(p))]
    last: Exception | None = None
    for attempt in tries:
        try:
            return pdfium.PdfDocument(str(path), password=attempt)
        except pdfium.PdfiumError as exc:
            last = exc
            if "password" not in str(exc).lower():
                raise _ExtractorError(f"unreadable PDF ({_short(exc)})") from exc
        except Exception as exc:
            raise _ExtractorError(f"unreadable PDF ({_short(exc)})") from exc
    raise _ExtractorError(_password_failure(passwords), "password") from last


def _read_pdfium(path: Path, password: Passwords, on_page: ProgressFn | None) -> _RawText:
    notes: list[str] = []
    doc: Any = _open_pdfium(path, password)

    def read_page(index: int) -> str:
        page = doc[index]
        try:
            textpage = page.get_textpage()
            try:
                return _pdfium_page_text(textpage)
            finally:
                textpage.close()
        finally:
            page.close()

    try:
        texts = _read_pages("pdfium", len(doc), read_page, on_page, notes)
    finally:
        doc.close()
    return _RawText(texts, "pdfium", notes)


_READERS = {"pypdf": _read_pypdf, "pdfium": _read_pdfium}


PARAGRAPH_GAP = 1.4  # a line gap this many times the page's usual line spacing = paragraph


def mark_paragraph_gaps(lines: list[str], ys: list[float | None]) -> str:
    """Join `lines` with "\n", inserting a blank line where the vertical gap to the previous
    line exceeds PARAGRAPH_GAP x the page's median line spacing (`ys`: baseline of each
    line in PDF points, y grows upwards; None where unknown). Jumps upwards (next column)
    and unknown positions add nothing."""
    gaps = [
        a - b for a, b in itertools.pairwise(ys) if a is not None and b is not None and a - b > 0.5
    ]
    if len(gaps) < 3:
        return "\n".join(lines)
    gaps.sort()
    spacing = gaps[len(gaps) // 2]
    out = [lines[0]]
    for i in range(1, len(lines)):
        a, b = ys[i - 1], ys[i]
        if a is not None and b is not None and a - b > PARAGRAPH_GAP * spacing and lines[i]:
            out.append("")
        out.append(lines[i])
    return "\n".join(out)


def _pypdf_page_text(page: object) -> str:
    """pypdf's plain text of a page with blank lines at paragraph gaps (from the text
    matrices pypdf reports to a visitor; the pieces concatenate to the plain text)."""
    pieces: list[tuple[str, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        if text:
            pieces.append((text, tm[4] * cm[1] + tm[5] * cm[3] + cm[5]))

    text: str = page.extract_text(visitor_text=visit) or ""  # type: ignore[attr-defined]
    if not text or "".join(p for p, _ in pieces) != text:
        return text
    lines: list[str] = [""]
    ys: list[float | None] = [None]
    for piece, y in pieces:
        for k, part in enumerate(piece.split("\n")):
            if k:
                lines.append("")
                ys.append(None)
            if part:
                lines[-1] += part
                if ys[-1] is None and part.strip():
                    ys[-1] = y
    return mark_paragraph_gaps(lines, ys)


def _pdfium_page_text(textpage: object) -> str:
    """PDFium's text of a page with blank lines at paragraph gaps (baseline of each line's
    first character; PDFium's generated "\r\n" count as characters, so indices align)."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    text: str = textpage.get_text_range()  # type: ignore[attr-defined]
    if textpage.count_chars() != len(text):  # type: ignore[attr-defined]
        return text  # characters outside the BMP: indices do not align, skip geometry
    x, y = ctypes.c_double(), ctypes.c_double()
    lines = text.split("\r\n")
    ys: list[float | None] = []
    index = 0
    for line in lines:
        first = len(line) - len(line.lstrip())
        if line.strip() and pdfium_c.FPDFText_GetCharOrigin(textpage, index + first, x, y):
            ys.append(y.value)
        else:
            ys.append(None)
        index += len(line) + 2
    return mark_paragraph_gaps(lines, ys)


def _check_pdf_header(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except FileNotFoundError as exc:
        raise PdfError(f"{path.name}: file not found", status="failed") from exc
    except IsADirectoryError as exc:
        raise PdfError(f"{path.name}: is a directory, not a PDF", status="skipped") from exc
    except OSError as exc:
        raise PdfError(f"{path.name}: cannot read ({exc.strerror})", status="failed") from exc
    # The spec allows junk before "%PDF-" (readers search the first 1024 bytes).
    if b"%PDF-" not in head:
        raise PdfError(f"{path.name}: not a PDF (no %PDF- header)", status="skipped")


def _doc_chars(texts: list[str]) -> int:
    return sum(len(t) - t.count(" ") - t.count("\n") for t in texts)


# Extractor order by measured cost: PDFium reads the first PROBE_PAGES pages and pypdf the
# first one, each timed in CPU seconds of the thread that reads (`time.thread_time`), which
# the machine's load barely moves. Not the process's CPU seconds: where extraction runs in
# a process that holds a model, the model's busy thread pool would count too (a
# fresh-clone CI run once put PDFium first for a test file whose pypdf page takes 1 ms;
# stop 31). When pypdf's page costs over PROBE_SLOW_S and over PROBE_FACTOR times PDFium's
# per-page cost, PDFium goes first, unless its text of that page is worse (under
# PROBE_MIN_SHARE of pypdf's characters, or garbage where pypdf's is clean). One pypdf page
# is all the probe adds where pypdf stays first. Measured (bench/ingest_long.py --probe,
# docs/extraction.md): CJK files (ja-public) and the LaTeX/Texinfo manuals (pdfs-long) are
# far above the factor, plain English articles (qa-public) below it and keep pypdf's text.
PROBE_PAGES = 3


PROBE_SLOW_S = 0.02


PROBE_FACTOR = 8.0


PROBE_MIN_SHARE = 0.9


def _probe_pypdf(path: Path, password: str | None) -> tuple[list[str], float]:
    """pypdf's text of the first page and the CPU seconds it took this thread (opening
    not counted). A page measured slow is read once more, from a freshly opened file, and
    the faster reading counts: one reading can be slowed by what else the process does."""
    import pypdf

    def first_page() -> tuple[str, float] | None:
        reader = pypdf.PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            reader.decrypt(password or "")
        if not len(reader.pages):
            return None
        t0 = time.thread_time()
        text = _pypdf_page_text(reader.pages[0])
        return text, time.thread_time() - t0

    read = first_page()
    if read is None:
        return [], 0.0
    text, seconds = read
    if seconds > PROBE_SLOW_S:
        again = first_page()
        seconds = min(seconds, again[1]) if again else seconds
    return [text], seconds


def _probe_pdfium(path: Path, password: str | None) -> tuple[list[str], float]:
    """PDFium's text of the first PROBE_PAGES pages and the CPU seconds they took this
    thread."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError:
        doc = pdfium.PdfDocument(str(path), password=password)
    try:
        t0 = time.thread_time()
        texts = []
        for i in range(min(PROBE_PAGES, len(doc))):
            page = doc[i]
            textpage = page.get_textpage()
            texts.append(_pdfium_page_text(textpage))
            textpage.close()
            page.close()
        return texts, time.thread_time() - t0
    finally:
        doc.close()


def probe_costs(path: Path, password: str | None = None) -> dict[str, tuple[list[str], float]]:
    """{extractor: (texts of the probed pages, CPU seconds per page)}: PDFium on the first
    PROBE_PAGES pages, pypdf on the first page."""
    out = {}
    for name, probe in (("pdfium", _probe_pdfium), ("pypdf", _probe_pypdf)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            texts, seconds = probe(path, password)
        out[name] = (texts, seconds / max(1, len(texts)))
    return out


def _cheaper_first(path: Path, password: Passwords) -> list[str]:
    """["pdfium", "pypdf"] when pypdf is measured slow on the first page of `path` and
    PDFium's text of it is as good; else ["pypdf", "pdfium"]. Any failure while probing
    (a wrong or missing password included) keeps pypdf first: the extraction loop then
    reports or falls back as usual."""
    first = password if password is None or isinstance(password, str) else None
    if first is None and password:
        first = next(iter(password), None)
    try:
        costs = probe_costs(path, first)
    except Exception:  # the real extraction reports what is wrong with the file
        return ["pypdf", "pdfium"]
    return order_by_cost(costs)


def order_by_cost(costs: dict[str, tuple[list[str], float]]) -> list[str]:
    """The extractor order `probe_costs` results call for (see PROBE_FACTOR)."""
    (pypdf_texts, pypdf_s), (pdfium_texts, pdfium_s) = costs["pypdf"], costs["pdfium"]
    if not pypdf_texts or not pdfium_texts:
        return ["pypdf", "pdfium"]
    slow = pypdf_s > PROBE_SLOW_S and pypdf_s > PROBE_FACTOR * pdfium_s
    pypdf_text, pdfium_text = pypdf_texts[0], pdfium_texts[0]
    as_good = _doc_chars([pdfium_text]) >= PROBE_MIN_SHARE * _doc_chars([pypdf_text]) and (
        text_problem(pdfium_text, SHORT_TEXT_CHARS) is None
        or text_problem(pypdf_text, SHORT_TEXT_CHARS) is not None
    )
    return ["pdfium", "pypdf"] if slow and as_good else ["pypdf", "pdfium"]


def extract_document_inprocess(
    path: Path,
    *,
    password: Passwords = None,
    fallback: bool = True,
    on_page: ProgressFn | None = None,
    primary: str = "pypdf",
    ocr: bool = False,
    ocr_language: str = "eng",
) -> Document:
    """Extract `path` in this process, without a time limit (see `extract_document`).

    `primary` is the first extractor ("pypdf" or "pdfium"); with `fallback` the other one
    is tried when the first cannot open the file, gives almost no text or garbage, or
    leaves over 20% of pages empty that the other can fill. With pypdf first and the
    fallback allowed, PDFium goes first instead on files where pypdf is measured slow on
    the first page and PDFium's text of it is as good (`_cheaper_first`). With `ocr`, pages
    left without text (all pages when the text layer is garbled) are read by Tesseract
    (ingest/ocr.py).
    Raises PdfError("skipped"/"failed").
    """
    try:
        document = _extract_text_layer(
            Path(path), password=password, fallback=fallback, on_page=on_page, primary=primary
        )
    except PdfError as exc:
        if not ocr or exc.status != "skipped" or not str(exc).endswith((OCR_HINT, GARBLED_HINT)):
            raise
        return _with_ocr(Path(path), password, None, ocr_language, on_page, str(exc))
    if ocr and len(document.pages) < document.page_count:
        return _with_ocr(Path(path), password, document, ocr_language, on_page, None)
    return document


def _with_ocr(
    path: Path,
    password: Passwords,
    document: Document | None,
    language: str,
    on_page: ProgressFn | None,
    why: str | None,
) -> Document:
    """`document` (None: no usable text layer) with its pages without text read by OCR."""
    from ragchat.ingest.ocr import MIN_CONFIDENCE, OcrUnavailableError, check_ocr, ocr_pages

    try:
        check_ocr(language)
    except OcrUnavailableError as exc:
        if document is not None:
            return replace(document, warnings=(*document.warnings, f"no OCR: {exc}"))
        raise PdfError(f"{why}; {exc}", status="skipped") from exc
    try:
        pdf: Any = _open_pdfium(path, password)
    except _ExtractorError as exc:
        if document is not None:
            return document
        raise PdfError(f"{path.name}: {exc}", status="failed") from exc
    try:
        total = len(pdf)
        have = {p.number: p.text for p in document.pages} if document else {}
        todo = [n for n in range(1, total + 1) if n not in have]
        result = ocr_pages(pdf, todo, language=language, on_page=on_page)
    finally:
        pdf.close()
    numbers = sorted(result.texts)
    cleaned, _ = normalise_pages([result.texts[n] for n in numbers])
    texts = dict(have)
    texts.update((n, t) for n, t in zip(numbers, cleaned, strict=True) if t.strip())
    doubt = ""
    if result.unreliable:
        worst = max(result.unreliable.values())
        doubt = (
            f"OCR text of {len(result.unreliable)} pages dropped as unreliable (mean word "
            f"confidence {worst:.0f} < {MIN_CONFIDENCE:.0f}: another script or language? "
            f"see --ocr-language)"
        )
    if len(texts) == len(have):
        if document is not None:
            return replace(document, warnings=(*document.warnings, doubt)) if doubt else document
        found = doubt or "OCR found none either"
        raise PdfError(f"{path.name}: no text, and {found}", status="skipped")
    pages = tuple(Page(n, texts[n]) for n in sorted(texts))
    extractor = f"{document.extractor}+ocr" if document else "ocr"
    notes = (*document.warnings,) if document else ()
    note = f"OCR read {len(texts) - len(have)} of {len(todo)} pages without text"
    return Document(path, pages, total, extractor, (*notes, note, *([doubt] if doubt else [])))


def _extract_text_layer(
    path: Path,
    *,
    password: Passwords,
    fallback: bool,
    on_page: ProgressFn | None,
    primary: str,
) -> Document:
    """The text layer of `path` (see `extract_document_inprocess`)."""
    _check_pdf_header(path)
    order = [primary] + ([name for name in _READERS if name != primary] if fallback else [])
    if order == ["pypdf", "pdfium"]:
        order = _cheaper_first(path, password)
        primary = order[0]

    failures: list[_ExtractorError] = []
    candidates: list[tuple[_RawText, str | None]] = []
    for name in order:
        try:
            raw = _READERS[name](path, password, on_page)
        except _ExtractorError as exc:
            failures.append(exc)
            continue
        problem = text_problem("\n".join(raw.pages)) if raw.pages else "zero pages"
        candidates.append((raw, problem))
        empty_share = sum(1 for t in raw.pages if not t.strip()) / max(1, len(raw.pages))
        if problem is None and empty_share <= 0.2:
            break

    good = [(raw, p) for raw, p in candidates if p is None]
    if not good:
        # A genuinely short text ("Issue 6010") is still text: accept it when it is clean.
        good = [
            (raw, None)
            for raw, p in candidates
            if p == "almost no text"
            and text_problem("\n".join(raw.pages), SHORT_TEXT_CHARS) is None
        ]
    if good:
        # Prefer the first extractor unless a later one has clearly more text.
        chosen = good[0][0]
        for raw, _ in good[1:]:
            if _doc_chars(raw.pages) > 1.5 * _doc_chars(chosen.pages):
                chosen = raw
        notes = list(chosen.warnings)
        if chosen.extractor != primary:
            why = next(
                (str(f) for f in failures),
                next((p for _, p in candidates if p is not None), "fewer pages with text"),
            )
            notes.append(f"{primary}: {why}; used {chosen.extractor}")
        return _document(path, chosen, notes)

    password_failure = next((f for f in failures if f.kind == "password"), None)
    if password_failure is not None:
        raise PdfError(f"{path.name}: {password_failure}", status="failed")
    # Trust the first extractor that opened the file; if the primary one could not read it
    # and the fallback found nothing usable, report why the primary failed.
    broken = next((f for f in failures if f.kind == "broken"), None)
    if candidates and (broken is None or candidates[0][0].extractor == primary):
        if not any(raw.pages for raw, _ in candidates):
            raise PdfError(f"{path.name}: the PDF has zero pages", status="skipped")
        if all(p in {"almost no text", "zero pages"} for _, p in candidates):
            raise PdfError(f"{path.name}: {OCR_HINT}", status="skipped")
        raise PdfError(f"{path.name}: {GARBLED_HINT}", status="skipped")
    if [f.kind for f in failures] == ["dependency"]:
        raise PdfError(
            f"{path.name}: {_AES_MISSING} (pip install cryptography, or allow the PDFium fallback)",
            status="failed",
        )
    # One extractor could not read the file and the other found nothing usable in it.
    raise PdfError(f"{path.name}: {broken or failures[0]}", status="failed")


def _document(path: Path, raw: _RawText, notes: list[str]) -> Document:
    texts, _removed = normalise_pages(raw.pages)
    pages = tuple(Page(number, text) for number, text in enumerate(texts, start=1) if text)
    if not pages:
        raise PdfError(f"{path.name}: {OCR_HINT}", status="skipped")
    return Document(
        path=path,
        pages=pages,
        page_count=len(raw.pages),
        extractor=raw.extractor,
        warnings=tuple(notes),
    )


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver: children fork from a small server process that imported the main module,
    # this module and the two PDF libraries once (no torch threads), so a worker starts in
    # milliseconds. The server itself is started fresh (fork+exec), never forked from a
    # caller that may hold torch threads. As with any spawn-type start, the main module
    # must be importable (a file, `python -m`, or none) and guard its work with
    # `if __name__ == "__main__"`. Platforms without forkserver use spawn.
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    # pypdf imports filters/codecs lazily on the first page: preload them too.
    ctx.set_forkserver_preload(
        ["__main__", "ragchat.ingest.pdf", "pypdf", "pypdf.filters", "pypdf._codecs", "pypdfium2"]
    )
    return ctx


def _worker_main(
    conn: Connection,
    path: str,
    password: Passwords,
    fallback: bool,
    primary: str,
    ocr: bool = False,
    ocr_language: str = "eng",
) -> None:
    """Worker entry: extract and send ("page", done, total)... then ("ok", ...) or
    ("error", status, message)."""
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)  # its warnings are for developers
    warnings.simplefilter("ignore")
    last_sent = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last_sent[0] >= 0.05:
            last_sent[0] = now
            conn.send(("page", done, total))

    try:
        doc = extract_document_inprocess(
            Path(path),
            password=password,
            fallback=fallback,
            on_page=progress,
            primary=primary,
            ocr=ocr,
            ocr_language=ocr_language,
        )
        conn.send(
            (
                "ok",
                [(p.number, p.text) for p in doc.pages],
                doc.page_count,
                doc.extractor,
                list(doc.warnings),
            )
        )
    except PdfError as exc:
        conn.send(("error", exc.status, str(exc)))
    except BaseException as exc:  # the parent must get an answer, not a dead pipe
        conn.send(("error", "failed", f"{Path(path).name}: extractor error ({_short(exc)})"))
    finally:
        conn.close()


# Whole-file cap per page, on top of the per-page limit; pypdf manages ~50 pages/s.
SECONDS_PER_PAGE_CAP = 2.0


# With OCR: Tesseract takes 1-5 s for a 300 dpi page on one core.
SECONDS_PER_OCR_PAGE_CAP = 20.0


def extract_document(
    path: Path,
    *,
    password: Passwords = None,
    timeout_s: float = 60.0,
    fallback: bool = True,
    on_page: ProgressFn | None = None,
    primary: str = "pypdf",
    ocr: bool = False,
    ocr_language: str = "eng",
) -> Document:
    """Extract the text of the PDF at `path`, page by page (1-based, pages without text
    left out), in a worker process that is killed when no page finishes for `timeout_s`
    seconds, or when the whole file takes longer than `timeout_s` plus
    SECONDS_PER_PAGE_CAP per page (a 2,400-page manual legitimately takes a minute or
    more; one pathological page must not hang ingest).

    `password` (one, or several tried in turn) is tried after the empty password; it goes
    to the worker through a pipe, never on a command line. `fallback` allows PDFium when
    pypdf fails or gives no/garbled text; `ocr` reads pages without text with Tesseract
    (`ocr_language`); `on_page(done, total)` reports extraction progress
    (pages of the extractor currently running). Raises PdfError with status "skipped"
    (not a PDF, zero pages, no text) or "failed" (unreadable, password, time limit,
    worker crash); no other exception escapes except from `on_page` itself.
    """
    path = Path(path)
    _check_pdf_header(path)  # cheap, and gives a clean error without starting a worker
    ctx = _mp_context()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_worker_main,
        args=(sender, str(path), password, fallback, primary, ocr, ocr_language),
        name=f"ragchat-pdf:{path.name}",
        daemon=True,
    )
    started = time.monotonic()
    deadline = started + timeout_s  # moves on while pages keep finishing
    cap = float("inf")
    last_done = 0
    try:
        proc.start()
    except OSError as exc:
        raise PdfError(f"{path.name}: could not start the extractor ({exc})") from exc
    sender.close()
    try:
        while True:
            now = time.monotonic()
            remaining = min(deadline, cap) - now
            if remaining <= 0:
                why = (
                    f"no page finished within {timeout_s:g} s"
                    if now >= deadline
                    else f"took longer than {cap - started:.0f} s in all"
                )
                raise PdfError(
                    f"{path.name}: gave up: {why} (time limit; raise it with --timeout)",
                    status="failed",
                )
            if not receiver.poll(min(remaining, 1.0)):
                if not proc.is_alive() and not receiver.poll(0):
                    raise PdfError(
                        f"{path.name}: the extractor crashed (exit code {proc.exitcode})",
                        status="failed",
                    )
                continue
            try:
                message = receiver.recv()
            except (EOFError, OSError) as exc:
                proc.join(1.0)
                raise PdfError(
                    f"{path.name}: the extractor crashed (exit code {proc.exitcode})",
                    status="failed",
                ) from exc
            if message[0] == "page":
                done, total = message[1], message[2]
                if done != last_done:
                    last_done = done
                    deadline = time.monotonic() + timeout_s
                per_page = SECONDS_PER_OCR_PAGE_CAP if ocr else SECONDS_PER_PAGE_CAP
                cap = started + timeout_s + per_page * total
                if on_page is not None:
                    on_page(message[1], message[2])
            elif message[0] == "ok":
                _, pages, page_count, extractor, notes = message
                return Document(
                    path=path,
                    pages=tuple(Page(n, t) for n, t in pages),
                    page_count=page_count,
                    extractor=extractor,
                    warnings=tuple(notes),
                )
            else:
                _, status, text = message
                raise PdfError(text, status=status)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        receiver.close()
