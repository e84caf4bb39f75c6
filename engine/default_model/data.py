"""Reading the NIH ChestX-ray14 bounding-box subset for training and evaluation.

The data (``../shared/data/nih-cxr-boxes/``): 512 x 512 8-bit PNGs and
``boxes.csv`` with one row per box in pixels of those PNGs (Wang et al.,
"ChestX-ray8", CVPR 2017; images courtesy of the NIH Clinical Center).

Images are split into training and validation **by patient** (every image of a
patient lands on the same side), reproducibly from a seed.

Train/serve parity: :func:`to_model_input` is the one function that turns a
grayscale image into the network's input; the PNGs go through it here, and the
backend receives DICOM images that :mod:`engine.pixels` prepared the same way
(grayscale in [0, 1], stretched to the input size, replicated to 3 channels).
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.default_model.config import CLASSES
from engine.errors import EngineError

#: ``all_labels`` spells one class as the full dataset does.
_LABEL_SPELLINGS = {"Infiltration": "Infiltrate"}

__all__ = [
    "DatasetError",
    "LabelledImage",
    "load_dataset",
    "load_image",
    "split_by_patient",
    "split_for_tuning",
    "to_model_input",
]


class DatasetError(EngineError, ValueError):
    """The training data is missing or malformed."""


@dataclass(frozen=True)
class LabelledImage:
    """One image of the dataset and its boxes.

    Parameters
    ----------
    name
        PNG file name, e.g. ``"00000072_000.png"``.
    patient_id
        The dataset's patient number (used only to split; never logged).
    boxes
        float32 array (n, 4) ``x_min, y_min, x_max, y_max`` in pixels of the
        512 x 512 PNG.
    labels
        int64 array (n,) indices into :data:`~engine.default_model.config.CLASSES`.
    unboxed
        int64 array of the classes the image's labels name (``all_labels``, the
        report-mined labels of the full dataset) but that have no box here: the
        finding is present but nobody drew it. Training must not teach the
        model that these images show none of them.
    """

    name: str
    patient_id: str
    boxes: np.ndarray
    labels: np.ndarray
    unboxed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def load_dataset(root: Path) -> list[LabelledImage]:
    """All labelled images under ``root`` (the ``nih-cxr-boxes`` folder), sorted by name.

    Raises
    ------
    DatasetError
        When ``boxes.csv`` is missing, names an unknown class, or a row is malformed.
    """
    csv_path = Path(root) / "boxes.csv"
    if not csv_path.is_file():
        raise DatasetError(f"boxes.csv not found under {root}")
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    labels: dict[str, list[int]] = defaultdict(list)
    patients: dict[str, str] = {}
    image_labels: dict[str, set[int]] = {}
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["finding"] not in CLASSES:
                raise DatasetError(f"unknown finding class {row['finding']!r} in boxes.csv")
            box = [float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
            if not (box[0] < box[2] and box[1] < box[3]):
                raise DatasetError(f"degenerate box in boxes.csv for image {row['image']}")
            boxes[row["image"]].append(box)
            labels[row["image"]].append(CLASSES.index(row["finding"]))
            patients[row["image"]] = row["patient_id"]
            named = (
                _LABEL_SPELLINGS.get(label, label) for label in row.get("all_labels", "").split("|")
            )
            image_labels[row["image"]] = {
                CLASSES.index(label) for label in named if label in CLASSES
            }
    return [
        LabelledImage(
            name=name,
            patient_id=patients[name],
            boxes=np.asarray(boxes[name], dtype=np.float32),
            labels=np.asarray(labels[name], dtype=np.int64),
            unboxed=np.asarray(sorted(image_labels[name] - set(labels[name])), dtype=np.int64),
        )
        for name in sorted(boxes)
    ]


def split_by_patient(
    images: Sequence[LabelledImage], *, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Split into (train, validation) so that no patient is on both sides.

    Patients are shuffled with ``seed`` and taken for validation until
    ``validation_fraction`` of the images is reached.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    by_patient: dict[str, list[LabelledImage]] = defaultdict(list)
    for image in images:
        by_patient[image.patient_id].append(image)
    patient_ids = sorted(by_patient, key=int)
    random.Random(seed).shuffle(patient_ids)
    target = validation_fraction * len(images)
    validation_patients: set[str] = set()
    count = 0
    for pid in patient_ids:
        if count >= target:
            break
        validation_patients.add(pid)
        count += len(by_patient[pid])
    train = [im for im in images if im.patient_id not in validation_patients]
    validation = [im for im in images if im.patient_id in validation_patients]
    return train, validation


def split_for_tuning(
    train: Sequence[LabelledImage], *, tuning_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Split the **training** images again, by patient, into (fit, tuning).

    Training recipes are compared by training on "fit" and scoring on
    "tuning", so that the validation patients are used only for the final,
    reported numbers. Uses seed ``seed + 1``: not the validation split's order.
    """
    return split_by_patient(train, validation_fraction=tuning_fraction, seed=seed + 1)


def to_model_input(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A grayscale image in [0, 1] stretched to ``size`` = (width, height).

    Bicubic resampling with PIL on float32 (antialiased when shrinking), then
    clipped to [0, 1]: exactly what :mod:`engine.pixels` does to a DICOM frame
    for a stretched model input (InternVL/MedRegA's bicubic resize).

    Returns
    -------
    numpy.ndarray
        float32 (height, width) in [0, 1].
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise DatasetError(f"to_model_input needs a 2-D grayscale image, got shape {gray.shape}")
    resized = Image.fromarray(gray, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def load_image(
    root: Path, name: str, *, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read ``images/name`` under ``root`` as the model sees it.

    Returns
    -------
    tuple
        The float32 (height, width) input in [0, 1] and the PNG's original
        ``(width, height)``.
    """
    with Image.open(Path(root) / "images" / name) as png:
        original = png.size
        gray = np.asarray(png.convert("L"), dtype=np.float32) / 255.0
    return to_model_input(gray, size), original
