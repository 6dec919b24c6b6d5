#!/usr/bin/env bash
# The main job on the embedded defaults, non-interactively: index the sample PDF, then
# answer questions about it from the retrieved passages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ragchat ingest docs/sample/gull-point.pdf --index sample
ragchat search "Who built the lighthouse?" --index sample -k 3
