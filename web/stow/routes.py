"""STOW-RS (PS3.18 §10.5): ``POST {base}/dicomweb/studies[/{study}]``, the node's HTTP ingest.

The request body (``multipart/related; type="application/dicom"``, one DICOM
Part 10 file per part) is read as it arrives (:mod:`web.stow.multipart`), each
part's data set spooled to a temporary file on the storage volume
(:mod:`web.stow.spool`), so a request of any size never sits in memory. Only
when the whole body has arrived and is well-formed are the instances stored,
one at a time, each through the node's one ingest path
(:class:`dicom_node.ingest.InstanceIngest`, the same as C-STORE's: the same
checks, storage, durability and study index). A malformed, oversized or
wrongly typed request (400, 413, 415) therefore stores nothing.

Each part's File Meta Information names its SOP Class, SOP Instance and
Transfer Syntax, as a C-STORE request and its presentation context do; the
instance's outcome is the C-STORE status the ingest path gives it, reported
in the response (:mod:`web.stow.response`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from dicom_node.conformance import StoreStatus
from dicom_node.ingest import InstanceIngest
from dicom_node.uids import is_valid_uid
from web.auth import Ingester, client_address
from web.context import WebContext, web_context
from web.problems import Problem
from web.stow.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)
from web.stow.response import InstanceOutcome, http_status, store_instances_response
from web.stow.spool import SpooledPart
from worklist.atna.hooks import instances_stored_over_http

__all__ = ["DICOM_JSON", "router"]

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_DICOM = "application/dicom"
#: The Calling AE Title recorded for STOW-RS instances of a principal without a name.
STOW_CALLING_AE_TITLE = "STOW-RS"

router = APIRouter(tags=["DICOMweb"])

Context = Annotated[WebContext, Depends(web_context)]
StudyUID = Annotated[str, Path(description="Study Instance UID the instances must belong to")]

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some instances stored, others failed", "content": {DICOM_JSON: {}}},
    409: {"description": "no instance stored", "content": {DICOM_JSON: {}}},
    400: {"description": "malformed multipart body"},
    413: {"description": "request larger than the node accepts"},
    415: {"description": "not multipart/related of application/dicom parts"},
}


@router.post(
    "/dicomweb/studies", responses=_RESPONSES, summary="Store instances (STOW-RS)",
    response_class=Response,
)
async def store_instances(request: Request, principal: Ingester, context: Context) -> Response:
    """Store DICOM instances of any studies (PS3.18 §10.5)."""
    return await _store(request, principal.name, context, study_instance_uid=None)


@router.post(
    "/dicomweb/studies/{study}", responses=_RESPONSES,
    summary="Store instances of one study (STOW-RS)", response_class=Response,
)
async def store_study_instances(
    request: Request, principal: Ingester, context: Context, study: StudyUID
) -> Response:
    """Store DICOM instances of the study ``study``; instances of another study fail (0xA900)."""
    if not is_valid_uid(study):
        raise Problem(400, "the study is not a valid DICOM UID", kind="invalid-parameter",
                      parameter="study")
    return await _store(request, principal.name, context, study_instance_uid=study)


async def _store(
    request: Request, principal_name: str, context: Context, *, study_instance_uid: str | None
) -> Response:
    ingest = context.ingest
    if ingest is None:
        raise Problem(503, "this process does not ingest instances", kind="not-ingesting")
    boundary = _boundary(request.headers.get("content-type", ""))
    limit = context.stow_max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts = await _spool_parts(request, boundary, limit, ingest)
    try:
        outcomes = await run_in_threadpool(
            _ingest_parts, ingest, parts,
            calling_ae_title=(principal_name or STOW_CALLING_AE_TITLE)[:16],
            peer_host=client_address(request),
            study_instance_uid=study_instance_uid,
        )
    finally:
        for part in parts:
            part.close()
    await run_in_threadpool(  # IHE ATNA: DICOM Instances Transferred per study
        instances_stored_over_http, context.sessions,
        [(o.study_instance_uid or "", o.sop_class_uid or "") for o in outcomes if o.stored],
        user=principal_name, client_address=client_address(request),
    )
    studies = {o.study_instance_uid for o in outcomes if o.stored}
    study = study_instance_uid or (studies.pop() if len(studies) == 1 else None)
    study_url = f"{str(request.base_url).rstrip('/')}/dicomweb/studies/{study}" if study else None
    body = store_instances_response(outcomes, study_url=study_url)
    stored = sum(o.stored for o in outcomes)
    logger.info(
        "STOW-RS from %s: %d of %d instances stored", client_address(request), stored,
        len(outcomes),
    )
    return Response(
        content=_json(body.to_json()), status_code=http_status(outcomes), media_type=DICOM_JSON,
    )


def _json(dataset_json: str) -> bytes:
    return dataset_json.encode("utf-8")


def _boundary(content_type: str) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` body (415 otherwise)."""
    media_type, params = parse_content_type(content_type) if content_type else ("", {})
    if media_type != "multipart/related":
        raise Problem(415, 'STOW-RS takes multipart/related; type="application/dicom"',
                      kind="unsupported-media-type")
    root_type = parse_content_type(params["type"])[0] if "type" in params else _DICOM
    if root_type != _DICOM:
        raise Problem(415, f"parts of type {root_type!r} are not stored: only {_DICOM}",
                      kind="unsupported-media-type")
    boundary = params.get("boundary")
    if not boundary:
        raise Problem(400, "the multipart Content-Type has no boundary", kind="malformed-body")
    return boundary


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the request is larger than {limit} bytes (web.stow_max_request_mb)",
                   kind="request-too-large")


