"""Building the worklist's pipeline context and Celery app from settings."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from dicom_node.scu import Destination
from radground.database import database_engine
from radground.settings import ModelSettings, RouteSettings, Settings, SettingsError
from worklist.context import DicomTarget, Enqueuer, FhirTarget, LoadedModel, PipelineContext
from worklist.db import make_session_factory
from worklist.embedded_broker import sqlite_broker_path
from worklist.fhir_delivery import FhirAuth
from worklist.routing import Route

__all__ = ["build_context", "configure_celery", "load_model", "to_route"]

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
    )


def load_model(name: str, settings: ModelSettings, *, cache_dir: Path) -> LoadedModel:
    """Load one model in this process, with a micro-batcher in front of it."""
    from engine.batching import MicroBatcher

    if settings.backend == "onnx":
        from engine.backends.onnxruntime_backend import OnnxDetector

        model = OnnxDetector(settings.path or None, max_batch_size=settings.max_batch_size)
    elif settings.backend == "tensorrt":
        from engine.backends.tensorrt_backend import TensorRTDetector

        model = TensorRTDetector(settings.path, cache_dir=cache_dir, max_batch_size=settings.max_batch_size)
    else:
        from engine.backends.hf_backend import HFGroundingVLM

        model = HFGroundingVLM(settings.path)
    batcher = MicroBatcher(model, max_batch_size=settings.max_batch_size, max_wait_ms=settings.batch_wait_ms)
    logger.info("Model %s loaded (%s %s) in process %d", name, model.info.name, model.info.version, os.getpid())
    return LoadedModel(model=model, generate=batcher.generate)


def _fhir_auth(kind: str, *, token_env: str, username: str, password_env: str) -> FhirAuth:
    if kind == "bearer":
        token = os.environ.get(token_env, "")
        if not token:
            raise SettingsError(f"fhir_endpoints: auth 'bearer' reads the token from ${token_env}, which is empty or unset")
        return FhirAuth.bearer(token)
    if kind == "basic":
        password = os.environ.get(password_env, "")
        if not password:
            raise SettingsError(f"fhir_endpoints: auth 'basic' reads the password from ${password_env}, which is empty or unset")
        return FhirAuth.basic(username, password)
    return FhirAuth.none()


def build_context(settings: Settings, *, enqueue: Enqueuer) -> PipelineContext:
    """A pipeline context for this process (database engine and models created here)."""
    from exporters import set_memoised_iod_lookups

    set_memoised_iod_lookups(settings.exporters.memoise_highdicom_iod_lookups)
    engine = database_engine(settings)
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
        dicom_targets={
            name: DicomTarget(
                destination=Destination(d.ae_title, d.host, d.port),
                outputs=d.outputs,
                languages=d.languages,
                max_attempts=d.max_attempts,
            )
            for name, d in settings.destinations.items()
        },
        fhir_targets={
            name: FhirTarget(
                url=f.url,
                auth=_fhir_auth(f.auth, token_env=f.token_env, username=f.username, password_env=f.password_env),
                timeout_seconds=f.timeout_seconds,
                max_attempts=f.max_attempts,
                primary_language=f.primary_language,
                patient_identifier_system=f.patient_identifier_system or None,
            )
            for name, f in settings.fhir_endpoints.items()
        },
        scu_ae_title=settings.node.ae_title,
        scu_pynetdicom_patches=settings.node.pynetdicom_patches,
        max_task_starts=settings.workers.max_task_starts,
        task_time_limit_seconds=settings.workers.task_time_limit_seconds,
        requeue_after_seconds=settings.workers.requeue_after_seconds,
        lease_seconds=settings.workers.lease_seconds,
    )


def configure_celery(settings: Settings):
    """Configure the Celery app for this process (node or worker)."""
    from worklist import tasks

    broker = settings.workers.broker_url
    sqlite_file = sqlite_broker_path(broker)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    return tasks.configure(
        broker_url=broker,
        context_factory=lambda: build_context(settings, enqueue=tasks.CeleryEnqueuer()),
        task_time_limit_seconds=settings.workers.task_time_limit_seconds,
        visibility_timeout_seconds=settings.workers.visibility_timeout_seconds,
    )
