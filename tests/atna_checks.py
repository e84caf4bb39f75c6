"""Checks of IHE ATNA audit messages, importable from any test
(``from tests.atna_checks import ...``).

* :func:`schema_errors` — the message against the DICOM audit message schema of PS3.15 A.5.1
  (``tests/data/atna/audit-message.rng``, validated with lxml's RELAX NG);
* :func:`parse_syslog` — one RFC 5424 syslog message as rsyslog or the audit file keeps it:
  its header fields and the audit message's XML;
* :func:`event_id` / :func:`participant_object_ids` — the fields the tests look at, by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree

__all__ = ["SyslogMessage", "event_id", "parse_syslog", "participant_object_ids", "schema_errors"]

SCHEMA = Path(__file__).parent / "data" / "atna" / "audit-message.rng"
# <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [BOM]MSG
_SYSLOG = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$", re.DOTALL,
)


@cache
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def schema_errors(xml: bytes) -> list[str]:
    """The schema's complaints about ``xml`` (empty: valid)."""
    schema = _schema()
    if schema.validate(etree.fromstring(xml)):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


@dataclass(frozen=True)
class SyslogMessage:
    pri: int
    hostname: str
    app_name: str
    proc_id: str
    msgid: str
    xml: bytes

    @property
    def root(self) -> etree._Element:
        return etree.fromstring(self.xml)


def parse_syslog(line: bytes) -> SyslogMessage:
    """One RFC 5424 message (the MSG's UTF-8 BOM dropped)."""
    match = _SYSLOG.match(line.rstrip(b"\n"))
    if match is None:
        raise AssertionError(f"not an RFC 5424 message: {line[:120]!r}")
    msg = match["msg"]
    if msg.startswith(b"\xef\xbb\xbf"):
        msg = msg[3:]
    return SyslogMessage(
        pri=int(match["pri"]), hostname=match["hostname"].decode(), app_name=match["app"].decode(),
        proc_id=match["procid"].decode(), msgid=match["msgid"].decode(), xml=msg,
    )


def event_id(root: etree._Element) -> str:
    """EventIdentification/EventID/@csd-code."""
    return root.find("EventIdentification/EventID").get("csd-code")


def participant_object_ids(root: etree._Element, id_type_code: str) -> list[str]:
    """ParticipantObjectID of each participant object with this ParticipantObjectIDTypeCode."""
    return [
        element.get("ParticipantObjectID")
        for element in root.findall("ParticipantObjectIdentification")
        if element.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type_code
    ]
