"""An incremental ``multipart/related`` reader (RFC 2046 §5.1, RFC 2387) for STOW-RS bodies.

:class:`MultipartReader` is fed the body in chunks as they arrive and hands
each part's headers and data on as events, holding at most one chunk plus a
delimiter's length of data: a request body of any size never sits in memory.
It checks the framing strictly (a malformed body raises
:class:`MultipartError`) and knows nothing of DICOM.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

__all__ = [
    "MultipartError",
    "MultipartReader",
    "PartData",
    "PartEnd",
    "PartStart",
    "parse_content_type",
]

#: The longest header block of one part (bytes); a longer one is refused.
MAX_PART_HEADER_BYTES = 16 * 1024
#: RFC 2046: a boundary is 1 to 70 characters from a restricted set; longer ones are read too
#: (Orthanc's DICOMweb plugin sends 73), up to this many.
MAX_BOUNDARY_LENGTH = 200
_BOUNDARY = re.compile(
    rf"^[0-9A-Za-z'()+_,\-./:=? ]{{0,{MAX_BOUNDARY_LENGTH - 1}}}[0-9A-Za-z'()+_,\-./:=?]$"
)
_CRLF = b"\r\n"
_PADDING = b" \t"
#: The most transport padding (spaces, tabs) accepted after a boundary.
_MAX_PADDING = 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart (the message says where it breaks)."""


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` maps lower-case header names to their values."""

    headers: dict[str, str]

    @property
    def content_type(self) -> str | None:
        """The part's media type, lower case, without parameters (``None`` when it names none)."""
        value = self.headers.get("content-type")
        return parse_content_type(value)[0] if value else None


@dataclass(frozen=True)
class PartData:
    """The next bytes of the current part's body (a copy the reader keeps no reference to)."""

    data: bytes | bytearray


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete."""


Event = PartStart | PartData | PartEnd


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type header's media type (lower case) and parameters (names lower case,
    values unquoted), as RFC 9110 §8.3 writes them."""
    message = Message()
    message["content-type"] = value
    media_type = message.get_content_type() if "/" in value.split(";", 1)[0] else ""
    params = {
        str(name).lower(): str(param)
        for name, param in (message.get_params(header="content-type", unquote=True) or [])[1:]
    }
    return media_type.lower(), params


class MultipartReader:
    """Reads a multipart body incrementally.

    Call :meth:`feed` with each chunk of the body as it arrives and iterate the
    events it returns, then :meth:`close` at the end of the body (it raises
    :class:`MultipartError` if the close delimiter never came). Data of one
    part may arrive in many :class:`PartData` events.

    Parameters
    ----------
    boundary
        The ``boundary`` parameter of the body's Content-Type.
    """

    def __init__(self, boundary: str) -> None:
        if not _BOUNDARY.match(boundary):
            raise MultipartError(f"invalid multipart boundary {boundary!r} (RFC 2046 §5.1.1)")
        # The body is read as if preceded by CRLF, so that the first delimiter is found like
        # every other one (RFC 2046: the CRLF before a delimiter belongs to the delimiter).
        self._delimiter = _CRLF + b"--" + boundary.encode("ascii")
        self._buffer = bytearray(_CRLF)
        self._state = "preamble"
        #: Parts completed so far.
        self.parts = 0

    @property
    def finished(self) -> bool:
        """The close delimiter has been read."""
        return self._state == "epilogue"

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events the body's next ``chunk`` completes (iterate them before the next feed)."""
        if self._state == "epilogue":
            return  # RFC 2046: the epilogue is ignored
        self._buffer += chunk
        yield from self._events()

    def close(self) -> None:
        """The body ended; raises :class:`MultipartError` unless it was complete."""
        if self._state != "epilogue":
            where = {
                "preamble": "before its first boundary",
                "delimiter": "inside a boundary line",
                "headers": "inside a part's headers",
                "body": "inside a part, before the closing boundary",
            }[self._state]
            raise MultipartError(f"the multipart body ends {where}")

    def _events(self) -> Iterator[Event]:
        buffer, delimiter = self._buffer, self._delimiter
        while True:
            if self._state in ("preamble", "body"):
                found = buffer.find(delimiter)
                if found < 0:
                    # everything but a possible partial delimiter at the end is data
                    keep = len(delimiter) - 1
                    if self._state == "body" and len(buffer) > keep:
                        yield PartData(buffer[: len(buffer) - keep])
                    del buffer[: max(0, len(buffer) - keep)]
                    return
                if self._state == "body":
                    if found:
                        yield PartData(buffer[:found])
                    yield PartEnd()
                    self.parts += 1
                del buffer[: found + len(delimiter)]
                self._state = "delimiter"
            elif self._state == "delimiter":
                # after "--boundary": "--" closes the body, else transport padding and CRLF
                if len(buffer) < 2:
                    return
                if buffer.startswith(b"--"):
                    self._state = "epilogue"
                    buffer.clear()
                    return
                line_end = buffer.find(_CRLF)
                if line_end < 0:
                    if buffer.rstrip(b"\r").strip(_PADDING) or len(buffer) > _MAX_PADDING:
                        raise MultipartError("unexpected bytes after a boundary")
                    return
                if buffer[:line_end].strip(_PADDING):
                    raise MultipartError("unexpected bytes after a boundary")
                del buffer[: line_end + 2]
                self._state = "headers"
            elif self._state == "headers":
                if buffer[:2] == _CRLF:  # a part without headers
                    del buffer[:2]
                    self._state = "body"
                    yield PartStart({})
                    continue
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_PART_HEADER_BYTES:
                        raise MultipartError(
                            f"a part's headers exceed {MAX_PART_HEADER_BYTES} bytes"
                        )
                    return
                headers = _parse_headers(bytes(buffer[:end]))
                del buffer[: end + 4]
                self._state = "body"
                yield PartStart(headers)
            else:  # epilogue
                buffer.clear()
                return


def _parse_headers(block: bytes) -> dict[str, str]:
    """A part's header fields (RFC 5322 syntax, no folding: RFC 9112 §5.2 forbids it)."""
    headers: dict[str, str] = {}
    for line in block.split(_CRLF):
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in _PADDING:
            raise MultipartError("a part has a malformed header line")
        try:
            headers[name.decode("ascii").lower()] = value.strip(_PADDING).decode("latin-1")
        except UnicodeDecodeError:
            raise MultipartError("a part's header name is not ASCII") from None
    return headers
