"""RadGround's settings: one typed, immutable object read from a TOML file.

Precedence, highest first: values passed by the CLI, ``RADGROUND_*``
environment variables (nested with ``__``, e.g. ``RADGROUND_NODE__PORT=11113``),
the TOML file (``--config``, else ``$RADGROUND_CONFIG``, else
``config/radground.toml`` when it exists), then the defaults below.
``config/radground.toml`` documents every setting; a test keeps it equal to
these defaults. Unknown keys and bad values fail at start-up with a message
naming the setting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from dicom_node.patches import PDU_LIMITS, PYNETDICOM_PATCHES, QUICK_ACK, PynetdicomPatch
from dicom_node.storage import DuplicatePolicy, FsyncPolicy
from exporters.protocol import OutputKind, UnknownOutputKindError, parse_output_kind

if TYPE_CHECKING:
    from dicom_node.scp import AllowedPeer

__all__ = [
    "BROKER_TLS_SCHEMES",
    "AnyDestination",
    "CompletionSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "DicomDestination",
    "DicomWebDestination",
    "ExporterSettings",
    "FhirEndpointSettings",
    "Hl7Destination",
    "LoggingSettings",
    "ModelSettings",
    "NodeSettings",
    "NodeTlsSettings",
    "RouteSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "WebSettings",
    "WorkerSettings",
    "dicom_output_kinds",
    "load_settings",
]

DEFAULT_CONFIG = Path("config/radground.toml")
_ENV_PREFIX = "RADGROUND_"
_ENV_NESTING = "__"

AETitle = Annotated[
    str,
    Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*[^ ][\x20-\x5b\x5d-\x7e]*$"),
]
Port = Annotated[int, Field(ge=0, le=65535)]


class SettingsError(Exception):
    """The settings are invalid; the message names each bad setting and says why."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AllowedPeerSettings(_Section):
    """A calling AE title allowed to send, optionally only from one host."""

    ae_title: AETitle
    host: str | None = None

    def to_peer(self) -> AllowedPeer:
        # imported here: the SCP's module defines metrics, which the command line must not
        # create before it chose their mode (radground.metrics)
        from dicom_node.scp import AllowedPeer

        return AllowedPeer(ae_title=self.ae_title, host=self.host)


class NodeTlsSettings(_Section):
    """``[node.tls]``: the DICOM TLS listener (PS3.15 B.1/B.9, BCP 195 TLS Profile)."""

    enabled: bool = False
    #: Its own port (2762: IANA's dicom-tls).
    port: Port = 2762
    #: PEM certificate (chain) and private key the node presents; the key file must be the
    #: node user's alone (mode 0600).
    certificate: str = ""
    key: str = ""
    #: PEM file of the CAs whose client certificates are trusted (empty: none asked for).
    ca_bundle: str = ""
    #: Require a client certificate that ca_bundle verifies (mutual TLS, IHE ATNA).
    verify_client: bool = True
    #: The plain port (node.port) is off: TLS only.
    required: bool = False
    #: A TLS handshake must finish within this many seconds.
    handshake_timeout_seconds: float = Field(10.0, gt=0, le=300)
    #: Certificate subject (common name, or the RFC 4514 subject "CN=ct-1,O=Hospital") -> the
    #: calling AE titles that peer may use; empty = any verified peer, any AE title.
    allowed_subjects: dict[str, tuple[AETitle, ...]] = {}

    @model_validator(mode="after")
    def _complete(self) -> NodeTlsSettings:
        if self.required and not self.enabled:
            raise ValueError("required = true needs enabled = true (it turns the plain port off)")
        if not self.enabled:
            return self
        if not (self.certificate and self.key):
            raise ValueError("enabled = true needs certificate and key")
        if self.verify_client and not self.ca_bundle:
            raise ValueError(
                "verify_client = true needs ca_bundle (the CAs of the peers' certificates); "
                "set verify_client = false to accept peers without a client certificate"
            )
        if self.allowed_subjects and not self.ca_bundle:
            raise ValueError("allowed_subjects needs ca_bundle: subjects come from verified "
                             "certificates")
        return self


