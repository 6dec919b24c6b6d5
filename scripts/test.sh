#!/usr/bin/env bash
# Set up (.venv with the test, llama and server extras) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,llama,server
. .venv/bin/activate
# Models assembled or converted by the tests are kept here between runs.
export RAGCHAT_CACHE_DIR="${RAGCHAT_CACHE_DIR:-$PWD/.cache/ragchat-test}"
python -m pytest "$@"
