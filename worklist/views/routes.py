"""A dry run of the configured routes against a study in the index."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worklist.models import Instance, Series, Study
from worklist.routing import Mismatch, Route, explain_routes, study_instance_facts

__all__ = ["RouteDryRun", "RouteJudgement", "dry_run_routes"]


@dataclass(frozen=True)
class RouteJudgement:
    """How one route judges the study (routes are tried in order; the first match wins)."""

    route: str
    #: Instances that meet every condition of the route.
    matched: int
    #: Whether the study would take this route (it matches and no earlier route does).
    chosen: bool
    #: When it matches none: the failed conditions of the instance that came closest.
    mismatches: tuple[Mismatch, ...]


@dataclass(frozen=True)
class RouteDryRun:
    """Which route a study would take now, and why each other route does not."""

    study_instance_uid: str
    #: Instances routing looks at (RadGround's own outputs left out).
    instances: int
    #: RadGround's own outputs in the study (never processed).
    own_outputs: int
    routes: tuple[RouteJudgement, ...]
    #: The route the study would take, ``None`` when none matches.
    chosen: str | None


def dry_run_routes(
    session: Session, study_instance_uid: str, routes: tuple[Route, ...]
) -> RouteDryRun | None:
    """Judge the study's indexed instances against ``routes`` as routing would now
    (:func:`worklist.routing.explain_routes`); ``None`` when the study is not in the index."""
    study_pk = session.scalar(
        select(Study.id).where(Study.study_instance_uid == study_instance_uid)
    )
    if study_pk is None:
        return None
    facts = study_instance_facts(session, study_pk)
    total = session.scalar(
        select(func.count(Instance.id)).join(Series).where(Series.study_pk == study_pk)
    ) or 0
    verdicts = explain_routes(routes, facts)
    chosen = next((v.route.name for v in verdicts if v.matched), None)
    return RouteDryRun(
        study_instance_uid=study_instance_uid,
        instances=len(facts),
        own_outputs=total - len(facts),
        routes=tuple(
            RouteJudgement(v.route.name, v.matched, v.route.name == chosen, v.mismatches)
            for v in verdicts
        ),
        chosen=chosen,
    )
