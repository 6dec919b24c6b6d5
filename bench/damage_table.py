"""The damaged-index probe table of docs/robustness.md: every case of tests/test_damage.py
(each index file missing, empty, truncated, garbled, with a wrong header, a wrong count,
or a directory in its place), and what ragchat does with it.

    PYTHONPATH=. python bench/damage_table.py > /tmp/table.md
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_damage as cases

from ragchat.errors import RagchatError
from ragchat.index.store import IndexStore


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> None:
    collect = _Collect()
    logging.getLogger("ragchat").addHandler(collect)
    logging.getLogger("ragchat").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp())
    source = root / "idx"
    cases._build(source)
    before = cases._results(source)
    print("| file | damage | outcome |\n| --- | --- | --- |")
    for name, kind in cases.CASES:
        work = root / "case"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        path = cases._damaged_copy(source, work, name, kind)
        collect.messages.clear()
        try:
            if name == cases.LOCK_FILE:  # only writers open the lock
                with IndexStore.open(path) as store:
                    store.acquire_lock(wait=False)
                    store.release_lock()
            same = cases._results(path) == before
            outcome = "same results" if same else "**different results**"
            outcome += "; " + (
                "stderr: `" + " / ".join(collect.messages) + "`"
                if collect.messages
                else "nothing shown"
            )
        except RagchatError as exc:
            message = str(exc).replace(str(work), "…").split(". Run `ragchat doctor")[0]
            outcome = f"{type(exc).__name__}: `{message}`"
        except Exception as exc:  # what the table exists to catch
            outcome = f"**traceback**: {type(exc).__name__}: {exc}"
        print(f"| `{name}` | {kind} | {outcome.replace('|', '/')} |")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