class NodeSettings(_Section):
    """The DICOM listener (Storage SCP)."""

    ae_title: AETitle = "RADGROUND"
    host: str = "127.0.0.1"
    port: Port = 11112
    listener_processes: int = Field(0, ge=0, le=64)
    max_associations: int = Field(16, ge=1, le=1000)
    require_called_ae_title: bool = True
    allowed_peers: tuple[AllowedPeerSettings, ...] = ()
    network_timeout_seconds: float = Field(60.0, gt=0)
    acse_timeout_seconds: float = Field(30.0, gt=0)
    dimse_timeout_seconds: float = Field(60.0, gt=0)
    max_pdu_size: int = Field(262_144, ge=0)
    #: Concurrent connections one peer address may hold (counted at TCP accept, across listeners).
    max_connections_per_peer: int = Field(8, ge=1, le=1000)
    #: RadGround's patches of pynetdicom internals in use (docs/third-party-patches.md); [] = stock.
    pynetdicom_patches: tuple[PynetdicomPatch, ...] = PYNETDICOM_PATCHES
    tls: NodeTlsSettings = NodeTlsSettings()

    @model_validator(mode="after")
    def _tls_port_of_its_own(self) -> NodeSettings:
        if self.tls.enabled and not self.tls.required and self.tls.port == self.port != 0:
            raise ValueError(f"tls.port and port are both {self.port}: the TLS listener needs "
                             "its own port")
        return self

    @field_validator("pynetdicom_patches")
    @classmethod
    def _quick_ack_needs_pdu_limits(cls, patches: tuple[str, ...]) -> tuple[str, ...]:
        if QUICK_ACK in patches and PDU_LIMITS not in patches:
            raise ValueError(f'"{QUICK_ACK}" reads through "{PDU_LIMITS}": list both or neither')
        return patches

    def resolved_listener_processes(self) -> int:
        return self.listener_processes or (os.cpu_count() or 1)


class StorageSettings(_Section):
    """Where received instances are kept."""

    root: Path = Path("var/instances")
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    duplicates: DuplicatePolicy = DuplicatePolicy.IGNORE_IF_IDENTICAL
    reserve_mb: int = Field(1024, ge=0)


class DatabaseSettings(_Section):
    """The study index and job state."""

    url: str = "sqlite:///var/radground.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class CompletionSettings(_Section):
    """When a study counts as complete."""

    idle_seconds: float = Field(30.0, gt=0)
    force_after_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _force_after_idle(self) -> CompletionSettings:
        if self.force_after_seconds < self.idle_seconds:
            raise ValueError("force_after_seconds must be >= idle_seconds")
        return self


DestinationType = Literal["dicom", "dicomweb", "fhir", "hl7"]


def dicom_output_kinds(names: object) -> tuple[OutputKind, ...]:
    """A DICOM destination's ``outputs`` as output kinds, each once, in the given order.

    Raises
    ------
    ValueError
        A name that is no output kind, one that is not DICOM (``fhir``, ``hl7``: those
        go to a FHIR endpoint or an HL7 receiver), or ``csps`` (asked for as ``gsps``);
        the message names it and lists the accepted names.
    """
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ValueError(f"must be a list of output kinds, e.g. {list(DEFAULT_DICOM_OUTPUTS)}")
    accepted = ", ".join(repr(k.value) for k in OutputKind if k.is_dicom and k.requested_as is k)
    kinds: list[OutputKind] = []
    for name in names:
        try:
            kind = parse_output_kind(name)
        except UnknownOutputKindError:
            raise ValueError(
                f"unknown output kind {name!r}; a DICOM destination takes {accepted}"
            ) from None
        if not kind.is_dicom:
            raise ValueError(
                f"output kind {name!r} is not DICOM; a DICOM destination takes {accepted}"
            )
        if kind.requested_as is not kind:
            raise ValueError(
                f"output kind {name!r} comes with {kind.requested_as.value!r}: name that instead"
            )
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


#: What a DICOM destination gets unless its ``outputs`` say otherwise.
DEFAULT_DICOM_OUTPUTS = (OutputKind.SR, OutputKind.GSPS, OutputKind.KOS)


