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


def ocr_pages(
    document: Any,
    numbers: Sequence[int],
    *,
    language: str = "eng",
    on_page: Callable[[int, int], None] | None = None,
) -> dict[int, str]:
    """Text of the 1-based pages `numbers` of an open pypdfium2 PdfDocument, by Tesseract
    (raw, one line per text line); pages it could not render are left out."""
    import pytesseract

    # One Tesseract thread per page: the cores are shared with embedding and extraction,
    # and Tesseract's OpenMP threads gain little on one page.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    texts: dict[int, str] = {}
    for done, number in enumerate(numbers, start=1):
        page = document[number - 1]
        try:
            bitmap = page.render(scale=OCR_DPI / 72, grayscale=True)
            image = bitmap.to_pil()
            texts[number] = pytesseract.image_to_string(image, lang=language)
        except Exception:  # one unrenderable page must not lose the others
            continue
        finally:
            page.close()
        if on_page is not None:
            on_page(done, len(numbers))
    return texts
