"""OCR for pages without a usable text layer (scanned PDFs): each page is rendered by PDFium
at OCR_DPI and read by Tesseract through pytesseract. Page numbers are the PDF's own.

Tesseract is a program, not a Python package: `apt-get install tesseract-ocr
tesseract-ocr-eng` (Debian/Ubuntu), `brew install tesseract` (macOS); pytesseract and
Pillow come with `pip install 'ragchat[ocr]'`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INSTALL_HINT = (
    "OCR needs Tesseract: install it with `apt-get install tesseract-ocr tesseract-ocr-eng` "
    "(macOS: `brew install tesseract`) and `pip install pytesseract pillow`"
)


OCR_DPI = 300  # Tesseract's accuracy drops quickly below ~200 dpi


class OcrUnavailableError(Exception):
    """Tesseract, its language data or pytesseract is missing; str() says how to install."""


def check_ocr(language: str = "eng") -> None:
    """Raise OcrUnavailableError unless Tesseract, pytesseract and the `language` data are here."""
    try:
        import pytesseract
    except ImportError as exc:
        raise OcrUnavailableError(INSTALL_HINT) from exc
    if shutil.which("tesseract") is None:
        raise OcrUnavailableError(INSTALL_HINT)
    try:
        have = set(pytesseract.get_languages(config=""))
    except Exception as exc:  # pytesseract raises its own error types for a broken binary
        raise OcrUnavailableError(f"Tesseract does not run ({exc}); {INSTALL_HINT}") from exc
    missing = [lang for lang in language.split("+") if lang not in have]
    if missing:
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        raise OcrUnavailableError(
            f"Tesseract has no data for {'+'.join(missing)}: `apt-get install {packages}`"
        )


# Mean Tesseract word confidence below which a page's OCR text is dropped as unreliable.
# On pdfs-odd, text in the language set scores 68-88 (issue7200: 88, multilang: 68);
# Arabic calligraphy read as English gives 25-37 of junk letters.
MIN_CONFIDENCE = 50.0


@dataclass(frozen=True)
class OcrResult:
    """Text per 1-based page, and the pages dropped for low confidence (their mean)."""

    texts: dict[int, str]
    unreliable: dict[int, float]


def ocr_pages(
    document: Any,
    numbers: Sequence[int],
    *,
    language: str = "eng",
    on_page: Callable[[int, int], None] | None = None,
) -> OcrResult:
    """Text of the 1-based pages `numbers` of an open pypdfium2 PdfDocument, by Tesseract
    (one line per text line, a blank line between paragraphs). Pages it could not render
    are left out; pages whose mean word confidence is below MIN_CONFIDENCE too."""
    import pytesseract

    # One Tesseract thread per page: the cores are shared with embedding and extraction,
    # and Tesseract's OpenMP threads gain little on one page.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    texts: dict[int, str] = {}
    unreliable: dict[int, float] = {}
    for done, number in enumerate(numbers, start=1):
        page = document[number - 1]
        try:
            image = page.render(scale=OCR_DPI / 72, grayscale=True).to_pil()
            data = pytesseract.image_to_data(
                image, lang=language, output_type=pytesseract.Output.DICT
            )
        except Exception:  # one unrenderable page must not lose the others
            continue
        finally:
            page.close()
        text, confidence = _page_text(data)
        if text and confidence < MIN_CONFIDENCE:
            unreliable[number] = confidence
        elif text:
            texts[number] = text
        if on_page is not None:
            on_page(done, len(numbers))
    return OcrResult(texts, unreliable)


def _page_text(data: dict[str, list[Any]]) -> tuple[str, float]:
    """Tesseract's words (image_to_data) as lines and paragraphs, and their mean
    confidence (0-100)."""
    lines: dict[tuple[int, int, int], list[str]] = {}
    confidences: list[float] = []
    for i, word in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not str(word).strip() or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(str(word))
        confidences.append(conf)
    out: list[str] = []
    previous: tuple[int, int] | None = None
    for (block, par, _line), words in lines.items():
        if previous is not None and (block, par) != previous:
            out.append("")
        out.append(" ".join(words))
        previous = (block, par)
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return "\n".join(out), mean
