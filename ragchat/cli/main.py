"""The `ragchat` command: parse arguments, build settings, call one library function, render
the result. Heavy libraries are imported inside the command that needs them, so `--help`
stays instant."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ragchat import __version__
from ragchat.cli import answer_commands, index_commands
from ragchat.cli.common import EXIT_OK, EXIT_USAGE, settings_from
from ragchat.errors import RagchatError

DESCRIPTION = """\
Ask questions about your own PDFs, offline.

  ragchat ingest script.pdf papers/         extract, chunk, embed -> indexes/default
  ragchat search "who built the lighthouse?" the passages that answer it, with file and page
  ragchat ask "who built the lighthouse?"    a short answer citing [file p.N]
  ragchat chat                               an interactive console over your documents

Indexes live in ./indexes (or --index-dir / RAGCHAT_INDEX_DIR); --index NAME picks one, a
value with '/' or starting with '.' or '~' is a path. Nothing is downloaded unless you pass
--allow-download (or set RAGCHAT_ALLOW_DOWNLOAD=1).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exits with 2, ours too
        self.print_usage(sys.stderr)
        raise SystemExit(f"ragchat: error: {message}\n(try `ragchat {self._sub_name()}--help`)")

    def _sub_name(self) -> str:
        parts = self.prog.split()[1:]
        return " ".join(parts) + " " if parts else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ragchat",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    index_commands.register(sub)
    answer_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RAGCHAT_DEBUG") == "1"
    try:
        settings = settings_from(args)
        return args.handler(args, settings)
    except RagchatError as exc:
        if debug:
            raise
        print(f"ragchat: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(
            "\nragchat: interrupted — everything committed before this point is kept",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        # `ragchat search ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
