#!/usr/bin/env bash
# The main job on the embedded defaults, non-interactively: index the sample PDF, show the
# passages that answer a question, then have the default model (Qwen2.5-Coder-1.5B-Instruct,
# from PyPI) answer questions about it, citing file and page: two lookups, an explanation
# and one the document doesn't answer. The first answer assembles the packaged model once
# (seconds); later runs load it in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ragchat ingest docs/sample/gull-point.pdf --index sample
ragchat search "Who built the lighthouse?" --index sample -k 2
printf '%s\n' "Who built the lighthouse?" "How far away could the light be seen?" \
    "Describe the history of the lighthouse." "Who won the 1998 football world cup?" |
    ragchat ask - --index sample
