"""``radground model …``: the default model from the command line.

``info``, ``predict FILE.dcm [--lang en,zh-CN] [--png out.png]``, ``ask FILE.dcm --region
X1,Y1,X2,Y2 | --where FINDING`` (the region tasks), ``export-onnx``
(needs the ``train`` extra: torch) and ``build-trt`` (needs TensorRT, e.g. in
NVIDIA's container images). ``radground.cli`` registers this group.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported where used, so that the CLI starts quickly
    from pydicom import Dataset
    from rich.table import Table

    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.report import GroundedReport

__all__ = ["model"]

logger = logging.getLogger(__name__)


def _languages(value: str) -> tuple[str, ...]:
    from engine.report import SUPPORTED_LANGUAGES

    tags = tuple(t.strip() for t in value.split(",") if t.strip())
    unknown = [t for t in tags if t not in SUPPORTED_LANGUAGES]
    if not tags or unknown:
        raise click.BadParameter(
            f"languages must be a comma-separated list of {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return tags


def _detector(model_path: Path | None, providers: str, threshold: float | None) -> OnnxDetector:
    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.model import ModelError

    try:
        return OnnxDetector(
            model_path,
            providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
            score_threshold=threshold,
        )
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


_MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="ONNX file (default: the shipped model).",
)
_PROVIDERS_OPTION = click.option(
    "--providers",
    default="cpu",
    show_default=True,
    help="ONNX Runtime providers in order: cpu, cuda, tensorrt.",
)


def _thresholds_text(thresholds: dict[str, float]) -> str:
    values = set(thresholds.values())
    if len(values) == 1 and len(thresholds) > 1:
        return f"{values.pop():.2f} (every reported class)"
    return ", ".join(f"{label} {value:.2f}" for label, value in thresholds.items()) or "none"


def _share(hits: int, total: int) -> str:
    return f"{hits / total:.0%} ({hits}/{total})" if total else "– (0/0)"


def _operating_points_table(detector: OnnxDetector) -> Table | None:
    """Per class: reported or not, threshold, held-out precision and recall (from the metadata)."""
    from rich.table import Table

    points = detector.operating_points
    if points is None:
        return None
    table = Table(
        "class",
        "reported",
        "threshold",
        "precision",
        "recall",
        title=f"What the model reports (held out: {points.heldout or 'patients'})",
        caption=(
            "precision: right / reported boxes, recall: found / drawn boxes (right: "
            "IoU >= 0.5); a class is "
            f"reported only where >= {points.min_precision:.0%} of its boxes are "
            "right. Not reported classes: counts at the threshold tried."
        ),
    )
    for point in points.classes:
        table.add_row(
            point.label,
            "yes" if point.reported else "no",
            f"{point.threshold:.2f}"
            if point.threshold is not None
            else f"({point.tuning_threshold:.2f})",
            _share(point.hits, point.predictions),
            _share(point.hits, point.boxes),
        )
    return table


@click.group()
def model() -> None:
    """The default chest-radiograph detector (ONNX)."""


@model.command()
@_MODEL_OPTION
@_PROVIDERS_OPTION
def info(model_path: Path | None, providers: str) -> None:
    """Show the model's name, version, device UID, classes and runtime."""
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from engine.default_model import CLASSES
    from engine.model import ModelError

    detector = _detector(model_path, providers, None)
    try:
        thresholds = detector.class_score_thresholds
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(show_header=False)
    for key, value in (
        ("name", detector.info.name),
        ("version", detector.info.version),
        ("manufacturer", detector.info.manufacturer),
        ("device UID", detector.info.device_uid),
        ("file", str(detector.path)),
        ("size", f"{detector.path.stat().st_size / 1e6:.1f} MB"),
        ("sha256", detector.sha256),
        (
            "input",
            f"{detector.input_size[0]} x {detector.input_size[1]} ({detector.resize_mode.value})",
        ),
        ("classes", ", ".join(CLASSES)),
        ("reported classes", ", ".join(detector.reported_classes) or "none"),
        (
            "not reported by this model",
            ", ".join(c for c in CLASSES if c not in detector.reported_classes) or "none",
        ),
        ("score thresholds", _thresholds_text(thresholds)),
        ("made for", detector.applicability.description),
        ("languages", ", ".join(detector.languages)),
        ("providers available", ", ".join(ort.get_available_providers())),
        ("model card", str(detector.path.parent / "MODEL_CARD.md")),
    ):
        table.add_row(key, value)
    console = Console()
    console.print(table)
    points_table = _operating_points_table(detector)
    if points_table is not None:
        console.print(points_table)


