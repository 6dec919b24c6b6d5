#!/usr/bin/env bash
# Set up (.venv with the test, llama, server and ocr extras; Tesseract from Debian) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
# OCR tests need the Tesseract program with English data (a Debian package, not PyPI).
if ! command -v tesseract >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test: installing tesseract-ocr (for the OCR tests)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            tesseract-ocr tesseract-ocr-eng >/dev/null
    else
        echo "test: the OCR tests need tesseract: sudo apt-get install tesseract-ocr" \
            "tesseract-ocr-eng (macOS: brew install tesseract)" >&2
    fi
fi
bash scripts/setup.sh test,llama,server,ocr
. .venv/bin/activate
# Models assembled or converted by the tests are kept here between runs.
export RAGCHAT_CACHE_DIR="${RAGCHAT_CACHE_DIR:-$PWD/.cache/ragchat-test}"
python -m pytest "$@"
