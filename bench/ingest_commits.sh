#!/usr/bin/env bash
# Ingest speed of two commits side by side, in one run: `ragchat ingest DOCS` from a
# checkout of OLD (a git worktree) and from this checkout, alternating, a fresh index each
# time, with the machine's load after each. Both sides share this .venv and model cache.
#
#   bash bench/ingest_commits.sh OLD_REV DOCS [RUNTIME=auto] [ROUNDS=2]
#   bash bench/ingest_commits.sh 8ccdff6 ../shared/bench/qa-public/docs
set -euo pipefail
old_rev=$1
docs=$(realpath "$2")
runtime=${3:-auto}
rounds=${4:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/old" >/dev/null 2>&1; rm -rf "$work"' EXIT
git -C "$repo" worktree add -q --detach "$work/old" "$old_rev"
python=$repo/.venv/bin/python
echo "old $(git -C "$work/old" log --oneline -1)"
echo "new $(git -C "$repo" log --oneline -1) (+ uncommitted changes, if any)"
for round in $(seq "$rounds"); do
  for side in old new; do
    dir=$repo
    [ "$side" = old ] && dir=$work/old
    rm -rf "$work/index"
    start=$(date +%s.%N)
    summary=$(cd "$dir" && PYTHONPATH=$dir "$python" -m ragchat ingest "$docs" \
      --index "$work/index" --embedder-runtime "$runtime" --quiet 2>&1 | tail -1)
    end=$(date +%s.%N)
    printf 'round %s  %-3s  %6.1f s wall  load %s  | %s\n' "$round" "$side" \
      "$(echo "$end - $start" | bc)" "$(cut -d' ' -f1 /proc/loadavg)" "$summary"
  done
done
