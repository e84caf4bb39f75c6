"""Render RadGround's DICOM Conformance Statement (``docs/conformance.md``).

The statement follows the layout of PS3.2 (Conformance), Annex A: implementation
model, AE specifications (SOP classes with their roles, association policies,
presentation contexts), C-STORE statuses, communication profiles, character
sets and security. Every table is generated from the code that does the
negotiating (:mod:`dicom_node.conformance`, the SCU in :mod:`dicom_node.scu`)
and from the settings' defaults (:class:`radground.settings.NodeSettings`), so
the document cannot drift from the node: ``tests/unit/radground/test_conformance_doc.py``
regenerates it and fails when the committed file differs.

Regenerate it with::

    .venv/bin/python -m radground.conformance_doc          # writes docs/conformance.md
    .venv/bin/python -m radground.conformance_doc --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.conformance import ACCEPTED_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES, StoreStatus
from dicom_node.tls import BCP195_TLS12_CIPHERS
from exporters.registry import EXPORTERS
from radground.settings import NodeSettings, NodeTlsSettings, WebSettings

__all__ = [
    "CONFORMANCE_PATH",
    "NODE_SETTINGS_OUTSIDE_POLICY",
    "OUTPUT_SOP_CLASSES",
    "POLICY_SETTINGS",
    "STORE_STATUS_CONDITIONS",
    "main",
    "render_conformance_statement",
]

#: Where the statement lives in the repository.
CONFORMANCE_PATH = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
REGENERATE_COMMAND = ".venv/bin/python -m radground.conformance_doc"

#: What the Storage SCU sends: SOP class UID -> the output kind a destination's
#: ``outputs`` names to get it (from the exporters' declarations).
OUTPUT_SOP_CLASSES: dict[str, str] = {
    uid: kind.value for kind, exporter in EXPORTERS.items() for uid in exporter.sop_class_uids
}

#: The DICOM output kinds as the data-flow sketch names them ("SR, GSPS, SC, KOS").
_DICOM_OUTPUT_NAMES = ", ".join(
    kind.value.upper() for kind, e in EXPORTERS.items() if e.sop_class_uids
)

#: When the Storage SCP answers each C-STORE status (PS3.4 Table B.2-1).
#: A test checks that every :class:`~dicom_node.conformance.StoreStatus` constant is listed.
STORE_STATUS_CONDITIONS: dict[str, tuple[str, str, str]] = {
    "SUCCESS": (
        "Success",
        "Success",
        "The instance is stored durably (file and directory entry synced) and indexed.",
    ),
    "DUPLICATE_SOP_INSTANCE": (
        "Failure",
        "Duplicate SOP Instance",
        (
            "The SOP Instance UID is already stored in the same study and series and "
            '`storage.duplicates = "reject"`.'
        ),
    ),
    "PROCESSING_FAILURE": (
        "Failure",
        "Processing failure",
        "The study index refused the instance for a reason that will not go away on retry.",
    ),
    "SOP_CLASS_NOT_SUPPORTED": (
        "Failure",
        "SOP Class not supported",
        (
            "C-STORE: never sent, a context for an unsupported SOP class is not accepted; "
            "STOW-RS: a part's SOP Class is not one of section 2.6."
        ),
    ),
    "TRANSFER_SYNTAX_NOT_SUPPORTED": (
        "Error",
        "Referenced Transfer Syntax not supported",
        (
            "STOW-RS only: a part's Transfer Syntax is not one of section 2.5 (C-STORE "
            "negotiation never accepts such a context)."
        ),
    ),
    "OUT_OF_RESOURCES": (
        "Refused",
        "Out of Resources",
        (
            "Free disk would fall below `storage.reserve_mb`, the file could not be made durable, "
            "or the study index is unavailable. The sender should retry later."
        ),
    ),
    "DATASET_DOES_NOT_MATCH_SOP_CLASS": (
        "Error",
        "Data Set does not match SOP Class",
        (
            "Study, Series or SOP Instance UID missing or not a valid UID; SOP Class or SOP "
            "Instance UID in the data set differ from the C-STORE request (STOW-RS: from the "
            "part's File Meta Information); STOW-RS to `/studies/{study}`: the instance belongs "
            "to another study; native Pixel Data "
            "shorter than Rows x Columns x Samples per Pixel x Number of Frames x Bits Allocated "
            "/ 8, or encapsulated Pixel Data with fewer fragments than frames; the SOP Instance "
            "UID is already stored in another study or series, or as another SOP Class (a "
            "conflict, refused under every `storage.duplicates` policy)."
        ),
    ),
    "CANNOT_UNDERSTAND": (
        "Error",
        "Cannot understand",
        (
            "The data set cannot be parsed into elements: a length runs past the end of its data "
            "set, item or sequence (a cut-off instance, a huge declared length), a sequence or "
            "item of undefined length lacks its delimiter, encapsulated Pixel Data lacks its "
            "Sequence Delimitation, or a deflate stream is incomplete. The ErrorComment names "
            "the element and its byte offset."
        ),
    ),
}

#: The association policy settings of ``[node]`` shown in the statement, with their meaning.
POLICY_SETTINGS: tuple[tuple[str, str], ...] = (
    ("ae_title", "AE title of the Storage SCP and of the Storage SCU"),
    ("port", "TCP port the Storage SCP listens on"),
    ("max_associations", "concurrent associations accepted, across all listener processes"),
    (
        "max_pdu_size",
        (
            "Maximum Length the node receives, in bytes (0 = up to 64 MiB); "
            "a longer P-DATA-TF is aborted"
        ),
    ),
    ("max_connections_per_peer", "concurrent TCP connections one peer address may hold"),
    ("require_called_ae_title", "reject associations whose Called AE Title is not the node's"),
    ("allowed_peers", "Calling AE Titles (optionally with host) allowed to associate; empty = any"),
    ("acse_timeout_seconds", "seconds to wait for an association request, answer or release"),
    ("dimse_timeout_seconds", "seconds to wait for a DIMSE message"),
    (
        "network_timeout_seconds",
        "seconds an idle association is kept, and for every PDU to arrive whole",
    ),
)


#: ``[node]`` settings shown elsewhere in the statement (sections 4 and 6), not as association
#: policy. A test checks that every ``[node]`` setting is in one of the two lists.
NODE_SETTINGS_OUTSIDE_POLICY = frozenset({
    "host", "listener_processes", "pynetdicom_patches", "tls",
})


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _name(uid: str) -> str:
    return UID(uid).name if UID(uid).is_valid and UID(uid).name != uid else uid


def _verification_syntaxes() -> list[str]:
    """What the SCU proposes for C-ECHO (pynetdicom's default for a context added without
    syntaxes)."""
    ae = AE()
    ae.add_requested_context(Verification)
    return [str(uid) for uid in ae.requested_contexts[0].transfer_syntax]


def _setting_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return "any" if not value else ", ".join(map(str, value))
    return str(value)


def render_conformance_statement() -> str:
    """The conformance statement as Markdown (PS3.2 Annex A layout).

    Returns
    -------
    str
        The whole of ``docs/conformance.md``; deterministic for one version of
        the code and of pynetdicom.
    """
    node = NodeSettings.model_validate({})
    implementation = AE()
    lines: list[str] = [
        "# DICOM Conformance Statement",
        "",
        f"<!-- Generated by `{REGENERATE_COMMAND}` from dicom_node/conformance.py,",
        "     dicom_node/scu.py and the defaults of radground/settings.py. Do not edit by hand;",
        "     a test fails when it differs from what the code negotiates. -->",
        "",
        (
            "RadGround is a DICOM AI node beside a PACS: it receives studies (Storage SCP), "
            "runs a model"
        ),
        "on each complete study and sends its results back as DICOM SR and presentation states",
        "(Storage SCU). Layout after DICOM PS3.2 Annex A. Values marked *setting* are the defaults",
        "of `config/radground.toml`; an installation may change them.",
        "",
        "## 1 Implementation model",
        "",
        "### 1.1 Application data flow",
        "",
        "```",
        (
            "remote SCU (PACS, modality) --C-ECHO, C-STORE--> [RADGROUND Storage SCP] -> "
            "storage, index"
        ),
        f"[RADGROUND Storage SCU] --C-STORE ({_DICOM_OUTPUT_NAMES})--> remote Storage SCP (PACS)",
        "`radground echo` / `radground send` --> [RADGROUND SCU] --C-ECHO / C-STORE--> any peer",
        "```",
        "",
        (
            "- The **Storage SCP** accepts associations, verifies peers (C-ECHO) and stores "
            "every instance"
        ),
        "  exactly as received (no transcoding), durably, before it answers Success.",
        (
            "- When a study has been idle for `completion.idle_seconds`, its revision is "
            "processed; the"
        ),
        "  **Storage SCU** sends the results to the destinations a route names. Results RadGround",
        "  receives back are stored but never processed again.",
        "",
        "### 1.2 Functional definition of AEs",
        "",
        "One AE title (`node.ae_title`) is used for both roles: it accepts associations as Storage",
        "SCP and initiates them as Storage SCU and Verification SCU.",
        "",
        "### 1.3 Implementation identification",
        "",
        *_table(
            ("item", "value"),
            [
                ("Implementation Class UID", f"`{implementation.implementation_class_uid}`"),
                ("Implementation Version Name", f"`{implementation.implementation_version_name}`"),
            ],
        ),
        "",
        "## 2 AE specifications",
        "",
        f"### 2.1 SOP classes (AE `{node.ae_title}`, *setting*)",
        "",
        *_table(
            ("SOP class", "UID", "SCU", "SCP"),
            [("Verification", f"`{Verification}`", "yes", "yes")]
            + [
                (_name(uid), f"`{uid}`", "yes" if uid in OUTPUT_SOP_CLASSES else "no", "yes")
                for uid in sorted(OUTPUT_SOP_CLASSES, key=_name)
            ]
            + [
                ("every other storage SOP class below", "", "yes (`radground send`)", "yes"),
            ],
        ),
        "",
        f"The SCP accepts all {len(STORAGE_SOP_CLASSES)} storage SOP classes of PS3.4 Annex B that",
        "the DICOM toolkit knows (section 2.6). `radground send` forwards any file of these",
        "classes as Storage SCU.",
        "",
        "### 2.2 Association policies",
        "",
        *_table(
            ("policy", "value"),
            [
                ("Application Context Name", "`1.2.840.10008.3.1.1.1` (DICOM)"),
                ("Asynchronous operations", "not supported (one outstanding operation)"),
                ("SCP/SCU role selection", "not negotiated (default roles)"),
                ("Extended negotiation", "none"),
            ]
            + [
                (f"`node.{name}` — {meaning}", _setting_value(getattr(node, name)))
                for name, meaning in POLICY_SETTINGS
            ],
        ),
        "",
        "Associations are rejected (A-ASSOCIATE-RJ, PS3.8 §9.3.4) with:",
        "",
        *_table(
            ("condition", "result", "source", "reason"),
            [
                (
                    "calling AE title not in `node.allowed_peers` (or from another host)",
                    "rejected-permanent",
                    "service user",
                    "calling AE title not recognised",
                ),
                (
                    "called AE title is not `node.ae_title` (when `require_called_ae_title`)",
                    "rejected-permanent",
                    "service user",
                    "called AE title not recognised",
                ),
                (
                    "`node.max_associations` associations already open",
                    "rejected-transient",
                    "service provider (presentation)",
                    "local limit exceeded",
                ),
                (
                    (
                        "the peer address holds `node.max_connections_per_peer` connections "
                        "(sent at accept)"
                    ),
                    "rejected-transient",
                    "service provider (presentation)",
                    "local limit exceeded",
                ),
            ],
        ),
        "",
        "A PDU whose length field exceeds its limit (A-ASSOCIATE-RQ/AC 1 MiB, P-DATA-TF",
        "`node.max_pdu_size`, fixed-size PDUs their size) is answered with A-ABORT (source",
        "service provider, reason invalid PDU parameter value, PS3.8 §9.3.8) before its body is",
        "read; a PDU that does not arrive whole within `node.network_timeout_seconds` closes the",
        "connection.",
        "",
        "### 2.3 Presentation context acceptance (SCP)",
        "",
        "For each proposed presentation context of a supported abstract syntax, the SCP accepts",
        "the first transfer syntax **in the requestor's order** that it supports (section 2.5), so",
        "an instance is stored in the transfer syntax the sender holds it in and is never forced",
        "through decompression or lossy compression. Contexts for unsupported SOP classes or with",
        "no supported transfer syntax are rejected (abstract / transfer syntax not supported).",
        "",
        "### 2.4 Presentation contexts proposed (SCU)",
        "",
        "- Results (SR, GSPS/CSPS, SC) are written in Explicit VR Little Endian.",
        "- For each file, one context per SOP class: an uncompressed file proposes Explicit VR",
        "  Little Endian, Implicit VR Little Endian and Explicit VR Big Endian; a compressed file",
        "  proposes its own transfer syntax only (the SCU never transcodes). A file whose context",
        "  the peer rejects fails with a message naming its SOP class and transfer syntax.",
        "- Verification (C-ECHO) proposes "
        + ", ".join(_name(uid) for uid in _verification_syntaxes())
        + ".",
        "",
        "### 2.5 Transfer syntaxes (SCP)",
        "",
        *_table(
            ("transfer syntax", "UID"),
            [(_name(str(uid)), f"`{uid}`") for uid in ACCEPTED_TRANSFER_SYNTAXES],
        ),
        "",
        "### 2.6 Storage SOP classes (SCP)",
        "",
        *_table(
            ("SOP class", "UID"),
            [(_name(uid), f"`{uid}`") for uid in STORAGE_SOP_CLASSES],
        ),
        "",
        "## 3 C-STORE statuses (SCP)",
        "",
        "Every status other than Success carries an Error Comment (at most 64 characters) and is",
        "logged with hashed UIDs; one refused instance does not end its association.",
        "",
        *_table(
            ("status", "category", "meaning", "when"),
            [
                (f"`0x{getattr(StoreStatus, key):04X}`", category, meaning, when)
                for key, (category, meaning, when) in STORE_STATUS_CONDITIONS.items()
            ],
        ),
        "",
        "The Storage SCU treats Success and Warning as stored. Out of Resources, a lost",
        "association and an unreachable peer are retried with exponential backoff; other failures",
        "fail the delivery and keep the peer's status and Error Comment for `radground jobs show`.",
        "",
        "## 4 Communication profiles",
        "",
        "DICOM Upper Layer over TCP/IP (PS3.8). The SCP listens on",
        f"`node.host`:`node.port` (*setting*, default `{node.host}`:{node.port}); with",
        (
            "`node.listener_processes` > 1 several processes of the same node accept on its one "
            "listening"
        ),
        "socket; the node does not start while any other process listens on the port. With",
        (
            "`node.tls.enabled` the SCP also listens with TLS on `node.tls.port` (default "
            f"{node.tls.port},"
        ),
        "the registered `dicom-tls` port; section 6.1), and `node.tls.required` turns the plain",
        "port off.",
        "",
        "## 5 Character sets",
        "",
        "- Received instances are stored byte for byte in whatever Specific Character Set they",
        "  declare; the node converts no character set.",
        "- Results carry Specific Character Set `ISO_IR 192` (UTF-8): findings are written in",
        "  English and Chinese, and the SR declares each series' language (TID 1204).",
        "",
        "## 6 Security",
        "",
        *_security_profiles_section(),
        "- No user identity negotiation: peers are identified by AE title, host and (over TLS)",
        "  certificate.",
        "- Access control by Called AE Title and by Calling AE Title, optionally bound to a host",
        "  (section 2.2) and, over TLS, to the peer's certificate (section 6.1).",
        "- Log lines name instances by a hash of their UIDs, never by patient data.",
        "",
        *_stow_rs_section(),
    ]
    return "\n".join(lines)


def _security_profiles_section() -> list[str]:
    """Section 6.1: the secure transport connection profiles (PS3.15 B.1, B.9)."""
    tls = NodeTlsSettings()
    return [
        "### 6.1 Security profiles",
        "",
        "Basic TLS Secure Transport Connection Profile (PS3.15 B.1) with the BCP 195 TLS Profile",
        "(PS3.15 B.9, RFC 9325), as SCP and as SCU:",
        "",
        *_table(("", ""), [
            ("TLS versions", "1.2 and 1.3 (nothing older is negotiated)"),
            ("TLS 1.2 cipher suites", ", ".join(
                f"`{name}`" for name in BCP195_TLS12_CIPHERS.split(":")
            ) + " (ECDHE only, no RSA key exchange, no CBC)"),
            ("TLS 1.3 cipher suites", "OpenSSL's defaults (all AEAD)"),
            ("compression, renegotiation", "off"),
            ("SCP port", (
                f"`node.tls.port` (*setting*, default {tls.port}); `node.tls.required` "
                "(default false) turns the plain port off"
            )),
            ("SCP certificate", "`node.tls.certificate`, `node.tls.key` (the key file mode 0600)"),
            ("node authentication", (
                "`node.tls.ca_bundle`; `node.tls.verify_client` (default "
                f"{_setting_value(tls.verify_client)}) requires a client certificate it verifies"
            )),
            ("certificate → AE title", (
                "`node.tls.allowed_subjects`: the calling AE titles each certificate subject "
                "(CN or RFC 4514 subject) may use; any other is rejected with A-ASSOCIATE-RJ "
                "permanent, service user, calling AE title not recognised"
            )),
            ("failed handshake", (
                "the connection is closed within `node.tls.handshake_timeout_seconds` "
                f"(default {tls.handshake_timeout_seconds:g}) before any DICOM is read; logged "
                "and counted"
            )),
            ("SCU", (
                "per DICOM destination: `tls`, `ca_bundle`, `client_cert`/`client_key`, "
                "`server_name` (the name the peer's certificate must carry; default its host)"
            )),
        ]),
        "",
    ]


def _stow_rs_section() -> list[str]:
    """Section 7: the DICOMweb Store Transaction the web application offers (PS3.18 §10.5)."""
    limit = WebSettings().stow_max_request_mb
    return [
        "## 7 DICOMweb STOW-RS (PS3.18 §10.5)",
        "",
        "The web application (`[web]`) stores instances sent by the Studies Store Transaction.",
        "Each instance takes the same ingest path as a C-STORE (`dicom_node.ingest`): the same",
        "checks, storage, durability and study index, and the same status, given as its Failure",
        "Reason.",
        "",
        *_table(("", ""), [
            ("resources", "`POST {base}/dicomweb/studies`, `POST {base}/dicomweb/studies/{study}`"),
            ("request", (
                '`multipart/related; type="application/dicom"`, one PS3.10 file per part; the '
                "SOP Class, SOP Instance and Transfer Syntax come from each part's File Meta "
                "Information (sections 2.5 and 2.6 apply as to C-STORE)"
            )),
            ("response", "`application/dicom+json`: the Store Instances Response Module"),
            ("authorisation", (
                "an API token with the `ingest` scope (`Authorization: Bearer`); the account's "
                "name (up to 16 characters) is recorded as the Calling AE Title"
            )),
            ("size limit", (
                f"`web.stow_max_request_mb` (*setting*, default {limit}); the body is spooled "
                "to the storage volume, never held in memory"
            )),
        ]),
        "",
        *_table(("HTTP status", "when"), [
            ("200", "every instance stored (Referenced SOP Sequence)"),
            ("202", "some stored, others failed (Failed SOP Sequence with Failure Reason)"),
            ("409", "no instance stored; each failure in the Failed SOP Sequence"),
            ("400", "malformed multipart body, no parts, or no boundary (nothing stored)"),
            ("401 / 403", "no valid token / a token without the `ingest` scope"),
            ("413", "the body is larger than the limit (nothing stored)"),
            ("415", (
                "not `multipart/related` of `application/dicom`, or a part of another type "
                "(nothing stored)"
            )),
        ]),
        "",
        "Failure Reason (0008,1197) is the C-STORE status of section 3 for the same bytes; a",
        "part that is not a PS3.10 file fails with `0xC000` without Referenced SOP UIDs. The",
        "instances are stored once the whole body has arrived well formed, in the parts' order.",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``docs/conformance.md``, or with ``--check`` report whether it is current."""
    parser = argparse.ArgumentParser(
        prog="python -m radground.conformance_doc", description="Write docs/conformance.md."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is out of date; write nothing"
    )
    parser.add_argument(
        "--output", type=Path, default=CONFORMANCE_PATH, help="file to write or check"
    )
    args = parser.parse_args(argv)
    text = render_conformance_statement()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(
                f"{args.output} is out of date; regenerate it: {REGENERATE_COMMAND}",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
