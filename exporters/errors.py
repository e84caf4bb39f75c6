"""Errors raised by the exporters."""

__all__ = ["ExportError", "SourceError"]


class ExportError(Exception):
    """A report could not be turned into an output object."""


class SourceError(ExportError):
    """The source image headers lack something an output needs (named in the message)."""
