"""Export an InternVL/MedRegA vision tower to ONNX and serve it outside torch.

The vision tower (InternViT, pixel shuffle and the MLP projector) turns a batch of
normalised 448 × 448 tiles into the image embeddings the language model reads
at its ``<IMG_CONTEXT>`` positions. Exported to ONNX, it can run in ONNX Runtime
or as a TensorRT engine (:func:`engine.backends.tensorrt_backend.build_engine`)
while the language model stays in torch:
``HFGroundingVLM(..., vision_embedder=OnnxVisionEmbedder(path))``.

ONNX graph: input ``pixel_values`` float32 ``(batch, 3, H, W)``, output
``image_embeds`` float32 ``(batch, tokens, hidden)``; the batch axis is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.model import ModelError

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxVisionEmbedder",
    "VisionExportError",
    "export_vision_tower",
    "vision_tower_module",
]

logger = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "image_embeds"


class VisionExportError(ModelError):
    """The vision tower could not be exported or run."""


def vision_tower_module(model: Any) -> Any:
    """A ``torch.nn.Module`` mapping ``pixel_values`` to image embeddings for an InternVL model.

    ``model`` is an :class:`~engine.backends.hf_backend.HFGroundingVLM` or the
    underlying transformers model (InternVL-chat remote code, which has
    ``extract_feature``, or ``InternVLForConditionalGeneration``).
    """
    from engine.backends import hf_internvl

    inner = getattr(model, "model", None) if hasattr(model, "family") else model
    if inner is None:
        raise VisionExportError("the model has been closed")
    if hasattr(inner, "extract_feature"):
        return hf_internvl.InternVLChatFeatures(inner).module
    if (
        hasattr(inner, "get_image_features")
        and getattr(inner.config, "model_type", None) == "internvl"
    ):
        return hf_internvl.InternVLNativeFeatures(inner).module
    raise VisionExportError(f"no exportable InternVL vision tower in {type(inner).__name__}")


def export_vision_tower(
    model: Any,
    onnx_path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    opset: int = 17,
    example_batch: int = 2,
) -> Path:
    """Export the vision tower of ``model`` to ``onnx_path`` (dynamic batch axis).

    Parameters
    ----------
    model
        :class:`~engine.backends.hf_backend.HFGroundingVLM` or an InternVL model.
    onnx_path
        Where to write the ``.onnx`` file (its directory must exist).
    input_size
        ``(width, height)`` of a tile; taken from ``model.input_size`` if absent.
    opset
        ONNX opset (17: LayerNormalization is native; TensorRT 10 parses it).
    example_batch
        Batch size of the tracing example (not 1, so that the batch axis stays symbolic).
    """
    import torch

    size = input_size or getattr(model, "input_size", None)
    if size is None:
        raise VisionExportError("input_size is needed for a bare transformers model")
    width, height = size
    module = vision_tower_module(model).eval()
    dtype = next(module.parameters()).dtype
    device = next(module.parameters()).device
    example = torch.rand(example_batch, 3, height, width, dtype=dtype, device=device)
    path = Path(onnx_path)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # shape arithmetic on a fixed tile size is traced as constants, which is what we want
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    logger.info("exported vision tower (%dx%d) to %s", width, height, path.name)
    return path


class OnnxVisionEmbedder:
    """Image embeddings from an exported vision tower, run by ONNX Runtime.

    Parameters
    ----------
    onnx_path
        File written by :func:`export_vision_tower`.
    providers
        ONNX Runtime execution providers in order of preference, e.g.
        ``("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")``.
    """

    def __init__(
        self, onnx_path: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise VisionExportError(f"vision tower ONNX file {path} does not exist")
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise VisionExportError(
                f"none of the providers {list(providers)} is available ({sorted(available)})"
            )
        self.session = ort.InferenceSession(str(path), providers=chosen)
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME]:
            raise VisionExportError(f"{path.name} has inputs {names}, expected [{INPUT_NAME!r}]")

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` float32 → ``(N, tokens, hidden)`` float32."""
        (embeds,) = self.session.run(
            [OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixel_values, dtype=np.float32)}
        )
        return embeds
