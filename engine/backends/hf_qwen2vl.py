"""Qwen2-VL / Qwen2.5-VL inputs for :class:`~engine.backends.hf_backend.HFGroundingVLM`.

Qwen2-VL cuts the image into 14 × 14 patches, merges 2 × 2 of them into one
language-model token, and marks the image with ``<|vision_start|>`` +
``<|image_pad|>`` × (patches / merge²) + ``<|vision_end|>`` (the model card's
chat template). The checkpoint's image processor computes the patches; pixels
arrive in [0, 1], so its rescaling is switched off.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.model import ModelError

__all__ = ["QwenImageInputs", "qwen_image_inputs"]

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"


class QwenImageInputs:
    """Pixel inputs for a batch and the image-token string of each image."""

    def __init__(self, model_kwargs: dict[str, Any], image_strings: list[str]) -> None:
        self.model_kwargs = model_kwargs
        self.image_strings = image_strings


def qwen_image_inputs(
    image_processor: Any, images: list[np.ndarray], *, image_token: str = IMAGE_PAD
) -> QwenImageInputs:
    """Run the checkpoint's image processor and count each image's tokens."""
    processed = image_processor(images=list(images), do_rescale=False, return_tensors="pt")
    grid = processed["image_grid_thw"]
    merge = int(getattr(image_processor, "merge_size", 2))
    strings = []
    for thw in grid:
        count = int(thw.prod().item()) // (merge * merge)
        if count <= 0:
            raise ModelError(
                f"Qwen2-VL image processor produced an empty image grid {tuple(thw.tolist())}"
            )
        strings.append(VISION_START + image_token * count + VISION_END)
    return QwenImageInputs(
        {"pixel_values": processed["pixel_values"], "image_grid_thw": grid},
        strings,
    )