async def _spool_parts(
    request: Request, boundary: str, limit: int, ingest: InstanceIngest
) -> list[SpooledPart]:
    """Every part of the body spooled to disk; raises 400/413/415 (nothing kept) when the body
    is malformed, too large or has a part that is not ``application/dicom``."""
    try:
        reader = MultipartReader(boundary)
    except MultipartError as exc:
        raise Problem(400, str(exc), kind="malformed-body") from None
    parts: list[SpooledPart] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            for event in reader.feed(chunk):
                if isinstance(event, PartData):
                    parts[-1].write(event.data)
                elif isinstance(event, PartStart):
                    if event.content_type not in (None, _DICOM):
                        raise Problem(
                            415, f"part {len(parts) + 1} is {event.content_type!r}: only "
                            f"{_DICOM} parts are stored", kind="unsupported-media-type",
                        )
                    parts.append(SpooledPart(ingest.store.root))
                elif isinstance(event, PartEnd):
                    parts[-1].finish()
        reader.close()
        if not parts:
            raise MultipartError("the multipart body has no parts")
    except MultipartError as exc:
        _close(parts)
        logger.warning("Refused a STOW-RS request from %s: %s", client_address(request), exc)
        raise Problem(400, str(exc), kind="malformed-body") from None
    except BaseException:
        _close(parts)
        raise
    return parts


def _close(parts: Sequence[SpooledPart]) -> None:
    for part in parts:
        part.close()


def _ingest_parts(
    ingest: InstanceIngest,
    parts: Sequence[SpooledPart],
    *,
    calling_ae_title: str,
    peer_host: str,
    study_instance_uid: str | None,
) -> list[InstanceOutcome]:
    """Each spooled part through the one ingest path, in order (a worker thread)."""
    outcomes = []
    for part in parts:
        meta = part.meta
        if meta is None:
            logger.warning("Refused a STOW-RS part from %r: %s", calling_ae_title, part.error)
            outcomes.append(InstanceOutcome(
                None, None, StoreStatus.CANNOT_UNDERSTAND, part.error or "not a Part 10 file"
            ))
            continue
        with part.data_set() as data_set:
            result = ingest.ingest(
                data_set,
                sop_class_uid=meta.media_storage_sop_class_uid,
                sop_instance_uid=meta.media_storage_sop_instance_uid,
                transfer_syntax_uid=meta.transfer_syntax_uid,
                calling_ae_title=calling_ae_title,
                peer_host=peer_host,
                study_instance_uid=study_instance_uid,
            )
        part.close()
        outcomes.append(InstanceOutcome(
            meta.media_storage_sop_class_uid, meta.media_storage_sop_instance_uid, result.status,
            result.reason, result.study_instance_uid,
        ))
    return outcomes
