"""OCR of scanned PDFs with the real Tesseract: a text PDF is rendered and turned into an
image-only PDF here (a "scan"), and the OCR'd text is compared word by word with the
original; the image-only files of ../shared/bench/pdfs-odd get text too. Needs the
`tesseract` program (scripts/test.sh installs it) and pytesseract."""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest
from pdfmaker import make_pdf

from ragchat.config import load_settings
from ragchat.errors import PdfError
from ragchat.ingest.ocr import check_ocr
from ragchat.ingest.pdf import extract_document, extract_document_inprocess
from ragchat.ingest.pipeline import ingest
from ragchat.retrieval.retriever import open_retriever

if shutil.which("tesseract") is None:  # pragma: no cover - scripts/test.sh installs it
    pytest.fail(
        "tesseract is not installed: `apt-get install tesseract-ocr tesseract-ocr-eng` "
        "(scripts/test.sh does this on a fresh machine)",
        pytrace=False,
    )

PAGES = [
    "The lighthouse at Gull Point was built by the engineer Margaret Alder.\n"
    "Work began in 1869 and the light was first lit in October 1871.\n"
    "The first keeper was Tobias Wren, a former ship's carpenter, who kept\n"
    "a logbook of every storm and every ship that passed the point.",
    "The village bakery sells rye bread and cinnamon buns every morning.\n"
    "Its oven was installed in 1923 and still burns beech wood.\n"
    "On Sundays the baker makes a large plum cake for the harbour workers.",
]

ACCURACY_BAR = 0.95  # share of the original words OCR gives back, in order (measured: 1.00)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_accuracy(original: str, ocr: str) -> float:
    """Share of `original`'s words that OCR reproduced, in order (longest matching blocks)."""
    a, b = words(original), words(ocr)
    matched = sum(m.size for m in difflib.SequenceMatcher(None, a, b).get_matching_blocks())
    return matched / len(a)


def make_scan(text_pdf: Path, out: Path, dpi: int = 200) -> Path:
    """Render every page of `text_pdf` and write the images as an image-only PDF."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(text_pdf))
    images = [doc[i].render(scale=dpi / 72, grayscale=True).to_pil() for i in range(len(doc))]
    doc.close()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out


@pytest.fixture()
def scan(tmp_path: Path) -> Path:
    return make_scan(make_pdf(PAGES, tmp_path / "text.pdf", font_size=12), tmp_path / "scan.pdf")


def test_a_scan_has_no_text_layer_and_says_to_use_ocr(scan: Path) -> None:
    with pytest.raises(PdfError, match=r"--ocr") as info:
        extract_document_inprocess(scan)
    assert info.value.status == "skipped"


def test_ocr_gives_the_text_back_with_page_numbers(scan: Path) -> None:
    doc = extract_document_inprocess(scan, ocr=True)
    assert doc.extractor == "ocr" and doc.page_count == 2
    assert [p.number for p in doc.pages] == [1, 2]
    for page, original in zip(doc.pages, PAGES, strict=True):
        accuracy = word_accuracy(original, page.text)
        print(f"page {page.number}: word accuracy {accuracy:.3f}")
        assert accuracy >= ACCURACY_BAR, page.text


def test_ocr_fills_only_the_pages_without_text(tmp_path: Path) -> None:
    # page 1 has a text layer; page 2 is a scan of PAGES[1]
    import pypdf

    scanned = make_scan(make_pdf([PAGES[1]], tmp_path / "p2.pdf", font_size=12), tmp_path / "s.pdf")
    writer = pypdf.PdfWriter()
    writer.append(make_pdf([PAGES[0]], tmp_path / "p1.pdf"))
    writer.append(scanned)
    mixed = tmp_path / "mixed.pdf"
    with open(mixed, "wb") as fh:
        writer.write(fh)
    doc = extract_document_inprocess(mixed, ocr=True)
    assert doc.extractor == "pypdf+ocr"
    assert doc.pages[0].text.startswith("The lighthouse at Gull Point")
    assert word_accuracy(PAGES[1], doc.pages[1].text) >= ACCURACY_BAR
    assert any("OCR read 1 of 1 pages" in w for w in doc.warnings)


def test_without_tesseract_the_hint_says_how_to_install(
    scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a machine without the tesseract program
    with pytest.raises(PdfError) as info:
        extract_document_inprocess(scan, ocr=True)
    assert info.value.status == "skipped"
    assert "apt-get install tesseract-ocr tesseract-ocr-eng" in str(info.value)


def test_a_missing_language_says_which_package(scan: Path) -> None:
    with pytest.raises(PdfError, match="apt-get install tesseract-ocr-xyz"):
        extract_document_inprocess(scan, ocr=True, ocr_language="xyz")


def test_ingest_with_ocr_makes_a_scan_searchable(scan: Path, tmp_path: Path) -> None:
    settings = load_settings(
        {"index_dir": tmp_path / "indexes", "ocr": True, "chunk_tokens": 48, "chunk_overlap": 8}
    )
    index = settings.index_dir / "scans"
    report = ingest([scan], index, settings)
    [outcome] = report.files
    assert (outcome.status, outcome.extractor, outcome.pages) == ("indexed", "ocr", 2)
    retriever = open_retriever(index, settings.replace(retrieval="bm25"))
    [best] = retriever.search("cinnamon buns", 1)
    retriever.close()
    assert best.page <= 2 <= best.page_end and "cinnamon" in best.text


def test_the_worker_runs_ocr_too(scan: Path) -> None:
    doc = extract_document(scan, ocr=True, timeout_s=120)
    assert doc.extractor == "ocr" and len(doc.pages) == 2


# Files of pdfs-odd whose pages are images only, and what OCR finds: a phrase, or None
# for pictures without words (then the file is skipped: "OCR found none").
ODD_IMAGE_ONLY = {
    "pdfjs__issue7200.pdf": "Lorem ipsum dolor sit amet",  # a page of body text as an image
    "qpdf__encrypted-with-images.pdf": None,  # encrypted (empty password): two logos
    "samples__grayscale-image.pdf": None,  # a photo
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ODD_IMAGE_ONLY))
def test_image_only_files_of_the_bench(bench_dir: Path, name: str) -> None:
    odd = bench_dir / "pdfs-odd"
    lines = (odd / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    meta = {json.loads(line)["file"]: json.loads(line) for line in lines}
    assert "image-only" in meta[name]["categories"]
    with pytest.raises(PdfError, match="--ocr"):
        extract_document_inprocess(odd / name)
    expected = ODD_IMAGE_ONLY[name]
    if expected is None:
        with pytest.raises(PdfError, match="OCR found none") as info:
            extract_document_inprocess(odd / name, ocr=True)
        assert info.value.status == "skipped"
        return
    doc = extract_document_inprocess(odd / name, ocr=True)
    assert doc.extractor == "ocr"
    assert expected in " ".join(p.text for p in doc.pages)


def test_check_ocr_passes_here() -> None:
    check_ocr("eng")


@pytest.mark.slow
def test_ocr_of_another_script_is_dropped_not_indexed(bench_dir: Path) -> None:
    # Arabic calligraphy with a garbled text layer: English OCR reads junk letters with a
    # mean confidence of ~37, which must not be indexed as text.
    with pytest.raises(PdfError, match=r"unreliable \(mean word confidence \d+ < 50") as info:
        extract_document_inprocess(bench_dir / "pdfs-odd" / "pdfjs__ThuluthFeatures.pdf", ocr=True)
    assert info.value.status == "skipped"
