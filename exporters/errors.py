"""Errors raised by the exporters."""

__all__ = ["ExportError", "IncompatibleHighdicomError", "SourceError"]


class ExportError(Exception):
    """A report could not be turned into an output object."""


class IncompatibleHighdicomError(ExportError, RuntimeError):
    """The installed highdicom lacks an internal a RadGround optimisation replaces
    (see docs/third-party-patches.md); the message names the setting that turns it off."""


class SourceError(ExportError):
    """The source image headers lack something an output needs (named in the message)."""
