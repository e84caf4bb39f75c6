"""Routing: which route (model, task, images, destinations) a ready study takes.

Routes are tried in order; the first whose filters all match at least one of
the study's instances wins. An empty filter matches anything. RadGround's own
outputs (:mod:`worklist.own_outputs`) and instances of series we produced never
match, so results the PACS routes back are never processed again.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.jobs_models import Artifact
from worklist.models import Instance, Series

if TYPE_CHECKING:
    from engine.pixels import ImageSelection

__all__ = [
    "InstanceFacts",
    "Mismatch",
    "ReviewPolicy",
    "Route",
    "RouteVerdict",
    "choose_route",
    "explain_routes",
    "no_route_reason",
    "study_instance_facts",
]


@dataclass(frozen=True)
class Mismatch:
    """One route condition an instance does not meet: what it has, what the route wants.

    ``actual`` is empty for a value that would carry free text (Series
    Description), so the explanation never quotes header text.
    """

    condition: str
    actual: str
    wanted: str

    def __str__(self) -> str:
        if self.condition == "series description":
            return f"series description does not match /{self.wanted}/"
        return f"{self.condition} is {self.actual or '(empty)'}, wanted {self.wanted}"


class ReviewPolicy(enum.StrEnum):
    """What a route holds back until a radiologist signs its job's review (:mod:`worklist.review`).
    """

    #: Nothing: outputs go out UNVERIFIED / preliminary (a radiologist may still review later;
    #: the sign-off then amends them).
    NONE = "none"
    #: The PACS gets the unverified SR and GSPS at once; the EHR (FHIR, HL7) nothing until
    #: sign-off.
    BEFORE_EHR = "before_ehr"
    #: Nothing leaves the node until sign-off.
    BEFORE_ALL = "before_all"


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
    review: ReviewPolicy = ReviewPolicy.NONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "review", ReviewPolicy(self.review))
        re.compile(self.series_description)
        if not self.languages:
            raise ValueError(f"route {self.name!r} needs at least one language")

    def mismatches(self, facts: InstanceFacts) -> tuple[Mismatch, ...]:
        """The conditions ``facts`` fails, in the order they are listed in the settings."""
        found = []
        for condition, wanted, actual in (
            ("modality", self.modalities, facts.modality.upper()),
            ("body part", self.body_parts, facts.body_part.upper()),
            ("SOP class", self.sop_classes, facts.sop_class_uid),
            ("calling AE title", self.calling_ae_titles, facts.calling_ae_title.strip()),
        ):
            if wanted and actual not in wanted:
                found.append(Mismatch(condition, actual, " or ".join(sorted(wanted))))
        if (
            self.series_description
            and re.search(self.series_description, facts.series_description) is None
        ):
            found.append(Mismatch("series description", "", self.series_description))
        return tuple(found)

    def matches(self, facts: InstanceFacts) -> bool:
        return not self.mismatches(facts)

    def image_selection(self) -> ImageSelection:
        """Which images and frames of a matching study its jobs analyse."""
        from engine.pixels import ImageSelection, VolumeStrategy  # numpy and pydicom: not at import

        return ImageSelection(
            modalities=self.modalities,
            body_parts=self.body_parts,
            view_positions=self.view_positions,
            sop_class_uids=self.sop_classes,
            series_description=self.series_description or None,
            volume_strategy=VolumeStrategy(self.volume_strategy),
            slice_count=self.slice_count,
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
    our_series = select(Artifact.series_instance_uid).where(
        Artifact.series_instance_uid.is_not(None)
    )
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


@dataclass(frozen=True)
class RouteVerdict:
    """How one route judges a study's instances.

    ``matched`` counts the instances that meet every condition; when it is 0,
    ``mismatches`` are those of the instance that came closest (fewest failed
    conditions; the first such instance).
    """

    route: Route
    matched: int
    mismatches: tuple[Mismatch, ...]


def explain_routes(routes: tuple[Route, ...], facts: list[InstanceFacts]) -> list[RouteVerdict]:
    """Every route's verdict on ``facts``, in routing order (the first matching one wins)."""
    verdicts = []
    for route in routes:
        per_instance = [route.mismatches(f) for f in facts]
        matched = sum(1 for m in per_instance if not m)
        closest = () if matched or not per_instance else min(per_instance, key=len)
        verdicts.append(RouteVerdict(route, matched, closest))
    return verdicts


def no_route_reason(verdicts: list[RouteVerdict]) -> str:
    """Why no route matched, in a word per route (the failed conditions' names),
    e.g. ``"modality"`` or ``"cxr: modality, body part; ct: SOP class"``;
    ``"no routes"`` when none is configured. No header values: it is stored and shown."""
    if not verdicts:
        return "no routes"
    words = [", ".join(m.condition for m in v.mismatches) or "no instances" for v in verdicts]
    if len(verdicts) == 1:
        return words[0]
    return "; ".join(f"{v.route.name}: {w}" for v, w in zip(verdicts, words))
