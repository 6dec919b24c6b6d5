"""A tiny, dependency-free PDF writer for tests: pages of Helvetica text, one line per "\\n".

`make_pdf(["first page\\nsecond line", "page two"], tmp_path / "a.pdf")` writes a valid
two-page PDF whose text pypdf and PDFium extract line by line. Text is encoded as
WinAnsi (cp1252); characters outside it become "?". An empty page string gives a page with
no text at all (a stand-in for a scanned page). `header`/`footer` are drawn at the top and
bottom of every page; "{page}" and "{pages}" in them are replaced by the 1-based page
number and the page count.
"""

from __future__ import annotations

import zlib
from pathlib import Path

PAGE_WIDTH = 612  # US Letter, points
PAGE_HEIGHT = 792
MARGIN = 72


def _pdf_string(text: str) -> bytes:
    """`text` as a PDF literal string in WinAnsi encoding, with (, ) and \\ escaped."""
    raw = text.encode("cp1252", errors="replace")
    raw = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + raw + b")"


def _text_line(x: float, y: float, size: float, text: str) -> bytes:
    return b"BT /F1 %.1f Tf %.1f %.1f Td " % (size, x, y) + _pdf_string(text) + b" Tj ET\n"


def page_content(
    text: str,
    *,
    header: str | None = None,
    footer: str | None = None,
    font_size: float = 11.0,
    leading: float = 14.0,
) -> bytes:
    """The content stream of one page: optional header, body lines top-down, optional footer."""
    out = bytearray()
    if header:
        out += _text_line(MARGIN, PAGE_HEIGHT - 40, 9, header)
    y = PAGE_HEIGHT - MARGIN
    for line in text.split("\n") if text else []:
        if line:
            out += _text_line(MARGIN, y, font_size, line)
        y -= leading
    if footer:
        out += _text_line(PAGE_WIDTH / 2 - 20, 30, 9, footer)
    if not out:
        # A page with graphics but no text, like a scan without an OCR layer.
        out += b"0.8 g 100 100 200 200 re f\n"
    return bytes(out)


def make_pdf(
    pages: list[str],
    path: Path,
    *,
    header: str | None = None,
    footer: str | None = None,
    font_size: float = 11.0,
    leading: float = 14.0,
    compress: bool = False,
) -> Path:
    """Write `pages` (one string per page, "\\n" between lines) as a Helvetica PDF at `path`.

    Returns `path`. A zero-length `pages` list is refused: use pypdf's PdfWriter for that.
    """
    if not pages:
        raise ValueError("make_pdf needs at least one page")
    n = len(pages)
    # Object numbers: 1 catalog, 2 page tree, 3 font, then (page, content) pairs.
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    kids = []
    for i, text in enumerate(pages):
        page_obj, content_obj = 4 + 2 * i, 5 + 2 * i
        kids.append(b"%d 0 R" % page_obj)
        objects[page_obj] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
            % (PAGE_WIDTH, PAGE_HEIGHT, content_obj)
        )
        stream = page_content(
            text,
            header=header.format(page=i + 1, pages=n) if header else None,
            footer=footer.format(page=i + 1, pages=n) if footer else None,
            font_size=font_size,
            leading=leading,
        )
        if compress:
            stream = zlib.compress(stream)
            objects[content_obj] = (
                b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
                + stream
                + b"\nendstream"
            )
        else:
            objects[content_obj] = (
                b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
            )
    objects[2] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % n

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
    path = Path(path)
    path.write_bytes(bytes(out))
    return path
