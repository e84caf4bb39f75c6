"""``/routes``: the configured routing rules (a study's dry run is ``/studies/{uid}/routes``)."""

from __future__ import annotations

from fastapi import APIRouter

from web.api.common import PROBLEMS, Context
from web.api.schemas import ConfiguredRoute
from web.auth import Reader

__all__ = ["router"]

router = APIRouter(prefix="/routes", tags=["routes"], responses=PROBLEMS)


@router.get("", response_model=list[ConfiguredRoute], summary="The routing rules")
def routes(principal: Reader, context: Context) -> list[ConfiguredRoute]:
    """Every route in routing order (the first whose conditions a study meets wins)."""
    return [
        ConfiguredRoute(
            name=r.name,
            modalities=sorted(r.modalities),
            body_parts=sorted(r.body_parts),
            sop_classes=sorted(r.sop_classes),
            calling_ae_titles=sorted(r.calling_ae_titles),
            view_positions=sorted(r.view_positions),
            series_description=r.series_description,
            model=r.model,
            task=r.task,
            languages=list(r.languages),
            targets=list(r.targets),
            destinations=list(r.destinations),
        )
        for r in context.pipeline.routes
    ]