@model.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--lang", "lang", default="en,zh-CN", show_default=True, help="Languages, primary first."
)
@click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a preview here.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Score threshold for every class (default: the model's operating point per class).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--force",
    is_flag=True,
    help="Run the model even on an image it is not made for (another modality, body part or view); "
    "the output is then meaningless and says so in its problems.",
)
@_MODEL_OPTION
@_PROVIDERS_OPTION
def predict(
    file: Path,
    lang: str,
    png: Path | None,
    threshold: float | None,
    as_json: bool,
    force: bool,
    model_path: Path | None,
    providers: str,
) -> None:
    """Run the model on one DICOM image and print its grounded findings.

    The default model is made for frontal (PA/AP) chest radiographs (CR/DX):
    other images are refused (exit code 1) unless --force is given.
    """
    import pydicom

    from engine.analyze import AnalysisError, NotApplicableError, analyze_study
    from engine.model import ModelError
    from engine.pixels import ImageSelection, PixelError

    languages = _languages(lang)
    detector = _detector(model_path, providers, threshold)
    try:
        dataset = pydicom.dcmread(file)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from exc
    try:
        report = analyze_study(
            [dataset],
            detector,
            selection=ImageSelection(),
            languages=languages,
            enforce_applicability=not force,
        )
    except NotApplicableError as exc:
        raise click.ClickException(
            f"{file.name} refused: {exc} (--force runs the model anyway)"
        ) from exc
    except (AnalysisError, ModelError, PixelError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(_report_json(report), ensure_ascii=False, indent=1))
    else:
        _print_report(report, languages)
    if png is not None:
        _write_preview(dataset, report, languages, png)
        click.echo(f"preview written to {png}")


def _report_json(report: GroundedReport) -> dict[str, Any]:
    return {
        "model": {"name": report.model.name, "version": report.model.version},
        "impression": report.impression.as_dict(),
        "findings": [
            {
                "label": f.label.as_dict(),
                "description": f.description.as_dict(),
                "confidence": f.confidence,
                "boxes": [[r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max] for r in f.regions],
            }
            for f in report.findings
        ],
        "problems": list(report.problems),
    }


