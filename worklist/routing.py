"""Routing: which route (model, task, images, destinations) a ready study takes.

Routes are tried in order; the first whose filters all match at least one of
the study's instances wins. An empty filter matches anything. RadGround's own
outputs (:mod:`worklist.own_outputs`) and instances of series we produced never
match, so results the PACS routes back are never processed again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.jobs_models import Artifact
from worklist.models import Instance, Series

__all__ = ["InstanceFacts", "Route", "choose_route", "study_instance_facts"]


@dataclass(frozen=True)
class Route:
    """A routing rule (built by the application from its settings)."""

    name: str
    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()
    sop_classes: frozenset[str] = frozenset()
    calling_ae_titles: frozenset[str] = frozenset()
    series_description: str = ""
    model: str = "default"
    task: str = "detection"
    languages: tuple[str, ...] = ("en", "zh-CN")
    targets: tuple[str, ...] = ()
    regional_cot: bool = False
    view_positions: frozenset[str] = frozenset()
    volume_strategy: Literal["central", "evenly_spaced", "all"] = "central"
    slice_count: int = 1
    destinations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        re.compile(self.series_description)
        if not self.languages:
            raise ValueError(f"route {self.name!r} needs at least one language")

    def matches(self, facts: InstanceFacts) -> bool:
        return (
            (not self.modalities or facts.modality.upper() in self.modalities)
            and (not self.body_parts or facts.body_part.upper() in self.body_parts)
            and (not self.sop_classes or facts.sop_class_uid in self.sop_classes)
            and (not self.calling_ae_titles or facts.calling_ae_title.strip() in self.calling_ae_titles)
            and (not self.series_description or re.search(self.series_description, facts.series_description) is not None)
        )


@dataclass(frozen=True)
class InstanceFacts:
    """What routing knows of one indexed instance."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    modality: str
    body_part: str
    series_description: str
    calling_ae_title: str
    path: str


def study_instance_facts(session: Session, study_pk: int) -> list[InstanceFacts]:
    """The study's instances that may be processed: not our own outputs."""
    our_series = select(Artifact.series_instance_uid).where(Artifact.series_instance_uid.is_not(None))
    rows = session.execute(
        select(Instance, Series)
        .join(Series, Series.id == Instance.series_pk)
        .where(
            Series.study_pk == study_pk,
            Instance.is_own_output.is_(False),
            Series.series_instance_uid.not_in(our_series),
        )
        .order_by(Series.series_number, Instance.instance_number, Instance.id)
    ).all()
    return [
        InstanceFacts(
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            series_instance_uid=series.series_instance_uid,
            modality=series.modality,
            body_part=series.body_part_examined,
            series_description=series.series_description,
            calling_ae_title=instance.calling_ae_title,
            path=instance.path,
        )
        for instance, series in rows
    ]


def choose_route(routes: tuple[Route, ...], facts: list[InstanceFacts]) -> Route | None:
    """The first route matching any of ``facts``, or ``None``."""
    for route in routes:
        if any(route.matches(f) for f in facts):
            return route
    return None
