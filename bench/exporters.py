"""Benchmark: all outputs of one study, built the straightforward way and the project's way.

The study is the exporter tests' realistic one (``tests/unit/exporters/conftest.py``):
two DX chest images (two series) and a 20-finding report in English and
Simplified Chinese. Its outputs: one DICOM SR per language, one GSPS per
source series and language, and the FHIR R4 transaction Bundle (as JSON).

Straightforward — highdicom used as its documentation shows, everything
rebuilt per language:

* SR: :func:`exporters.sr.build_sr` with ``assemble=False`` per language:
  template objects built from fresh content items, then highdicom's
  ``Comprehensive3DSR`` constructor (deep copy, re-parse and evidence search
  of the whole content tree);
* GSPS: :func:`exporters.gsps.build_presentation_states` per language, each
  planning the overlays again;
* FHIR: ``build_fhir_bundle`` + ``Bundle.model_dump_json``.

Project's way:

* SR: :func:`exporters.sr.export_sr`: regions planned and language-independent
  content items built once and shared by both languages; the document is
  assembled around the tree without re-parsing it
  (:class:`exporters.sr_document.AssembledComprehensive3DSR`);
* GSPS: one overlay plan shared by both languages;
* FHIR: ``build_fhir_bundle`` + ``bundle_json``.

Before timing, the outputs of the two ways are compared (DICOM: written bytes
less the wall-clock creation stamps; FHIR: the JSON text) and the project's
DICOM outputs are checked with ``dciodvfy`` (no Error lines), so the speed-up
is for identical, valid output. The two ways then run alternately; prints the
median milliseconds of each way (per stage and in total), wall-clock and CPU
time of this process (on a machine shared with other work the CPU time varies
less), and their ratio (goal: project <= 250 ms, >= 3x faster).

With ``--highdicom-cache`` it instead times the project's way, and the exporter
calls as ``worklist/pipeline.py`` makes them (presentation states per language,
no shared overlay plan), each with and without the memoised highdicom IOD
look-ups (``exporters/_highdicom_cache.py``, setting
``exporters.memoise_highdicom_iod_lookups``), alternately in one run; checks
that both give identical bytes, and prints the ratios (the patch is kept only
while it is >= 1.2x; see ``docs/third-party-patches.md``).

Run it::

    .venv/bin/python bench/exporters.py [--repeat 15] [--highdicom-cache]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporters.sr import build_sr, export_sr
from tests.exporters_validators import comparable_bytes, dciodvfy_errors

#: FHIR identifier system for the test hospital's Patient IDs (its issuer is plain text).
PATIENT_ID_SYSTEM = "https://hospital.example.org/fhir/patient-id"


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "exporter_fixtures", REPO / "tests" / "unit" / "exporters" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sources = [
        module._round_trip(module.make_source_image(i, pixels=module._pixels(i))) for i in range(2)
    ]
    return module.make_grounded_report(), sources


def _optional_builders():
    """The GSPS and FHIR builders, where they exist in this tree."""
    builders = {}
    try:
        from exporters.pr import build_presentation_states
        from exporters.regions import plan_regions

        builders["gsps"] = (build_presentation_states, plan_regions)
    except ImportError:
        pass
    try:
        from exporters.fhir.bundle import build_fhir_bundle, bundle_json
        from exporters.fhir.inputs import output_series_from_datasets

        builders["fhir"] = (build_fhir_bundle, bundle_json, output_series_from_datasets)
    except ImportError:
        pass
    return builders


Stage = tuple[str, Callable[[dict], object]]


def make_ways(report, sources) -> tuple[list[Stage], list[Stage]]:
    """The stages (name, function of the outputs so far) of each way."""
    builders = _optional_builders()
    languages = report.languages

    def sr_straightforward(out: dict) -> list:
        return [
            build_sr(
                report, sources, language=lang, revision=1, assemble=False, series_number=9100 + i
            )
            for i, lang in enumerate(languages)
        ]

    def sr_project(out: dict) -> list:
        result = export_sr(report, sources, revision=1, languages=languages)
        return [result.documents[lang] for lang in languages]

    straightforward: list[Stage] = [("sr", sr_straightforward)]
    project: list[Stage] = [("sr", sr_project)]
    if "gsps" in builders:
        build_ps, plan_regions = builders["gsps"]

        def gsps_straightforward(out: dict) -> list:
            # without the project's memoised highdicom IOD look-ups (__wrapped__)
            return [
                ps
                for i, lang in enumerate(languages)
                for ps in build_ps.__wrapped__(
                    report, sources, language=lang, revision=1, series_number=9902 + i
                )
            ]

        def gsps_project(out: dict) -> list:
            plan = plan_regions(report, sources)
            return [
                ps
                for i, lang in enumerate(languages)
                for ps in build_ps(
                    report, sources, language=lang, revision=1, series_number=9902 + i, plan=plan
                )
            ]

        straightforward.append(("gsps", gsps_straightforward))
        project.append(("gsps", gsps_project))
    if "fhir" in builders:
        build_bundle, bundle_json, series_of = builders["fhir"]

        def bundle(out: dict):
            return build_bundle(
                report,
                sources,
                revision=1,
                patient_identifier_system=PATIENT_ID_SYSTEM,
                output_series=series_of([*out["sr"], *out.get("gsps", [])]),
            )

        straightforward.append(
            ("fhir", lambda out: bundle(out).model_dump_json(exclude_comments=True))
        )
        project.append(("fhir", lambda out: bundle_json(bundle(out))))
    return straightforward, project


def run(way: list[Stage]) -> tuple[dict, dict[str, float], dict[str, float]]:
    """Run the stages of one way: outputs, wall-clock and CPU milliseconds per stage."""
    out: dict = {}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for name, stage in way:
        start, start_cpu = time.perf_counter(), time.process_time()
        out[name] = stage(out)
        wall[name] = (time.perf_counter() - start) * 1000.0
        cpu[name] = (time.process_time() - start_cpu) * 1000.0
    return out, wall, cpu


def check_identical_and_valid(a: dict, b: dict) -> list[str]:
    """Problems found comparing the two ways' outputs and validating the project's."""
    problems = []
    if a.keys() != b.keys():
        return [f"different outputs: {sorted(a)} vs {sorted(b)}"]
    for kind, ours in a.items():
        theirs = b[kind]
        if kind == "fhir":
            if ours != theirs:
                problems.append("FHIR JSON differs")
            continue
        if len(ours) != len(theirs):
            problems.append(f"{kind}: {len(ours)} vs {len(theirs)} objects")
            continue
        for n, (x, y) in enumerate(zip(ours, theirs, strict=True)):
            if comparable_bytes(x) != comparable_bytes(y):
                problems.append(f"{kind}[{n}] differs")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sr", "gsps"):
            for n, ds in enumerate(b.get(kind, [])):
                path = Path(tmp) / f"{kind}{n}.dcm"
                ds.save_as(path, enforce_file_format=True)
                errors = dciodvfy_errors(path)
                if errors:
                    problems.append(f"{kind}[{n}]: dciodvfy: {errors[:3]}")
    return problems


def pipeline_way(report, sources) -> list[Stage]:
    """The exporter calls as ``worklist/pipeline.py`` makes them: ``export_sr``, then
    ``build_presentation_states`` per language (no shared overlay plan), then the Bundle."""
    from exporters.fhir.bundle import build_fhir_bundle, bundle_json
    from exporters.fhir.inputs import output_series_from_datasets
    from exporters.pr import build_presentation_states

    languages = report.languages

    def sr(out: dict) -> list:
        return list(export_sr(report, sources, revision=1, languages=languages).documents.values())

    def gsps(out: dict) -> list:
        return [
            ps for lang in languages
            for ps in build_presentation_states(report, sources, language=lang, revision=1)
        ]

    def fhir(out: dict) -> str:
        return bundle_json(
            build_fhir_bundle(
                report, sources, revision=1, patient_identifier_system=PATIENT_ID_SYSTEM,
                output_series=output_series_from_datasets([*out["sr"], *out["gsps"]]),
            )
        )

    return [("sr", sr), ("gsps", gsps), ("fhir", fhir)]


def compare_highdicom_cache(ways: dict[str, list[Stage]], *, repeat: int) -> int:
    """Time each way with the memoised highdicom IOD look-ups on and off, alternately."""
    from exporters._highdicom_cache import set_memoised_iod_lookups

    def run_with(
        stages: list[Stage], memoised: bool
    ) -> tuple[dict, dict[str, float], dict[str, float]]:
        set_memoised_iod_lookups(memoised)
        try:
            return run(stages)
        finally:
            set_memoised_iod_lookups(True)

    for name, stages in ways.items():
        (a, _, _), (b, _, _) = run_with(stages, False), run_with(stages, True)
        problems = check_identical_and_valid(a, b)
        if problems:
            print(f"{name}: NOT IDENTICAL / NOT VALID:", *problems, sep="\n  ")
            return 1
    print("outputs identical with and without the memoised look-ups")
    timings: dict[tuple[str, str], dict[str, list[dict[str, float]]]] = {
        (name, how): {"wall": [], "cpu": []} for name in ways for how in ("stock", "memoised")
    }
    for _ in range(repeat):
        for name, stages in ways.items():
            for how, memoised in (("stock", False), ("memoised", True)):
                _, wall, cpu = run_with(stages, memoised)
                timings[(name, how)]["wall"].append(wall)
                timings[(name, how)]["cpu"].append(cpu)
    for clock in ("wall", "cpu"):
        for name in ways:
            totals = {}
            for how in ("stock", "memoised"):
                runs = timings[(name, how)][clock]
                totals[how] = statistics.median(sum(r.values()) for r in runs)
                parts = ", ".join(
                    f"{stage} {statistics.median(r[stage] for r in runs):.1f}" for stage in runs[0]
                )
                print(f"{clock:4s} {name:9s} {how:9s} {totals[how]:8.1f} ms median   ({parts} ms)")
            ratio = totals["stock"] / totals["memoised"]
            print(
                f"{clock:4s} {name:9s} memoised highdicom IOD look-ups: {ratio:.2f}x "
                "(kept while >= 1.2x)"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=21, help="timed runs per way (medians are printed)"
    )
    parser.add_argument(
        "--highdicom-cache",
        action="store_true",
        help="time the project's way with and without the memoised highdicom IOD look-ups",
    )
    args = parser.parse_args(argv)
    report, sources = _fixtures()
    straightforward, project = make_ways(report, sources)
    if args.highdicom_cache:
        return compare_highdicom_cache(
            {"project": project, "pipeline": pipeline_way(report, sources)}, repeat=args.repeat
        )
    (a, _, _), (b, _, _) = run(straightforward), run(project)  # also warms up imports and caches
    problems = check_identical_and_valid(a, b)
    counts = ", ".join(f"{len(v) if kind != 'fhir' else 1} {kind.upper()}" for kind, v in b.items())
    print(
        f"study: {len(report.findings)} findings, {len(sources)} images, "
        f"languages {', '.join(report.languages)}; outputs: {counts}"
    )
    if problems:
        print("NOT IDENTICAL / NOT VALID:", *problems, sep="\n  ")
        return 1
    print(
        "outputs identical (DICOM bytes less creation stamps, FHIR JSON); project's "
        "DICOM dciodvfy-clean"
    )
    # alternate the two ways run by run, so that load from other processes hits both alike;
    # CPU time (this process only) is printed too: on a shared machine it varies less
    timings: dict[str, dict[str, list[dict[str, float]]]] = {
        "straightforward": {"wall": [], "cpu": []},
        "project": {"wall": [], "cpu": []},
    }
    for _ in range(args.repeat):
        for way, stages in (("straightforward", straightforward), ("project", project)):
            _, wall, cpu = run(stages)
            timings[way]["wall"].append(wall)
            timings[way]["cpu"].append(cpu)
    for clock in ("wall", "cpu"):
        totals = {}
        for way, by_clock in timings.items():
            runs = by_clock[clock]
            totals[way] = statistics.median(sum(r.values()) for r in runs)
            parts = ", ".join(
                f"{name} {statistics.median(r[name] for r in runs):.1f}" for name in runs[0]
            )
            print(f"{clock:4s} {way:16s} {totals[way]:8.1f} ms median   ({parts} ms)")
        ratio = totals["straightforward"] / totals["project"]
        print(
            f"{clock:4s} project <= 250 ms: {'met' if totals['project'] <= 250 else 'NOT met'}; "
            f"ratio {ratio:.2f}x (>= 3x: {'met' if ratio >= 3 else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
