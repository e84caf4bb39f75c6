"""The incremental multipart/related reader: framing, chunking at every offset, malformed bodies."""

from __future__ import annotations

import pytest

from web.stow.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)

BOUNDARY = "b0undary-42"


def body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
        out += part + b"\r\n"
    return out + b"--" + BOUNDARY.encode() + b"--\r\n" + epilogue


def read(data: bytes, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    reader = MultipartReader(BOUNDARY)
    parts: list[tuple[dict[str, str], bytes]] = []
    current = bytearray()
    for start in range(0, len(data), chunk):
        for event in reader.feed(data[start : start + chunk]):
            if isinstance(event, PartStart):
                current = bytearray()
                parts.append((event.headers, b""))
            elif isinstance(event, PartData):
                current += event.data
            elif isinstance(event, PartEnd):
                parts[-1] = (parts[-1][0], bytes(current))
    reader.close()
    assert reader.parts == len(parts)
    return parts


# bytes that look like the start of a delimiter inside a part must stay data
TRICKY = b"\r\n--b0undary-4\r\n--b0undary" + bytes(range(256)) + b"\r\n-"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 64, 1 << 16])
def test_parts_come_out_as_sent_whatever_the_chunking(chunk):
    sent = [b"first", b"", TRICKY, b"x" * 5000]
    data = body(*sent, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")

    parts = read(data, chunk)

    assert [p for _, p in parts] == sent
    assert all(h == {"content-type": "application/dicom"} for h, _ in parts)


def test_transport_padding_after_a_boundary_and_a_part_without_headers_are_read():
    data = (
        b"--" + BOUNDARY.encode() + b" \t\r\n\r\nno headers\r\n--" + BOUNDARY.encode() + b"--"
    )
    assert read(data, 3) == [({}, b"no headers")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "before its first boundary"),
        (b"no boundary at all", "before its first boundary"),
        (body(b"c" * 100)[:-30], "before the closing boundary"),
        (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: app", "inside a part's headers"),
        (b"--" + BOUNDARY.encode() + b"junk\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--",
         "unexpected bytes after a boundary"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx\r\n--"
         + BOUNDARY.encode() + b"--", "malformed header line"),
    ],
)
def test_malformed_bodies_are_refused_naming_where(data, message):
    with pytest.raises(MultipartError, match=message):
        read(data, 5)


def test_a_part_header_block_without_end_is_refused_before_it_grows_unbounded():
    reader = MultipartReader(BOUNDARY)
    with pytest.raises(MultipartError, match="headers exceed"):
        list(reader.feed(b"--" + BOUNDARY.encode() + b"\r\nX: " + b"a" * 20_000))


def test_data_is_handed_on_as_it_arrives_holding_back_only_a_possible_delimiter():
    reader = MultipartReader(BOUNDARY)
    list(reader.feed(b"--" + BOUNDARY.encode() + b"\r\n\r\n"))
    events = list(reader.feed(b"y" * 100_000))
    held_back = len("\r\n--" + BOUNDARY) - 1
    assert sum(len(e.data) for e in events if isinstance(e, PartData)) == 100_000 - held_back


@pytest.mark.parametrize("boundary", ["", "x" * 201, "bad\nline", "trailing "])
def test_invalid_boundaries_are_refused(boundary):
    with pytest.raises(MultipartError, match="boundary"):
        MultipartReader(boundary)


def test_a_boundary_longer_than_rfc_2046_allows_is_read_as_orthanc_sends_one():
    boundary = "c9af4fc6-85b5-484f-aa6a-59544059c5f5-c9af4fc6-85b5-484f-aa6a-59544059c5f5"
    reader = MultipartReader(boundary)
    events = list(reader.feed(f"--{boundary}\r\n\r\nx\r\n--{boundary}--".encode()))
    reader.close()
    assert [type(e) for e in events] == [PartStart, PartData, PartEnd]


def test_content_type_parameters_are_read_case_insensitively_and_unquoted():
    media_type, params = parse_content_type(
        'Multipart/Related; TYPE="application/dicom"; boundary="a b:c"'
    )
    assert media_type == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b:c"}
    assert parse_content_type("nonsense")[0] == ""
