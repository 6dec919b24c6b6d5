"""The RagchatError hierarchy. `str(error)` is shown to the user as-is: say what failed, on
what, and what to do next."""

from __future__ import annotations

from typing import Literal


class RagchatError(Exception):
    """Base of every error ragchat reports to the user."""

    exit_code = 1


class UsageError(RagchatError):
    """The command line or settings are wrong."""

    exit_code = 2


class ConfigError(RagchatError):
    """A settings file or environment variable has a bad value."""

    exit_code = 2


class PdfError(RagchatError):
    """One file could not be turned into text.

    `status` is the ingest outcome: "skipped" when there is nothing to index (not a PDF,
    zero pages, no extractable text), "failed" when it could not be read (malformed,
    wrong or missing password, time limit).
    """

    def __init__(self, message: str, status: Literal["skipped", "failed"] = "failed") -> None:
        super().__init__(message)
        self.status = status


class IndexNotFoundError(RagchatError):
    """The named index does not exist."""


class IndexMismatchError(RagchatError):
    """The index was built with other settings (embedder, format) than asked for."""


class IndexBusyError(RagchatError):
    """Another process is writing to the index."""


class ModelUnavailableError(RagchatError):
    """A model or backend cannot be loaded here (not installed, offline, bad checksum)."""


class GenerationError(RagchatError):
    """The language model failed while answering."""


class IndexDamagedError(RagchatError):
    """A file of the index that cannot be rebuilt from the others (the database) is
    damaged or missing; the message names it and says what to do."""
