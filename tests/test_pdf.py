"""ragchat.ingest.pdf on real PDFs: generated ones (tests/pdfmaker.py, pypdf's PdfWriter) and a few
files of the shared robustness corpus (/work/shared/bench/pdfs-odd)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pypdf
import pytest
from pdfmaker import make_pdf

from ragchat.errors import PdfError
from ragchat.ingest.pdf import (
    build_paragraphs,
    clean_text,
    extract_document,
    extract_document_inprocess,
    normalise_pages,
    order_by_cost,
    probe_costs,
    remove_running_lines,
    text_problem,
)

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"

PROSE = (
    "Retrieval augmented generation answers questions from documents that the\n"
    "model has never seen, by first finding the passages that are most likely\n"
    "to hold the answer and then asking the language model to read them.\n"
    "Short line.\n"
    "A second paragraph starts here and it is long enough to fill a whole line\n"
    "of text on the page, so the extractor has to join it with the next one."
)


@pytest.fixture(scope="module")
def odd() -> Path:
    """The pdfs-odd corpus; skips when the shared bench is not mounted next to the repo."""
    folder = BENCH / "pdfs-odd"
    if not folder.is_dir():
        pytest.skip(f"shared bench not found at {folder} (needed for real-world odd PDFs)")
    return folder


def _expect_error(path: Path, status: str, *words: str, **kwargs: object) -> PdfError:
    with pytest.raises(PdfError) as info:
        extract_document(path, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == status, str(info.value)
    for word in words:
        assert word in str(info.value)
    return info.value


# ----------------------------------------------------------------------------- statuses


def test_text_pages_are_1_based_and_empty_pages_left_out(tmp_path: Path) -> None:
    path = make_pdf(["alpha page one text", "", "gamma page three text"], tmp_path / "a.pdf")
    done: list[tuple[int, int]] = []
    doc = extract_document(path, on_page=lambda d, t: done.append((d, t)))
    assert doc.page_count == 3
    assert [p.number for p in doc.pages] == [1, 3]
    assert doc.pages[0].text == "alpha page one text"
    assert doc.pages[1].text == "gamma page three text"
    assert doc.extractor == "pypdf"
    assert doc.path == path
    assert done and done[-1] == (3, 3)


def test_inprocess_gives_the_same_document(tmp_path: Path) -> None:
    path = make_pdf([PROSE, "page two"], tmp_path / "a.pdf")
    assert extract_document_inprocess(path) == extract_document(path)


def test_the_extractor_probe_counts_only_its_own_threads_time(tmp_path: Path) -> None:
    """Two busy threads in the process (a model's pool, in the console or a test run) do
    not make a plain page look slow: pypdf stays first every time (stop 31: measured in
    the process's CPU time, it once did not)."""
    import threading

    import numpy as np

    path = make_pdf([PROSE], tmp_path / "plain.pdf")
    stop = threading.Event()

    def busy() -> None:
        a = np.random.default_rng(0).random((300, 300))
        while not stop.is_set():
            a @ a  # numpy lets go of the GIL: this thread's CPU time is the process's

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        orders = {tuple(order_by_cost(probe_costs(path))) for _ in range(50)}
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert orders == {("pypdf", "pdfium")}


def test_not_a_pdf_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_text("just some text, not a PDF\n")
    _expect_error(path, "skipped", "not a PDF")


def test_missing_file_fails(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.pdf", "failed", "not found")


def test_truncated_pdf_fails_cleanly(tmp_path: Path) -> None:
    data = make_pdf([PROSE] * 3, tmp_path / "full.pdf").read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: len(data) // 3])
    _expect_error(path, "failed", "unreadable PDF")


def test_garbage_after_header_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "junk.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    _expect_error(path, "failed", "unreadable PDF")


def test_zero_pages_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "zero.pdf"
    pypdf.PdfWriter().write(path)
    _expect_error(path, "skipped", "zero pages")


def test_page_without_text_is_skipped_with_ocr_hint(tmp_path: Path) -> None:
    path = make_pdf(["", ""], tmp_path / "scan.pdf")
    _expect_error(path, "skipped", "no extractable text", "--ocr")


def _encrypt(src: Path, dst: Path, user_password: str) -> Path:
    writer = pypdf.PdfWriter(clone_from=src)
    # RC4: pypdf writes it without the optional 'cryptography' package.
    writer.encrypt(user_password=user_password, owner_password="owner-pw", algorithm="RC4-128")
    writer.write(dst)
    return dst


def test_encrypted_with_empty_password_opens(tmp_path: Path) -> None:
    src = make_pdf(["locked but readable text"], tmp_path / "src.pdf")
    doc = extract_document(_encrypt(src, tmp_path / "enc.pdf", ""))
    assert doc.pages[0].text == "locked but readable text"


@pytest.mark.parametrize("fallback", [False, True])
def test_password_missing_wrong_right(tmp_path: Path, fallback: bool) -> None:
    src = make_pdf(["the secret text of page one"], tmp_path / "src.pdf")
    path = _encrypt(src, tmp_path / "enc.pdf", "pässwört")  # non-ASCII on purpose
    _expect_error(path, "failed", "needs a password", "--password", fallback=fallback)
    _expect_error(path, "failed", "wrong", "--password", password="nope", fallback=fallback)
    doc = extract_document(path, password="pässwört", fallback=fallback)
    assert doc.pages[0].text == "the secret text of page one"


def test_time_limit_kills_the_worker(tmp_path: Path) -> None:
    path = make_pdf([PROSE] * 400, tmp_path / "big.pdf")
    start = time.monotonic()
    _expect_error(path, "failed", "gave up: no page finished", timeout_s=0.05)
    assert time.monotonic() - start < 5


def test_importing_pdf_module_stays_light() -> None:
    code = (
        "import sys, ragchat.ingest.pdf; "
        "bad = [m for m in ('torch', 'transformers', 'pypdf', 'pypdfium2') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- normalisation


def test_ligatures_spelled_out_and_cjk_arabic_untouched() -> None:
    assert clean_text("ﬁnance ﬂow ﬃx oﬀ") == "finance flow ffix off"
    cjk = "全角（テスト）の文章。１２３"  # full-width forms must survive (NFKC would fold them)
    assert clean_text(cjk) == cjk
    assert clean_text("مرحبا بالعالم") == "مرحبا بالعالم"
    assert clean_text("\ufedf\ufee0") == "لل"  # presentation forms -> letters


def test_control_characters_and_spaces() -> None:
    assert clean_text("a\x00b\x07c\td   e  \r\nnext\u00a0line ") == "abc d e\nnext line"
    assert clean_text("caf\u0065\u0301") == "café"  # NFC


def test_dehyphenation_rule() -> None:
    lines = ["this is an exam-", "ple of a word split across two lines by typesetting."]
    assert "example of" in build_paragraphs(lines, set())
    # The document spells it "well-known" elsewhere: keep the hyphen.
    lines = ["a well-", "known fact that is repeated across many lines of text."]
    assert "well-known fact" in build_paragraphs(lines, {"well-known"})
    # Capitalised or numeric first part: a real hyphen.
    assert "French-speaking" in build_paragraphs(["the French-", "speaking part"], set())


def test_soft_hyphen_markers_become_line_breaks() -> None:
    assert clean_text("televi\ufffesion") == "televi-\nsion"
    pages, _ = normalise_pages(["the televi\ufffesion networks and more televisions"])
    assert pages[0].startswith("the television networks")


def test_paragraphs_joined_and_separated() -> None:
    text = build_paragraphs(PROSE.split("\n"), set())
    first, second = text.split("\n\n")
    assert first.startswith("Retrieval augmented") and first.endswith("Short line.")
    assert "\n" not in first
    assert second.endswith("with the next one.")


@pytest.mark.parametrize("primary", ["pypdf", "pdfium"])
def test_paragraph_gap_found_from_layout(tmp_path: Path, primary: str) -> None:
    # Every line is full, so only the extra vertical space tells the paragraphs apart.
    full = "word " * 14
    lines = [full + "one", full + "two", "", full + "three", full + "four"]
    path = make_pdf(["\n".join(lines)], tmp_path / "gap.pdf")
    doc = extract_document_inprocess(path, primary=primary, fallback=False)
    assert doc.extractor == primary
    first, second = doc.pages[0].text.split("\n\n")
    assert first.endswith("two") and second.endswith("four") and "\n" not in first


def test_code_like_lines_keep_single_breaks() -> None:
    code = ["x <- 1", "y <- 2", "print(x + y)"]
    assert build_paragraphs(code, set()) == "x <- 1\ny <- 2\nprint(x + y)"


def test_running_header_footer_and_page_numbers_removed(tmp_path: Path) -> None:
    bodies = ["Apples grow on trees.", "Bees make honey.", "Cats sleep a lot.", "Dogs bark."]
    bodies[2] = "Unique Top Line\n" + bodies[2]
    path = make_pdf(bodies, tmp_path / "r.pdf", header="Annual Report 2024", footer="- {page} -")
    doc = extract_document(path)
    assert [p.text for p in doc.pages] == [
        "Apples grow on trees.",
        "Bees make honey.",
        "Unique Top Line\nCats sleep a lot.",
        "Dogs bark.",
    ]


def test_printed_page_number_with_chapter_title_removed() -> None:
    words = ["apple", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "koi"]
    pages = [
        [f"Chapter {1 + i // 4}: Title {i // 4} {i + 10}", f"the {w} page", f"{w} ends"]
        for i, w in enumerate(words)
    ]
    out, removed = remove_running_lines(pages)
    assert removed == len(words)
    assert out[0] == ["the apple page", "apple ends"]


def test_short_documents_keep_their_lines() -> None:
    out, removed = remove_running_lines([["Title", "text"], ["Title", "other"]])
    assert removed == 0 and out[0] == ["Title", "text"]


def test_text_problem() -> None:
    assert text_problem("An ordinary English sentence with enough letters.") is None
    assert text_problem("日本語の文章はスペースなしでも本物のテキストです。") is None
    assert text_problem("tiny") == "almost no text"
    assert text_problem("\ufffd" * 50) == "replacement or control characters"
    assert text_problem("12 34 56 78 90 12 34 56 78 90 %% $$ ab") == "too few letters"
    mojibake = "ΘͨαβγδΔΖΗΘικλ ԱԲԳԴ ສະບາຍ ਸਤਿ ᏣᎳᎩ ཀཁག ሀሁሂ ᚠᚡᚢ"
    assert text_problem(mojibake) == "letters from many unrelated scripts"
    assert text_problem("a" * 500 + " b") == "one character repeated"
    assert text_problem("abcdefghijklmnopqrstuvwxyz" * 9) is not None
    assert text_problem("ภาษาไทยไม่มีการเว้นวรรคระหว่างคำในประโยคยาวมากจริงๆนะ") is None


# ----------------------------------------------------------------------------- pdfs-odd


def test_odd_slow_file_hits_time_limit(odd: Path) -> None:
    start = time.monotonic()
    _expect_error(
        odd / "pdfjs__bug1978317.pdf", "failed", "no page finished within 1 s", timeout_s=1.0
    )
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("fallback", [False, True])
def test_odd_aes_non_ascii_passwords(odd: Path, fallback: bool) -> None:
    # AES-256 R6 with passwords that need UTF-8 and SASLprep; pypdf needs 'cryptography'.
    if not fallback:
        pytest.importorskip("cryptography", reason="pypdf reads AES only with cryptography")
    doc = extract_document(
        odd / "pdfjs__saslprep-r6.pdf", password="SªSL\u00adprep", fallback=fallback
    )
    assert "Hello" in doc.pages[0].text
    doc = extract_document(odd / "pdfjs__issue6010_2.pdf", password="æøå", fallback=fallback)
    assert doc.pages[0].text.startswith("Issue 6010")
    _expect_error(odd / "pdfjs__issue6010_2.pdf", "failed", "--password", fallback=fallback)


def test_odd_aes_through_pdfium(odd: Path) -> None:
    # PDFium alone (no SASLprep of its own: ragchat tries the SASLprep form of the password).
    path = odd / "pdfjs__saslprep-r6.pdf"
    doc = extract_document_inprocess(path, password="SªSL\u00adprep", primary="pdfium")
    assert doc.extractor == "pdfium" and "Hello" in doc.pages[0].text


def test_odd_garbled_pypdf_text_replaced_by_pdfium(odd: Path) -> None:
    doc = extract_document(odd / "pdfminer__jo.pdf")
    assert doc.extractor == "pdfium"
    assert "みんな" in doc.pages[0].text
    assert any("unrelated scripts" in w for w in doc.warnings)
    _expect_error(odd / "pdfminer__jo.pdf", "skipped", "garbled", fallback=False)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("qpdf__bad1.pdf", "skipped"),  # 5 bytes, not a PDF
        ("qpdf__empty.pdf", "skipped"),  # zero pages
        ("pdfjs__issue7200.pdf", "skipped"),  # image only
        ("qpdf__deep-pages.pdf", "failed"),  # page tree > 100 levels deep
        ("pdfjs__Brotli-Prototype-FileA.pdf", "failed"),  # unsupported filter
        ("pdfjs__issue19484_2.pdf", "failed"),  # broken encryption dictionary
    ],
)
def test_odd_files_give_a_status_not_a_crash(odd: Path, name: str, status: str) -> None:
    err = _expect_error(odd / name, status)
    assert name in str(err) and len(str(err)) < 200
