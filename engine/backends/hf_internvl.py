"""InternVL-family inputs for :class:`~engine.backends.hf_backend.HFGroundingVLM`.

Two kinds of checkpoint:

- **InternVL-chat** (MedRegA, ``Luxuriant16/medrega``; InternVL 1.x-2.x): ships
  its own modeling code (``trust_remote_code``), ``config.json`` has
  ``model_type: internvl_chat``. Its ``chat()`` wraps the question in the
  conversation template named by ``config.template`` ("Hermes-2": ChatML with
  no newline after ``<|im_end|>``) and replaces the ``<image>`` placeholder *in
  place* with ``<img>`` + ``<IMG_CONTEXT>`` × ``num_image_token`` + ``</img>``.
- **InternVL in transformers** (``InternVLForConditionalGeneration``,
  ``model_type: internvl``): the same image-token layout, the chat template is
  the checkpoint's own.

Both take one 448 × 448 (the config's size) tile, stretched, normalised with the
ImageNet mean and standard deviation (MedRegA's ``build_transform``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine.model import ModelError

__all__ = [
    "HERMES2_SYSTEM_MESSAGE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "image_token_string",
    "normalize_imagenet",
    "render_hermes2",
]

logger = logging.getLogger(__name__)

#: ImageNet channel mean and standard deviation (RGB, on [0, 1] pixels).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: The system message of InternVL's "Hermes-2" conversation template, which
#: MedRegA's ``chat()`` uses unchanged.
HERMES2_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，"
    "英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

#: Conversation templates that render as ChatML without newlines between turns
#: (InternVL's ``SeparatorStyle.MPT`` with ``sep='<|im_end|>'``).
CHATML_TEMPLATES = frozenset({"Hermes-2", "internlm2-chat"})

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"


def render_hermes2(question: str, *, system_message: str = HERMES2_SYSTEM_MESSAGE) -> str:
    """One user turn in InternVL's Hermes-2 template, ready for the assistant's answer."""
    return (
        f"<|im_start|>system\n{system_message}<|im_end|>"
        f"<|im_start|>user\n{question}<|im_end|>"
        "<|im_start|>assistant\n"
    )


def image_token_string(
    count: int, *, start: str = IMG_START, context: str = IMG_CONTEXT, end: str = IMG_END
) -> str:
    """What the ``<image>`` placeholder becomes: ``<img>`` + ``count`` context tokens +
    ``</img>``."""
    if count <= 0:
        raise ModelError(f"an image needs a positive number of image tokens, got {count}")
    return start + context * count + end


def normalize_imagenet(images: list[np.ndarray]) -> np.ndarray:
    """Stack (H, W, 3) RGB [0, 1] images into a (N, 3, H, W) float32 batch, ImageNet-normalised."""
    batch = np.stack([(img - IMAGENET_MEAN) / IMAGENET_STD for img in images]).astype(np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _size_pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    height, width = (int(v) for v in value)
    return (width, height)


def internvl_chat_geometry(config: Any) -> tuple[tuple[int, int], int]:
    """``(input_size (w, h), tokens per image)`` of an InternVL-chat (remote code) config."""
    vision = config.vision_config
    size = getattr(config, "force_image_size", None) or vision.image_size
    width, height = _size_pair(size)
    patch = int(vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0])
    ratio = float(getattr(config, "downsample_ratio", 0.5))
    return (width, height), int((width // patch) * (height // patch) * ratio * ratio)


def internvl_native_geometry(config: Any) -> tuple[tuple[int, int], int]:
    """``(input_size (w, h), tokens per image)`` of a transformers ``InternVLConfig``."""
    return _size_pair(config.vision_config.image_size), int(config.image_seq_length)


class InternVLChatFeatures:
    """Image embeddings of an InternVL-chat model: ``model.extract_feature`` (ViT, pixel shuffle,
    MLP)."""

    def __init__(self, model: Any) -> None:
        import torch

        class _Tower(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                return self.inner.extract_feature(pixel_values)

        self.module = _Tower(model)


class InternVLNativeFeatures:
    """Image embeddings of ``InternVLForConditionalGeneration``: vision tower, pixel shuffle,
    projector."""

    def __init__(self, model: Any) -> None:
        import torch

        config = model.config

        class _Tower(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                out = self.inner.get_image_features(
                    pixel_values=pixel_values,
                    vision_feature_layer=config.vision_feature_layer,
                    vision_feature_select_strategy=config.vision_feature_select_strategy,
                )
                return out.pooler_output

        self.module = _Tower(model)
