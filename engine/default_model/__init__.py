"""RadGround's default model: a compact chest-radiograph finding detector.

EfficientNet-Lite0 + CenterNet head trained on the NIH ChestX-ray14
bounding-box subset (8 classes), shipped as ONNX in this package
(``radground-cxr-det.onnx``, see ``MODEL_CARD.md``). Training and export need
the ``train`` extra (torch); running it needs only onnxruntime and numpy
(:mod:`engine.backends.onnxruntime_backend`).

Importing this package loads nothing heavy.
"""

from engine.default_model.config import (
    CLASSES,
    INPUT_SIZE,
    MODEL_DIR,
    NUM_CLASSES,
    ONNX_PATH,
    OUTPUT_STRIDE,
)

__all__ = ["CLASSES", "INPUT_SIZE", "MODEL_DIR", "NUM_CLASSES", "ONNX_PATH", "OUTPUT_STRIDE"]