def _print_report(report: GroundedReport, languages: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{report.model.name}[/bold] {report.model.version}")
    table = Table("#", "label", "confidence", "box (source pixels)", "description")
    for i, finding in enumerate(report.findings, 1):
        boxes = "; ".join(
            f"{r.box.x_min:.0f},{r.box.y_min:.0f},{r.box.x_max:.0f},{r.box.y_max:.0f}"
            for r in finding.regions
        )
        table.add_row(
            str(i),
            " / ".join(finding.label.get(t) or finding.label.primary for t in languages),
            "" if finding.confidence is None else f"{finding.confidence:.2f}",
            boxes,
            "\n".join(finding.description.get(t) or "" for t in languages).strip(),
        )
    if report.findings:
        console.print(table)
    for tag in languages:
        text = report.impression.get(tag)
        if text:
            console.print(f"[bold]{tag}[/bold]: {text}")
    for problem in report.problems:
        console.print(f"[yellow]problem:[/yellow] {problem}")


def _write_preview(
    dataset: Dataset, report: GroundedReport, languages: tuple[str, ...], png: Path
) -> None:
    from engine.pixels import prepare_image
    from radground.preview import draw_findings

    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frame = 1 if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else None
    source = prepare_image(dataset, frame_number=frame, size=(columns, rows))
    canvas = draw_findings(
        source.array,
        report.findings,
        languages=languages,
        sop_instance_uid=str(dataset.SOPInstanceUID),
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png)


def _region(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("a box is x_min,y_min,x_max,y_max in source pixels") from None
    return x1, y1, x2, y2


@model.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--region",
    default=None,
    help="Region -> text: what is in this box (x_min,y_min,x_max,y_max, source pixels)?",
)
@click.option("--where", "query", default=None, help="Text -> region: where is this finding?")
@click.option("--lang", default="en,zh-CN", show_default=True,
              help="Languages, the first being the query's.")
@click.option("--frame", type=int, default=None, help="1-based frame of a multi-frame image.")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestions as JSON.")
@_MODEL_OPTION
@_PROVIDERS_OPTION
def ask(
    file: Path,
    region: str | None,
    query: str | None,
    lang: str,
    frame: int | None,
    as_json: bool,
    model_path: Path | None,
    providers: str,
) -> None:
    """Ask the model about one image: what is in a box (--region), or where a finding is
    (--where). The review page's region tasks, from the command line."""
    import pydicom

    from engine.model import ModelError
    from engine.pixels import PixelError
    from engine.region_tasks import RegionTaskError, describe_region, locate_finding
    from engine.report import Box, ReportError

    if (region is None) == (query is None):
        raise click.UsageError("give either --region or --where")
    languages = _languages(lang)
    box = _region(region)
    detector = _detector(model_path, providers, None)
    try:
        dataset = pydicom.dcmread(file)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from exc
    try:
        if box is not None:
            suggestions = describe_region(
                detector, None, dataset, frame, Box(*box), languages=languages
            )
        else:
            suggestions = locate_finding(
                detector, None, dataset, frame, query or "", language=languages[0],
                languages=languages[1:],
            )
    except (RegionTaskError, ModelError, PixelError, ReportError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        rows = [
            {
                "label": s.label.as_dict(),
                "description": s.description.as_dict(),
                "confidence": s.confidence,
                "box": [s.region.box.x_min, s.region.box.y_min, s.region.box.x_max,
                        s.region.box.y_max],
                "frame": s.region.image.frame_number,
            }
            for s in suggestions
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    if not suggestions:
        click.echo("The model found nothing" + (" in this region." if box else "."))
    for s in suggestions:
        score = "" if s.confidence is None else f" ({s.confidence:.2f})"
        b = s.region.box
        click.echo(
            f"{' / '.join(s.label.as_dict().values())}{score} at {b.x_min:.0f},{b.y_min:.0f},"
            f"{b.x_max:.0f},{b.y_max:.0f}: {' / '.join(s.description.as_dict().values())}"
        )


@model.command("export-onnx")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="weights.pt from python -m engine.default_model.train",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file (default: the shipped model's path).")
@click.option("--score-threshold", type=float, default=0.3, show_default=True,
              help="Operating threshold stored in the model metadata.")
@click.option(
    "--class-thresholds",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file of per-class operating thresholds, stored in the metadata; they replace "
    "--score-threshold for their classes (python -m engine.default_model.evaluate --tuning "
    "--json writes one).",
)
def export_onnx(
    weights: Path, out: Path | None, score_threshold: float, class_thresholds: Path | None
) -> None:
    """Export trained weights to ONNX (needs torch: pip install radground[train])."""
    try:
        from engine.default_model.config import ONNX_PATH
        from engine.default_model.export import export_onnx as run_export
        from engine.default_model.export import read_class_thresholds
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is missing; install the train extra (pip install radground[train])"
        ) from exc
    try:
        per_class = read_class_thresholds(class_thresholds) if class_thresholds else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--class-thresholds") from exc
    try:
        path = run_export(
            weights, out or ONNX_PATH, score_threshold=score_threshold, class_thresholds=per_class
        )
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is missing; install the train extra (pip install radground[train])"
        ) from exc
    click.echo(f"wrote {path}")


@model.command("build-trt")
@_MODEL_OPTION
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="TensorRT engine cache directory.")
@click.option(
    "--precision", default="fp16", show_default=True, help="fp32, fp16, int8 or strongly_typed."
)
@click.option("--max-batch-size", type=int, default=8, show_default=True)
@click.option("--rebuild", is_flag=True, help="Build even if a matching engine is cached.")
def build_trt(
    model_path: Path | None, cache_dir: Path, precision: str, max_batch_size: int, rebuild: bool
) -> None:
    """Build (or find in the cache) a TensorRT engine for the model (needs TensorRT and a GPU)."""
    from engine.default_model import ONNX_PATH
    from engine.model import ModelError

    try:
        from engine.backends.tensorrt_backend import build_engine
    except ImportError as exc:
        raise click.ClickException(f"the TensorRT backend is not available: {exc}") from exc
    try:
        path = build_engine(
            model_path or ONNX_PATH,
            cache_dir=cache_dir,
            precision=precision,
            max_batch_size=max_batch_size,
            rebuild=rebuild,
        )
    except (ModelError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"engine: {path}")
