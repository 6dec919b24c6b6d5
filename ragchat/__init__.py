"""ragchat: ask questions about your own PDFs, offline."""

__version__ = "0.1.0"
