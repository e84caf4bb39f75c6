"""Building the worklist's pipeline context and Celery app from settings."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dicom_node.patches import PYNETDICOM_PATCHES
from dicom_node.private_files import create_private_file
from dicom_node.scu import Destination
from exporters.hl7.enum import ProcessingId
from radground.audit import start_audit_trail
from radground.database import database_engine
from radground.secret_files import check_private_file, read_secret_file
from radground.settings import (
    BROKER_TLS_SCHEMES,
    AnyDestination,
    DeliverySettings,
    DicomDestination,
    DicomWebDestination,
    FhirEndpointSettings,
    Hl7Destination,
    ModelSettings,
    RouteSettings,
    Settings,
    SettingsError,
    WorkerSettings,
    _HttpAuthSection,
    _TlsSection,
)
from worklist.context import Enqueuer, LoadedModel, PipelineContext
from worklist.db import make_session_factory
from worklist.destinations import (
    DestinationTarget,
    DicomTarget,
    DicomWebTarget,
    FhirTarget,
    Hl7Target,
    HttpAuth,
    PlainTextCredentialError,
    RetryPolicy,
    TlsOptions,
    destination_for,
)
from worklist.embedded_broker import sqlite_broker_path
from worklist.routing import ReviewPolicy, Route

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine

__all__ = [
    "broker_tls_options",
    "build_context",
    "build_destination",
    "configure_celery",
    "load_model",
    "retry_policy",
    "to_route",
]

logger = logging.getLogger(__name__)


def to_route(route: RouteSettings) -> Route:
    return Route(
        name=route.name,
        modalities=frozenset(m.upper() for m in route.modalities),
        body_parts=frozenset(b.upper() for b in route.body_parts),
        sop_classes=frozenset(route.sop_classes),
        calling_ae_titles=frozenset(route.calling_ae_titles),
        series_description=route.series_description,
        model=route.model,
        task=route.task,
        languages=route.languages,
        targets=route.targets,
        regional_cot=route.regional_cot,
        view_positions=frozenset(v.upper() for v in route.view_positions),
        volume_strategy=route.volume_strategy,
        slice_count=route.slice_count,
        destinations=route.destinations,
        review=ReviewPolicy(route.review),
    )


def load_model(name: str, settings: ModelSettings, *, cache_dir: Path) -> LoadedModel:
    """Load one model in this process, with a micro-batcher in front of it."""
    from engine.batching import MicroBatcher
    from engine.model import RegionAwareModel

    model: RegionAwareModel
    if settings.backend == "onnx":
        from engine.backends.onnxruntime_backend import OnnxDetector

        model = OnnxDetector(settings.path or None, max_batch_size=settings.max_batch_size)
    elif settings.backend == "tensorrt":
        from engine.backends.tensorrt_backend import TensorRTDetector

        model = TensorRTDetector(
            settings.path, cache_dir=cache_dir, max_batch_size=settings.max_batch_size
        )
    else:
        from engine.backends.hf_backend import HFGroundingVLM

        model = HFGroundingVLM(settings.path)
    batcher = MicroBatcher(
        model, max_batch_size=settings.max_batch_size, max_wait_ms=settings.batch_wait_ms
    )
    logger.info(
        "Model %s loaded (%s %s) in process %d",
        name,
        model.info.name,
        model.info.version,
        os.getpid(),
    )
    return LoadedModel(model=model, generate=batcher.generate)


def _secret(name: str, what: str, *, env: str, file: str) -> str:
    """A secret from the environment variable ``env`` or the file ``file`` (stripped; the
    file must be the node user's alone, :mod:`radground.secret_files`)."""
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise SettingsError(
                f"destinations.{name}: {what} is read from ${env}, which is empty or unset"
            )
        return value
    return read_secret_file(file, setting=f"destinations.{name}", what=what)


def _credentials(name: str, section: _HttpAuthSection) -> tuple[str, str | None, str | None]:
    """(auth kind, token, password) of a section, secrets read now."""
    if section.auth == "bearer":
        return (
            "bearer",
            _secret(name, "the bearer token", env=section.token_env, file=section.token_file),
            None,
        )
    if section.auth == "basic":
        password = _secret(
            name, "the password", env=section.password_env, file=section.password_file
        )
        return "basic", None, password
    return "none", None, None


def _fhir_auth(name: str, section: FhirEndpointSettings) -> HttpAuth:
    kind, token, password = _credentials(name, section)
    if kind == "bearer":
        return HttpAuth.bearer(token or "")
    if kind == "basic":
        return HttpAuth.basic(section.username, password or "")
    return HttpAuth.none()


def _http_auth(name: str, section: DicomWebDestination) -> HttpAuth:
    kind, token, password = _credentials(name, section)
    if kind == "bearer":
        return HttpAuth.bearer(token or "")
    if kind == "basic":
        return HttpAuth.basic(section.username, password or "")
    return HttpAuth.none()


def _tls(name: str, section: _TlsSection, *, wanted: bool) -> TlsOptions | None:
    if not wanted:
        return None
    _check_client_key(name, section)
    if section.insecure:
        logger.warning(
            "destinations.%s: insecure = true: its TLS certificate is not checked and a "
            "credential may be sent over plain HTTP (a test peer only)",
            name,
        )
    try:
        return TlsOptions(
            verify=not section.insecure,
            ca_bundle=Path(section.ca_bundle) if section.ca_bundle else None,
            client_cert=Path(section.client_cert) if section.client_cert else None,
            client_key=Path(section.client_key) if section.client_key else None,
        )
    except ValueError as exc:
        raise SettingsError(f"destinations.{name}: {exc}") from None


def _check_client_key(name: str, section: _TlsSection) -> None:
    """Refuse a client private key its group or others may read (the key file, or the
    certificate file when the key is in it)."""
    setting = f"destinations.{name}"
    if section.client_key:
        check_private_file(section.client_key, setting=setting, what="the TLS client key")
        return
    if section.client_cert and _holds_private_key(Path(section.client_cert)):
        check_private_file(
            section.client_cert, setting=setting, what="the TLS client certificate and key"
        )


def _holds_private_key(path: Path) -> bool:
    try:
        return b"PRIVATE KEY-----" in path.read_bytes()
    except OSError:
        return False  # TlsOptions names the unreadable file


def _tls_configured(section: _TlsSection) -> bool:
    return section.insecure or bool(section.ca_bundle or section.client_cert)


def _hours(value: float | None) -> float | None:
    return None if value is None else value * 3600.0


def build_destination(
    name: str,
    section: AnyDestination,
    *,
    calling_ae_title: str,
    pynetdicom_patches: tuple[str, ...] = PYNETDICOM_PATCHES,
) -> DestinationTarget:
    """The target a destination type delivers to, from its ``[destinations.NAME]`` section
    (secrets read from the environment or files now).

    Raises
    ------
    SettingsError
        A secret is missing, a TLS file is unreadable, or no destination implements the type.
    """
    try:
        destination_for(section.type, name=name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    try:
        return _build_target(name, section, calling_ae_title=calling_ae_title,
                             pynetdicom_patches=pynetdicom_patches)
    except PlainTextCredentialError as exc:
        raise SettingsError(f"destinations.{name}: {exc}") from None


def _build_target(
    name: str,
    section: AnyDestination,
    *,
    calling_ae_title: str,
    pynetdicom_patches: tuple[str, ...],
) -> DestinationTarget:
    retry_for = _hours(section.retry_for_hours)
    if isinstance(section, DicomDestination):
        return DicomTarget(destination=Destination(section.ae_title, section.host, section.port),
                           outputs=section.outputs, languages=section.languages, name=name,
                           calling_ae_title=calling_ae_title, pynetdicom_patches=pynetdicom_patches,
                           retry_for_seconds=retry_for,
                           tls=_tls(name, section, wanted=section.tls),
                           server_name=(section.server_name or None) if section.tls else None)
    if isinstance(section, DicomWebDestination):
        return DicomWebTarget(base_url=section.url, auth=_http_auth(name, section),
                              tls=_tls(name, section, wanted=_tls_configured(section)),
                              timeout_seconds=section.timeout_seconds, outputs=section.outputs,
                              languages=section.languages, name=name, retry_for_seconds=retry_for)
    if isinstance(section, FhirEndpointSettings):
        return FhirTarget(
            url=section.url,
            auth=_fhir_auth(name, section),
            timeout_seconds=section.timeout_seconds,
            primary_language=section.primary_language,
            patient_identifier_system=section.patient_identifier_system or None,
            tls=_tls(name, section, wanted=_tls_configured(section)),
            name=name,
            outputs=section.outputs,
            languages=section.languages,
            retry_for_seconds=retry_for,
        )
    if isinstance(section, Hl7Destination):
        return Hl7Target(
            host=section.host,
            port=section.port,
            tls=_tls(name, section, wanted=section.tls),
            sending_facility=section.sending_facility or None,
            receiving_application=section.receiving_application or None,
            receiving_facility=section.receiving_facility or None,
            processing_id=ProcessingId(section.processing_id),
            ack_timeout_seconds=section.ack_timeout_seconds,
            connect_timeout_seconds=section.connect_timeout_seconds,
            outputs=section.outputs,
            languages=section.languages,
            name=name,
            retry_for_seconds=retry_for,
        )
    raise SettingsError(f"destinations.{name}: type {section.type!r} has no target builder")


def retry_policy(settings: DeliverySettings) -> RetryPolicy:
    """The retry policy of ``[delivery]``."""
    return RetryPolicy(
        retry_for_seconds=settings.retry_for_hours * 3600.0,
        base_seconds=settings.backoff_base_seconds,
        cap_seconds=settings.backoff_cap_seconds,
    )


def build_context(
    settings: Settings, *, enqueue: Enqueuer, engine: Engine | None = None
) -> PipelineContext:
    """A pipeline context for this process (database engine, unless given, and models created
    here)."""
    from exporters import set_memoised_iod_lookups

    set_memoised_iod_lookups(settings.exporters.memoise_highdicom_iod_lookups)
    start_audit_trail(settings)  # deliveries are audited (IHE ATNA)
    engine = engine or database_engine(settings)
    models: dict[str, LoadedModel] = {}
    lock = threading.Lock()
    cache_dir = Path(settings.workers.outputs_root).parent / "engines"

    def get_model(name: str) -> LoadedModel:
        with lock:
            if name not in models:
                models[name] = load_model(name, settings.models[name], cache_dir=cache_dir)
            return models[name]

    return PipelineContext(
        sessions=make_session_factory(engine),
        storage_root=Path(settings.storage.root),
        outputs_root=Path(settings.workers.outputs_root),
        routes=tuple(to_route(r) for r in settings.routes),
        models=get_model,
        enqueue=enqueue,
        destinations={
            name: build_destination(
                name,
                section,
                calling_ae_title=settings.node.ae_title,
                pynetdicom_patches=settings.node.pynetdicom_patches,
            )
            for name, section in settings.destinations.items()
        },
        retry_policy=retry_policy(settings.delivery),
        scu_ae_title=settings.node.ae_title,
        scu_pynetdicom_patches=settings.node.pynetdicom_patches,
        max_task_starts=settings.workers.max_task_starts,
        task_time_limit_seconds=settings.workers.task_time_limit_seconds,
        requeue_after_seconds=settings.workers.requeue_after_seconds,
        lease_seconds=settings.workers.lease_seconds,
    )


def configure_celery(settings: Settings) -> Celery:
    """Configure the Celery app for this process (node or worker)."""
    from worklist import tasks

    broker = settings.workers.broker_url
    sqlite_file = sqlite_broker_path(broker)
    if sqlite_file is not None:
        create_private_file(sqlite_file)  # 0600 before SQLite opens it, as the index
    return tasks.configure(
        broker_url=broker,
        broker_use_ssl=broker_tls_options(settings.workers),
        context_factory=lambda: build_context(settings, enqueue=tasks.CeleryEnqueuer()),
        task_time_limit_seconds=settings.workers.task_time_limit_seconds,
        visibility_timeout_seconds=settings.workers.visibility_timeout_seconds,
    )


def broker_tls_options(workers: WorkerSettings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for a ``rediss://`` or ``amqps://`` broker (None for any
    other): the server's certificate and host name always checked, against
    ``broker_ca_bundle`` or the system's CAs, and the client certificate of mutual TLS.

    kombu left alone would connect to ``rediss://`` without checking the certificate.

    Raises
    ------
    SettingsError
        A TLS file that does not exist, or a client key its group or others may read.
    """
    url = workers.broker_url
    if not url.startswith(BROKER_TLS_SCHEMES):
        return None
    files: dict[str, str | None] = {}
    for setting in ("broker_ca_bundle", "broker_client_cert", "broker_client_key"):
        value = getattr(workers, setting)
        if value and not Path(value).is_file():
            raise SettingsError(f"workers.{setting}: {value!r} is not a readable file")
        files[setting] = value or None
    if files["broker_client_key"]:
        check_private_file(files["broker_client_key"], setting="workers.broker_client_key",
                           what="the broker TLS client key")
    if url.startswith("rediss://"):  # redis-py's SSLConnection arguments
        return {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_check_hostname": True,
            "ssl_ca_certs": files["broker_ca_bundle"],
            "ssl_certfile": files["broker_client_cert"],
            "ssl_keyfile": files["broker_client_key"],
        }
    return {  # py-amqp's SSLTransport arguments; a server_hostname turns the host name check on
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": files["broker_ca_bundle"],
        "certfile": files["broker_client_cert"],
        "keyfile": files["broker_client_key"],
        "server_hostname": urlsplit(url).hostname,
    }