class DeliverySettings(_Section):
    """The retry policy every destination shares (worklist.destinations.retry).

    A failed delivery is retried with capped exponential backoff and equal jitter
    (each delay between half and all of min(cap, base * 2^(n-1))), until
    retry_for_hours after its first failure; then it fails for the operator.
    """

    #: How long a failing delivery keeps being retried (a working day); a destination may override
    #: it.
    retry_for_hours: float = Field(8.0, gt=0, le=24 * 30)
    #: Ceiling of the first retry's delay.
    backoff_base_seconds: float = Field(10.0, gt=0)
    #: The longest delay between two attempts (a peer's Retry-After included).
    backoff_cap_seconds: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _base_below_cap(self) -> DeliverySettings:
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise ValueError("backoff_base_seconds must be <= backoff_cap_seconds")
        return self


class _DestinationSection(_Section):
    """What every ``[destinations.NAME]`` section has."""

    #: Languages it gets (BCP-47); empty = every language of the report.
    languages: tuple[str, ...] = ()
    #: Retry a failing delivery this long (hours) instead of [delivery] retry_for_hours.
    retry_for_hours: float | None = Field(None, gt=0, le=24 * 30)

    @model_validator(mode="before")
    @classmethod
    def _no_attempt_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_attempts" in data:
            raise ValueError(
                "max_attempts is no longer read: retries are bounded by time; set retry_for_hours "
                "(default [delivery] retry_for_hours = 8) and remove max_attempts"
            )
        return data


