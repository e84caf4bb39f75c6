"""Exporting the trained detector to ONNX (and optionally an fp16 copy).

The graph takes ``images`` float32 (N, 3, H, W) in [0, 1] with a dynamic batch
axis and returns ``heatmap`` (sigmoid, 3x3 peak-suppressed), ``size`` and
``offset`` at stride 8 (see :mod:`engine.default_model.network`). ONNX opset 17.

Run it::

    python -m engine.default_model.export --weights /tmp/radground-train/weights.pt \\
        --out engine/default_model/radground-cxr-det.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.default_model.config import CLASSES, INPUT_SIZE, ONNX_PATH
from engine.default_model.operating_points import (
    METADATA_KEY,
    OperatingPointError,
    OperatingPoints,
    parse_operating_points,
)

__all__ = [
    "OPSET",
    "export_onnx",
    "main",
    "onnx_sha256",
    "quantize_int8",
    "read_operating_points",
    "store_operating_points",
    "to_fp16",
]

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("heatmap", "size", "offset")


def onnx_sha256(path: Path) -> str:
    """Hex SHA-256 of a model file (the model version derives from it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_onnx(
    weights: Path,
    out: Path,
    *,
    score_threshold: float = 0.3,
    class_thresholds: dict[str, float] | None = None,
    metadata: dict[str, str] | None = None,
    opset: int = OPSET,
    check_batch: int = 2,
) -> Path:
    """Export ``weights`` (a state dict from :mod:`engine.default_model.train`) to ``out``.

    The model's metadata (``metadata_props``) records the classes, the input
    size, the reporting ``score_threshold`` the backend uses by default and,
    when given, the per-class ``class_thresholds`` that take its place for
    their classes (``class_score_thresholds``), plus any extra ``metadata``.

    After export the file is checked with the ONNX checker and run once with
    ONNX Runtime against the PyTorch outputs (max abs difference logged; it
    raises when above 1e-3).
    """
    import onnx
    import onnxruntime as ort
    import torch

    from engine.default_model.network import CenterNetDetector, InferenceWrapper

    model = CenterNetDetector()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    wrapper = InferenceWrapper(model).eval()
    width, height = INPUT_SIZE
    example = torch.rand(check_batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapper,
        (example,),
        str(out),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    proto.doc_string = (
        "RadGround default CXR finding detector (EfficientNet-Lite0 + CenterNet); see MODEL_CARD.md"
    )
    props = {
        "classes": json.dumps(list(CLASSES)),
        "input_size": json.dumps(list(INPUT_SIZE)),
        "score_threshold": f"{score_threshold:.4f}",
        **(
            {"class_score_thresholds": json.dumps(check_class_thresholds(class_thresholds))}
            if class_thresholds
            else {}
        ),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(out))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: example.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(example)]
    # peak suppression can flip on float ties; compare the raw size/offset and the heat maxima
    diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got[1:], expected[1:], strict=True))
    diff = max(diff, float(np.max(np.abs(got[0].max(axis=(2, 3)) - expected[0].max(axis=(2, 3))))))
    logger.info(
        "exported %s (%.1f MB), max |onnx - torch| = %.2e", out, out.stat().st_size / 1e6, diff
    )
    if diff > 1e-3:
        raise RuntimeError(f"ONNX export differs from PyTorch by {diff:.2e}")
    return out


def check_class_thresholds(thresholds: dict[str, float]) -> dict[str, float]:
    """``thresholds`` in :data:`CLASSES` order, or :class:`ValueError` naming what is wrong."""
    unknown = sorted(set(thresholds) - set(CLASSES))
    if unknown:
        raise ValueError(
            f"class thresholds name unknown classes {unknown}; the classes are {list(CLASSES)}"
        )
    bad = sorted(label for label, value in thresholds.items() if not 0.0 < float(value) < 1.0)
    if bad:
        raise ValueError(f"class thresholds must be in (0, 1); not so for {bad}")
    return {label: round(float(thresholds[label]), 4) for label in CLASSES if label in thresholds}


