"""Fixed facts about the default model: classes, input size, file locations.

Importing this module is cheap (no torch, no onnxruntime, no file access).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CLASSES",
    "INPUT_SIZE",
    "MODEL_DIR",
    "NUM_CLASSES",
    "ONNX_PATH",
    "OUTPUT_STRIDE",
]

#: Finding classes, in heatmap channel order, as spelled in ``boxes.csv`` of the
#: NIH ChestX-ray14 bounding-box subset (Wang et al., CVPR 2017).
CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
NUM_CLASSES = len(CLASSES)

#: Model input ``(width, height)`` in pixels; source images are stretched to it
#: (the NIH PNGs were themselves stretched from the detector, so their pixels
#: are not square either).
INPUT_SIZE: tuple[int, int] = (384, 384)

#: Stride of the heatmap relative to the input.
OUTPUT_STRIDE = 8

#: Folder of this package, where the shipped model and its card live.
MODEL_DIR = Path(__file__).resolve().parent

#: The shipped ONNX model (fp32 weights; see MODEL_CARD.md).
ONNX_PATH = MODEL_DIR / "radground-cxr-det.onnx"