class _TlsSection(_Section):
    """TLS options of a client (worklist.destinations.security.TlsOptions)."""

    #: Skip the peer's certificate and host name check, and allow a credential over plain
    #: http://: a test peer only; logged as a WARNING at start and on the first delivery.
    insecure: bool = False
    #: PEM file of the CAs to trust instead of the system's (a hospital's private CA).
    ca_bundle: str = ""
    #: PEM certificate (and key, or client_key) for mutual TLS.
    client_cert: str = ""
    client_key: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_tls_verify(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tls_verify" in data:
            raise ValueError(
                "tls_verify is no longer read: certificates are always checked; remove it, or "
                "write insecure = true to skip the check for a test peer (logged)"
            )
        return data

    @model_validator(mode="after")
    def _insecure_or_ca(self) -> _TlsSection:
        if self.insecure and self.ca_bundle:
            raise ValueError("ca_bundle is pointless with insecure = true; drop one of them")
        return self


def _refuse_plain_credentials(url: str, section: _HttpAuthSection, *, insecure: bool) -> None:
    """A credential never travels over plain http:// unless the destination says insecure."""
    if section.auth != "none" and url.startswith("http://") and not insecure:
        raise ValueError(
            f"auth = {section.auth!r} would send the credential in clear to {url}: use an "
            "https:// URL, or write insecure = true in this section to accept that (a test "
            "peer only)"
        )


class _HttpAuthSection(_Section):
    """HTTP credentials; secrets come from the environment or a file, never this file."""

    #: "none", "bearer" (token from token_env or token_file) or "basic" (username,
    #: password from password_env or password_file).
    auth: Literal["none", "bearer", "basic"] = "none"
    token_env: str = ""
    token_file: str = ""
    username: str = ""
    password_env: str = ""
    password_file: str = ""

    @model_validator(mode="after")
    def _auth_complete(self) -> _HttpAuthSection:
        if self.auth == "bearer" and not (self.token_env or self.token_file):
            raise ValueError(
                "auth = 'bearer' needs token_env (the environment variable holding the token) "
                "or token_file"
            )
        if self.auth == "basic" and not (
            self.username and (self.password_env or self.password_file)
        ):
            raise ValueError("auth = 'basic' needs username and password_env or password_file")
        return self


class DicomDestination(_DestinationSection, _TlsSection):
    """``type = "dicom"``: a DICOM peer RadGround sends results to with C-STORE (the PACS)."""

    type: Literal["dicom"] = "dicom"
    ae_title: AETitle
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    #: DICOM TLS (BCP 195 profile) with the tls_* options; its port is the peer's TLS port.
    tls: bool = False
    #: The name the peer's certificate must carry; empty = host.
    server_name: str = ""
    #: Which outputs it gets: "sr" (TID 1500 report), "gsps" (overlays; colour
    #: sources get a Colour PS), "kos" (Key Object Selection: the images with
    #: findings, shown by a PACS as key images), "sc" (Secondary Capture with
    #: burned-in boxes).
    outputs: tuple[OutputKind, ...] = DEFAULT_DICOM_OUTPUTS

    @field_validator("outputs", mode="before")
    @classmethod
    def _output_kinds(cls, value: object) -> tuple[OutputKind, ...]:
        return dicom_output_kinds(value)


class DicomWebDestination(_DestinationSection, _HttpAuthSection, _TlsSection):
    """``type = "dicomweb"``: a DICOMweb origin server (PACS/VNA) storing results by STOW-RS."""

    type: Literal["dicomweb"] = "dicomweb"
    #: The DICOMweb service base URL; objects are POSTed to {url}/studies.
    url: str
    #: Which outputs it gets, as for type "dicom".
    outputs: tuple[OutputKind, ...] = DEFAULT_DICOM_OUTPUTS
    timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("outputs", mode="before")
    @classmethod
    def _output_kinds(cls, value: object) -> tuple[OutputKind, ...]:
        return dicom_output_kinds(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// DICOMweb base URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials_encrypted(self) -> DicomWebDestination:
        _refuse_plain_credentials(self.url, self, insecure=self.insecure)
        return self


class FhirEndpointSettings(_DestinationSection, _HttpAuthSection, _TlsSection):
    """``type = "fhir"``: an EHR's FHIR R4 server; results arrive as one transaction Bundle per
    study revision."""

    type: Literal["fhir"] = "fhir"
    url: str
    outputs: tuple[Literal["fhir"], ...] = ("fhir",)
    timeout_seconds: float = Field(30.0, gt=0)
    primary_language: str = "en"
    #: FHIR identifier system for Patient IDs whose DICOM Issuer is missing or not a URI/OID;
    #: empty = this node's own namespace (exporters.fhir.local_patient_identifier_system).
    patient_identifier_system: str = ""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// FHIR base URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials_encrypted(self) -> FhirEndpointSettings:
        _refuse_plain_credentials(self.url, self, insecure=self.insecure)
        return self


class Hl7Destination(_DestinationSection, _TlsSection):
    """``type = "hl7"``: an HL7 v2 receiver (EHR/RIS interface engine) taking ORU^R01 over MLLP."""

    type: Literal["hl7"] = "hl7"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    #: Speak TLS (MLLP over TLS) with the tls_* options.
    tls: bool = False
    #: MSH-4 Sending Facility, MSH-5 Receiving Application and MSH-6 Receiving Facility of the
    #: messages built for it (empty: left empty).
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    #: MSH-11 Processing ID: "P" production, "T" training, "D" debugging.
    processing_id: Literal["P", "T", "D"] = "P"
    outputs: tuple[Literal["hl7"], ...] = ("hl7",)
    #: No ACK within this (seconds) is a retryable failure.
    ack_timeout_seconds: float = Field(30.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _tls_options_need_tls(self) -> Hl7Destination:
        options = ("insecure", "ca_bundle", "client_cert", "client_key")
        given = [k for k in options if getattr(self, k)]
        if given and not self.tls:
            raise ValueError(f"{', '.join(given)} take effect with tls = true only: set it")
        return self


def _destination_type(value: Any) -> str | None:
    """A section's type; a section without one is "dicom" (configurations from before the other
    types)."""
    if isinstance(value, dict):
        return str(value.get("type", "dicom"))
    return getattr(value, "type", None)


AnyDestination = Annotated[
    Annotated[DicomDestination, Tag("dicom")]
    | Annotated[DicomWebDestination, Tag("dicomweb")]
    | Annotated[FhirEndpointSettings, Tag("fhir")]
    | Annotated[Hl7Destination, Tag("hl7")],
    Discriminator(_destination_type),
]


class ModelSettings(_Section):
    """A model workers can load (one instance per GPU worker process)."""

    #: "onnx" (the shipped CPU detector or another ONNX detector), "tensorrt"
    #: (the same network as a TensorRT engine, NVIDIA GPUs), "hf" (a MedRegA /
    #: InternVL / Qwen2-VL checkpoint from a local directory).
    backend: Literal["onnx", "tensorrt", "hf"] = "onnx"
    #: ONNX file or checkpoint directory; empty = the shipped default model (onnx only).
    path: str = ""
    max_batch_size: int = Field(8, ge=1, le=256)
    #: How long the micro-batcher waits to fill a batch.
    batch_wait_ms: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _path_needed(self) -> ModelSettings:
        if self.backend != "onnx" and not self.path:
            raise ValueError(f"backend {self.backend!r} needs a path")
        return self


#: The values of a route's ``review`` (:class:`worklist.routing.ReviewPolicy`).
REVIEW_POLICIES = ("none", "before_ehr", "before_all")


class RouteSettings(_Section):
    """A routing rule: which studies to process, how, and where results go.

    A study takes the first route whose filters all match at least one of its
    instances (empty filter = any). RadGround's own outputs never match.
    """

    name: Annotated[str, Field(min_length=1, max_length=64)]
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    calling_ae_titles: tuple[str, ...] = ()
    #: Regular expression searched in Series Description; empty = any.
    series_description: str = ""
    model: str = "default"
    task: Literal["detection", "grounded_report", "text_to_region", "region_to_text", "report"] = (
        "detection"
    )
    languages: tuple[str, ...] = ("en", "zh-CN")
    #: Objects/organs for grounded-report and text-to-region prompts (vocabulary keys or names).
    targets: tuple[str, ...] = ()
    regional_cot: bool = False
    #: Which images go to the model: View Position filter (e.g. PA, AP) ...
    view_positions: tuple[str, ...] = ()
    #: ... and, for CT/MR stacks, "central" slice, "evenly_spaced" (slice_count) or "all".
    volume_strategy: Literal["central", "evenly_spaced", "all"] = "central"
    slice_count: int = Field(1, ge=1, le=64)
    #: Names of [destinations.NAME] sections.
    destinations: tuple[str, ...] = ()
    #: What waits for a radiologist's sign-off: "none" (outputs go out unverified, a review
    #: after the fact amends them), "before_ehr" (the PACS gets the unverified SR/GSPS at once,
    #: the FHIR and HL7 destinations nothing until sign-off) or "before_all" (nothing leaves).
    review: Literal["none", "before_ehr", "before_all"] = "none"

    @field_validator("review", mode="before")
    @classmethod
    def _review_policy(cls, value: object, info: ValidationInfo) -> object:
        if value not in REVIEW_POLICIES:
            raise ValueError(
                f"route {info.data.get('name', '?')!r}: review must be one of "
                f"{', '.join(repr(a) for a in REVIEW_POLICIES)}, got {value!r}"
            )
        return value

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


#: Broker URL schemes that speak TLS (Redis, RabbitMQ).
BROKER_TLS_SCHEMES = ("rediss://", "amqps://")


class WorkerSettings(_Section):
    """Celery workers: queue "gpu" runs the model, queue "io" exports and delivers."""

    #: Celery broker. The embedded default is a SQLite file (no server) whose waiting
    #: workers are woken on publish (radground+sqlite:///; sqla+sqlite:/// is kombu's
    #: stock polling transport); a cluster uses redis://host:6379/0 or amqp://user:pass@host:5672//.
    broker_url: str = "radground+sqlite:///var/broker.sqlite"
    #: TLS to a rediss:// or amqps:// broker, the server's certificate always checked: PEM file
    #: of the CAs to trust instead of the system's, and a client certificate (and key) for
    #: mutual TLS.
    broker_ca_bundle: str = ""
    broker_client_cert: str = ""
    broker_client_key: str = ""
    #: Worker processes `radground serve` starts for each queue.
    gpu_processes: int = Field(1, ge=0, le=16)
    io_processes: int = Field(1, ge=0, le=64)
    #: Hard time limit of one task.
    task_time_limit_seconds: int = Field(900, ge=10)
    #: A job whose inference started this many times without finishing (worker
    #: killed, OOM, broker redelivery) is marked dead instead of looping forever.
    max_task_starts: int = Field(3, ge=1, le=20)
    #: Seconds after which an unacknowledged message is redelivered (Redis/SQS).
    visibility_timeout_seconds: int = Field(3600, ge=60)
    #: A queued job not picked up for this long is enqueued again (the broker lost it).
    requeue_after_seconds: float = Field(120.0, gt=0)
    #: A running inference renews its claim on its job every third of this; a
    #: job whose claim lapsed (its worker was killed or lost) is queued again.
    lease_seconds: float = Field(30.0, ge=3, le=3600)
    #: Where the produced SR/GSPS files and FHIR Bundles are written
    #: (<outputs_root>/<Study Instance UID>/r<revision>/), whatever the destinations.
    outputs_root: Path = Path("var/outputs")

    @field_validator("broker_url")
    @classmethod
    def _no_tls_in_broker_url(cls, value: str) -> str:
        query = urlsplit(value).query
        named = sorted({k for k, _ in parse_qsl(query) if k.lower().startswith("ssl")})
        if named:
            raise ValueError(
                f"TLS options in the URL ({', '.join(named)}) are not read: the broker's "
                "certificate is always checked; write broker_ca_bundle, broker_client_cert and "
                "broker_client_key in [workers] instead"
            )
        return value

    @model_validator(mode="after")
    def _broker_tls_needs_tls_scheme(self) -> WorkerSettings:
        given = [
            k
            for k in ("broker_ca_bundle", "broker_client_cert", "broker_client_key")
            if getattr(self, k)
        ]
        if given and not self.broker_url.startswith(BROKER_TLS_SCHEMES):
            raise ValueError(
                f"{', '.join(given)} need a TLS broker URL (rediss:// or amqps://), "
                f"not {urlsplit(self.broker_url).scheme}://"
            )
        if self.broker_client_key and not self.broker_client_cert:
            raise ValueError("broker_client_key needs broker_client_cert")
        return self


DEFAULT_ROUTE = RouteSettings(
    name="chest-radiographs",
    modalities=("CR", "DX"),
    body_parts=("CHEST",),
    view_positions=("PA", "AP"),
    model="default",
    task="detection",
)


class ExporterSettings(_Section):
    """How SR/GSPS/FHIR outputs are built."""

    #: Memoise highdicom's IOD table look-up while building SR and GSPS
    #: (exporters/_highdicom_cache.py, a patch of a highdicom internal; see
    #: docs/third-party-patches.md). False: highdicom's stock code path.
    memoise_highdicom_iod_lookups: bool = True


class WebSettings(_Section):
    """The HTTP surface (web/): console, REST API, STOW-RS ingest, health and metrics."""

    #: `radground serve` starts it with the node; `radground web` runs it alone (cluster).
    enabled: bool = True
    #: Loopback by default: open it to the network deliberately (and with TLS or behind a proxy).
    host: str = "127.0.0.1"
    port: Port = 8080
    #: HTTPS: PEM certificate (chain) and key files; both or neither.
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    #: The path prefix a reverse proxy serves it under ("/radground"); "" for the root.
    base_path: str = ""
    #: Proxies (addresses) whose X-Forwarded-Proto/-For are believed: behind a TLS-terminating
    #: proxy, cookies get the Secure flag and the audit trail the client's address.
    trusted_proxies: tuple[str, ...] = ()
    #: A console session ends this long after its last request.
    session_idle_minutes: int = Field(30, ge=1, le=1440)
    #: An account is locked for lockout_minutes after this many failed logins in a row.
    max_failed_logins: int = Field(5, ge=1, le=100)
    lockout_minutes: int = Field(15, ge=1, le=1440)
    #: Largest STOW-RS request accepted (413 beyond it); streamed, never held in memory whole.
    stow_max_request_mb: int = Field(4096, ge=1)
    #: Where signing keys and the metrics of all processes live (created 0700).
    state_dir: Path = Path("var/web")

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError('must be "" or a path such as "/radground"')
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("tls_certificate and tls_key go together: set both or neither")
        return self


class AuditSettings(_Section):
    """IHE ATNA audit trail: DICOM audit messages (PS3.15 A.5) to an audit repository over
    syslog, or to a local rotating file."""

    enabled: bool = True
    transport: Literal["file", "tls", "udp"] = "file"
    host: str = ""
    port: Port = 6514
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    server_name: str = ""
    file: Path = Path("var/audit/audit.log")
    file_max_mb: int = Field(50, ge=1)
    file_backups: int = Field(10, ge=0, le=1000)
    spool_dir: Path = Path("var/audit/spool")
    spool_max_messages: int = Field(100_000, ge=1)
    retry_seconds: float = Field(10.0, gt=0)
    audit_source_id: str = ""
    enterprise_site_id: str = ""

    @model_validator(mode="after")
    def _repository_complete(self) -> AuditSettings:
        if self.transport != "file" and not (self.host and self.port):
            raise ValueError(f'transport "{self.transport}" needs host and port')
        if self.transport == "tls" and not self.ca_file:
            raise ValueError('transport "tls" needs ca_file (the CA bundle of the repository)')
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


class LoggingSettings(_Section):
    """Log output (never patient data, at any level)."""

    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value


class Settings(BaseSettings):
    """All of RadGround's settings (see ``config/radground.toml``)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter=_ENV_NESTING,
    )

    node: NodeSettings = NodeSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    workers: WorkerSettings = WorkerSettings()
    exporters: ExporterSettings = ExporterSettings()
    models: dict[str, ModelSettings] = {"default": ModelSettings()}
    routes: tuple[RouteSettings, ...] = (DEFAULT_ROUTE,)
    delivery: DeliverySettings = DeliverySettings()
    destinations: dict[str, AnyDestination] = {}
    web: WebSettings = WebSettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="before")
    @classmethod
    def _fhir_endpoints_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "fhir_endpoints" in data:
            old = data["fhir_endpoints"]
            if old:  # an empty [fhir_endpoints] table says nothing: dropped
                names = list(old) if isinstance(old, dict) else ["NAME"]
                moves = ", ".join(f"[fhir_endpoints.{n}] to [destinations.{n}]" for n in names)
                raise ValueError(
                    f"fhir_endpoints: FHIR servers are destinations now: rename {moves} and add "
                    'type = "fhir" (the other keys stay; max_attempts becomes retry_for_hours)'
                )
            data = {k: v for k, v in data.items() if k != "fhir_endpoints"}
        return data

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        names = [route.name for route in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("routes: route names must be unique")
        for route in self.routes:
            if route.model not in self.models:
                raise ValueError(f"routes.{route.name}.model: no [models.{route.model}] section")
            for destination in route.destinations:
                if destination not in self.destinations:
                    raise ValueError(
                        f"routes.{route.name}.destinations: no [destinations.{destination}] section"
                    )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the settings (see the module docstring for precedence).

    Raises
    ------
    SettingsError
        A file given explicitly does not exist, or a value is invalid; the
        message names the setting and where its value came from
        (``node.port (environment variable RADGROUND_NODE__PORT): …``).
    """
    explicit = config_file or os.environ.get("RADGROUND_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG
    if explicit and not path.is_file():
        raise SettingsError(f"config file {path} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            location = tuple(str(part) for part in error["loc"])
            if (
                location[:1] == ("destinations",)
                and len(location) > 2
                and location[2] in get_args(DestinationType)
            ):
                location = location[:2] + location[3:]  # the union's tag: the section says its type
            where = ".".join(location) or "(top level)"
            source = _value_source(location, path=path, overrides=overrides)
            lines.append(f"  {where} ({source}): {error['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
    except SourceError as exc:
        if "EnvSettingsSource" not in str(exc):
            raise SettingsError(f"could not read {path}: {exc}") from None
        # pydantic-settings could not parse an environment variable (e.g. a section as bad JSON).
        names = ", ".join(_environment_variables_under(())) or "RADGROUND_*"
        raise SettingsError(f"could not read the environment variables {names}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"could not read {path}: {exc}") from None


def _environment_variables_under(location: tuple[str, ...]) -> list[str]:
    """The ``RADGROUND_*`` variables that set ``location`` or a setting inside it."""
    exact = (_ENV_PREFIX + _ENV_NESTING.join(location)).upper()
    below = exact + _ENV_NESTING if location else exact
    found = []
    for name in sorted(os.environ):
        upper = name.upper()
        if upper == "RADGROUND_CONFIG":
            continue
        if (location and upper == exact) or upper.startswith(below):
            found.append(name)
    return found


def _value_source(location: tuple[str, ...], *, path: Path, overrides: dict[str, Any]) -> str:
    """Say where the value at ``location`` came from, following the sources' precedence.

    The highest-precedence source wins: explicit overrides, then an environment
    variable naming the setting or a section above it, then the TOML file. A
    location that no single source sets (a check across settings) names every
    source that contributed to it.
    """
    if location and location[0] in overrides:
        return "passed by the caller"
    for length in range(len(location), 0, -1):
        name = (_ENV_PREFIX + _ENV_NESTING.join(location[:length])).upper()
        matches = [key for key in os.environ if key.upper() == name]
        if matches:
            return f"from environment variable {matches[0]}"
    sources = [f"environment variable {name}" for name in _environment_variables_under(location)]
    if path.is_file():
        sources.append(str(path))
    return "from " + " and ".join(sources) if sources else "built-in default"