def read_class_thresholds(path: Path) -> dict[str, float]:
    """Per-class thresholds from a JSON file: ``{"Cardiomegaly": 0.4, ...}``, or the
    ``class_thresholds`` of an ``evaluate --tuning --json`` result."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read class thresholds from {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("class_thresholds"), dict):
        data = data["class_thresholds"]
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object of class name -> threshold")
    return check_class_thresholds(data)


def read_operating_points(path: Path) -> OperatingPoints:
    """The ``operating_points`` of an ``evaluate --json`` result (checked), or
    :class:`ValueError` naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read operating points from {path}: {exc}") from exc
    section = data.get("operating_points") if isinstance(data, dict) else None
    if section is None:
        raise ValueError(
            f"{path}: no operating_points (write it with evaluate --json at per-class thresholds)"
        )
    try:
        return parse_operating_points(json.dumps(section))
    except OperatingPointError as exc:
        raise ValueError(f"{path}: {exc}") from None


def store_operating_points(path: Path, points: OperatingPoints, *, release: str) -> Path:
    """Store ``points`` (and the model ``release``) in the metadata of the ONNX file at ``path``.

    The weights and graph are left as they are; ``class_score_thresholds`` is
    dropped (the operating points replace it). The file's SHA-256, hence the
    model version (``<release>+<sha>``) and its device UID, change.
    """
    import onnx

    parse_operating_points(points.to_metadata())  # refuse what the backend would refuse
    if not release.strip() or "+" in release:
        raise ValueError(f"release must be a non-empty version without '+', got {release!r}")
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props if p.key != "class_score_thresholds"}
    props[METADATA_KEY] = points.to_metadata()
    props["model_release"] = release
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)


def to_fp16(source: Path, out: Path) -> Path:
    """An fp16-weight copy of ``source`` with fp32 inputs/outputs (for size/accuracy comparison)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(source))
    # Store initialisers as fp16 and cast them back at load: halves the file, keeps fp32 compute.
    graph = proto.graph
    new_inits, casts = [], []
    for init in list(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype != np.float32 or array.size < 16:
            new_inits.append(init)
            continue
        half_name = init.name + "__fp16"
        new_inits.append(numpy_helper.from_array(array.astype(np.float16), half_name))
        casts.append(
            onnx.helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT)
        )
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def quantize_int8(source: Path, out: Path, calibration: np.ndarray) -> Path:
    """A static int8 (QDQ, per-channel weights) copy of ``source`` calibrated on ``calibration``.

    ``calibration`` is float32 (N, 3, H, W) in [0, 1], e.g. a few dozen training
    images. Used to measure whether int8 keeps the validation metrics (MODEL_CARD.md).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {INPUT_NAME: batch}

    quantize_static(
        str(source),
        str(out),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # keep the outputs' peak suppression exact: quantise the backbone and head convolutions only
        op_types_to_quantize=["Conv"],
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m engine.default_model.export``)."""
    parser = argparse.ArgumentParser(description="Export the default detector to ONNX")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights.pt to export (leave out with --operating-points to update --out in place)",
    )
    parser.add_argument("--out", type=Path, default=ONNX_PATH)
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="reporting threshold stored in the metadata",
    )
    parser.add_argument(
        "--class-thresholds", type=Path, default=None,
        help="JSON file of per-class operating thresholds (e.g. evaluate --tuning --json's output)",
    )
    parser.add_argument(
        "--fp16-out", type=Path, default=None, help="also write an fp16-weight copy here"
    )
    parser.add_argument(
        "--operating-points",
        type=Path,
        default=None,
        help="evaluate --json result whose operating_points (reported classes, held-out "
        "counts) to store in --out",
    )
    parser.add_argument(
        "--release", default=None, help="model release stored with --operating-points (e.g. 1.1)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.operating_points is not None:
        if args.weights is not None or not args.release:
            parser.error(
                "--operating-points updates an exported --out in place: give "
                "--release, not --weights"
            )
        try:
            points = read_operating_points(args.operating_points)
            store_operating_points(args.out, points, release=args.release)
        except ValueError as exc:
            parser.error(str(exc))
        logger.info(
            "stored operating points in %s: reports %s",
            args.out,
            ", ".join(points.reported_classes) or "nothing",
        )
        return
    if args.weights is None:
        parser.error("--weights is required to export")
    try:
        class_thresholds = (
            read_class_thresholds(args.class_thresholds) if args.class_thresholds else None
        )
    except ValueError as exc:
        parser.error(str(exc))
    export_onnx(
        args.weights,
        args.out,
        score_threshold=args.score_threshold,
        class_thresholds=class_thresholds,
    )
    if args.fp16_out:
        to_fp16(args.out, args.fp16_out)


if __name__ == "__main__":
    main()
