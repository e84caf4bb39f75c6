"""Hugging Face region-aware VLMs (MedRegA / InternVL / Qwen2-VL) behind one interface.

:class:`HFGroundingVLM` loads a checkpoint **from a local directory only**
(every ``from_pretrained`` gets ``local_files_only=True``; hub ids are refused)
and answers :class:`~engine.model.GenerationRequest` s with MedRegA's prompts
(:mod:`engine.prompts`), greedy decoding, one beam and ``max_new_tokens=400``
(MedRegA's demo settings). The text comes back as the model wrote it; the
engine's grammar parser reads the ``<ref>``/``<box>`` markup.

Supported checkpoints (detected from ``config.json`` before any code runs):

=====================  =====================================================
``internvl_chat``      MedRegA and InternVL-chat: own modeling code, loaded
                       only with ``trust_remote_code=True``; Hermes-2 template
``internvl``           ``InternVLForConditionalGeneration`` (transformers)
``qwen2_vl``,          ``Qwen2VLForConditionalGeneration`` /
``qwen2_5_vl``         ``Qwen2_5_VLForConditionalGeneration`` (transformers)
=====================  =====================================================

For the InternVL families the vision tower can run outside torch: pass a
``vision_embedder`` (e.g. :class:`engine.backends.vision_onnx.OnnxVisionEmbedder`
over an ONNX export, or a TensorRT engine of it) and only the language model
runs in torch.

Create one instance per worker process, after fork (``worker_process_init``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends import hf_internvl, hf_qwen2vl
from engine.model import GenerationRequest, ModelError, RegionAwareModel, ResizeMode
from engine.prompts import CHEST_XRAY, IMAGE_PLACEHOLDER, PromptError, build_prompt
from engine.report import ModelInfo, Task

__all__ = [
    "HFBackendError",
    "HFGroundingVLM",
    "ModelFamily",
    "VisionEmbedder",
    "checkpoint_version",
    "detect_family",
]

logger = logging.getLogger(__name__)

#: ``(N, 3, H, W)`` normalised float32 pixels → ``(N, tokens, hidden)`` float32 image embeddings.
VisionEmbedder = Callable[[np.ndarray], np.ndarray]

#: MedRegA's demo generation settings.
DEFAULT_MAX_NEW_TOKENS = 400


class HFBackendError(ModelError):
    """A Hugging Face checkpoint could not be loaded or run."""


class ModelFamily(enum.StrEnum):
    """Checkpoint layouts the adapter understands (``config.json`` ``model_type``)."""

    INTERNVL_CHAT = "internvl_chat"
    INTERNVL = "internvl"
    QWEN2_VL = "qwen2_vl"
    QWEN2_5_VL = "qwen2_5_vl"


def _local_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(model_dir)
    if not path.is_absolute() and text.count("/") == 1 and not text.startswith("."):
        raise HFBackendError(
            f"{text!r} is not a local directory and looks like a Hugging Face hub id; "
            "RadGround loads models from a local directory only (download the checkpoint "
            "beforehand and pass its path)"
        )
    raise HFBackendError(f"model directory {text!r} does not exist")


def detect_family(model_dir: str | Path) -> ModelFamily:
    """The checkpoint's family, read from its ``config.json`` (no model code is run)."""
    path = _local_dir(model_dir)
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFBackendError(f"no config.json in model directory {path}") from None
    except json.JSONDecodeError as exc:
        raise HFBackendError(f"config.json in {path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type == "internvl_chat" or "InternVLChatModel" in architectures:
        return ModelFamily.INTERNVL_CHAT
    try:
        return ModelFamily(model_type)
    except ValueError:
        supported = ", ".join(f.value for f in ModelFamily)
        raise HFBackendError(
            f"unsupported model_type {model_type!r} in {config_file}; supported: {supported}"
        ) from None


def _processor_chat_template(model_dir: Path) -> str | None:
    """The chat template a processor keeps beside the tokenizer
    (``chat_template.jinja``/``.json``)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = model_dir / "chat_template.json"
    if legacy.is_file():
        try:
            template = json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
        except json.JSONDecodeError as exc:
            raise HFBackendError(f"{legacy} is not valid JSON: {exc}") from None
        return template if isinstance(template, str) else None
    return None


def checkpoint_version(model_dir: str | Path) -> str:
    """A cheap identity of a checkpoint: SHA-256 over ``config.json`` and the weight files' names
    and sizes.

    Hashing tens of gigabytes of weights at every worker start is too slow; a
    retrained or re-quantised checkpoint changes its config or its file sizes,
    and with them this version (and the report's device UID).
    """
    path = _local_dir(model_dir)
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for file in sorted(path.iterdir()):
        if file.suffix in (".safetensors", ".bin", ".pt", ".gguf") and file.is_file():
            digest.update(f"\0{file.name}\0{file.stat().st_size}".encode())
    return f"local+{digest.hexdigest()[:12]}"


class HFGroundingVLM(RegionAwareModel):
    """A MedRegA-style region-aware VLM served with transformers.

    Parameters
    ----------
    model_dir
        Local directory with ``config.json``, weights and tokenizer (and the
        image processor for Qwen2-VL). Hub ids are refused.
    info
        Model identity for reports; by default derived from the directory name.
    device
        torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    dtype
        torch dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``);
        default bfloat16 on CUDA, float32 on the CPU.
    trust_remote_code
        Must be ``True`` to load an InternVL-chat checkpoint (MedRegA), which
        ships its own modeling code; review that code first.
    max_new_tokens
        Generation budget (MedRegA's demo: 400). Decoding is greedy, one beam.
    system_message
        Overrides the chat template's system message (InternVL-chat: Hermes-2's).
    modality_phrase
        How English prompts name the image (:func:`engine.prompts.build_prompt`).
    vision_embedder
        InternVL families only: computes image embeddings outside torch
        (ONNX Runtime / TensorRT); the language model still runs in torch.
    input_size
        ``(width, height)``; InternVL families take it from the config
        (MedRegA: 448 × 448). Qwen2-VL accepts any multiple of 28 (default 448).
    max_batch_size
        Largest batch :meth:`generate` accepts.
    """

    resize_mode = ResizeMode.STRETCH
    languages = ("en", "zh-CN")
    tasks = (
        Task.GROUNDED_REPORT,
        Task.DETECTION,
        Task.TEXT_TO_REGION,
        Task.REGION_TO_TEXT,
        Task.REPORT,
    )

    def __init__(
        self,
        model_dir: str | Path,
        *,
        info: ModelInfo | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        trust_remote_code: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        system_message: str | None = None,
        modality_phrase: str = CHEST_XRAY,
        vision_embedder: VisionEmbedder | None = None,
        input_size: tuple[int, int] | None = None,
        max_batch_size: int = 1,
    ) -> None:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise HFBackendError(
                f"max_new_tokens must be a positive integer, got {max_new_tokens!r}"
            )
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise HFBackendError(
                f"max_batch_size must be a positive integer, got {max_batch_size!r}"
            )
        self.model_dir = _local_dir(model_dir)
        self.family = detect_family(self.model_dir)
        if self.family is ModelFamily.INTERNVL_CHAT and not trust_remote_code:
            raise HFBackendError(
                f"{self.model_dir.name} is an InternVL-chat checkpoint (e.g. MedRegA) "
                "that ships its own "
                "modeling code; review it and pass trust_remote_code=True to load it"
            )
        if vision_embedder is not None and self.family not in (
            ModelFamily.INTERNVL,
            ModelFamily.INTERNVL_CHAT,
        ):
            raise HFBackendError(
                f"an external vision embedder is supported for InternVL families, not {self.family}"
            )
        self.max_new_tokens = max_new_tokens
        self.system_message = system_message
        self.modality_phrase = modality_phrase
        self.max_batch_size = max_batch_size
        self._vision_embedder = vision_embedder
        self.info = info or ModelInfo.for_version(
            name=self.model_dir.name,
            version=checkpoint_version(self.model_dir),
            manufacturer="RadGround",
        )
        #: The exact texts (chat template applied, image tokens expanded) of the last batch.
        self.last_texts: tuple[str, ...] = ()
        self._load(
            device=device, dtype=dtype, trust_remote_code=trust_remote_code, input_size=input_size
        )

    # -- loading ---------------------------------------------------------------------------
    def _load(
        self,
        *,
        device: str,
        dtype: str | None,
        trust_remote_code: bool,
        input_size: tuple[int, int] | None,
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise HFBackendError(
                "the Hugging Face backend needs the 'hf' extra (torch, transformers)"
            ) from exc
        torch_dtype = self._torch_dtype(torch, dtype, device)
        self._torch = torch
        self._device = torch.device(device)
        common: dict[str, Any] = {"local_files_only": True}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.model_dir, trust_remote_code=trust_remote_code, **common
            )
            if self.family is ModelFamily.INTERNVL_CHAT:
                self.model = transformers.AutoModel.from_pretrained(
                    self.model_dir, trust_remote_code=True, dtype=torch_dtype, **common
                )
            else:
                self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                    self.model_dir, dtype=torch_dtype, **common
                )
            self.image_processor = None
            if self.family in (ModelFamily.QWEN2_VL, ModelFamily.QWEN2_5_VL):
                self.image_processor = transformers.AutoImageProcessor.from_pretrained(
                    self.model_dir, **common
                )
        except (OSError, ValueError) as exc:
            raise HFBackendError(
                f"cannot load {self.family} checkpoint from {self.model_dir}: {exc}"
            ) from exc
        self.model.to(self._device).eval()
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = _processor_chat_template(self.model_dir)
        self._setup_tokens()
        self._setup_geometry(input_size)
        logger.info(
            "loaded %s checkpoint %s on %s (%s)",
            self.family,
            self.model_dir.name,
            device,
            torch_dtype,
        )

    @staticmethod
    def _torch_dtype(torch: Any, dtype: str | None, device: str) -> Any:
        name = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):
            raise HFBackendError(f"unknown torch dtype {dtype!r}")
        return value

    def _setup_tokens(self) -> None:
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        stop_ids = []
        for token in ("<|im_end|>", "<|endoftext|>", tok.eos_token):
            token_id = tok.convert_tokens_to_ids(token) if token else None
            if (
                isinstance(token_id, int)
                and token_id != tok.unk_token_id
                and token_id not in stop_ids
            ):
                stop_ids.append(token_id)
        if not stop_ids:
            raise HFBackendError(f"tokenizer of {self.model_dir.name} has no end-of-turn token")
        self._stop_ids = stop_ids
        self._stop_strings = [t for t in ("<|im_end|>", "<|endoftext|>", tok.eos_token) if t]

    def _setup_geometry(self, input_size: tuple[int, int] | None) -> None:
        config = self.model.config
        if self.family is ModelFamily.INTERNVL_CHAT:
            size, self._image_tokens = hf_internvl.internvl_chat_geometry(config)
            template = getattr(config, "template", "Hermes-2")
            if template not in hf_internvl.CHATML_TEMPLATES:
                raise HFBackendError(
                    f"conversation template {template!r} is not supported (Hermes-2 is)"
                )
            context_id = self.tokenizer.convert_tokens_to_ids(hf_internvl.IMG_CONTEXT)
            if not isinstance(context_id, int) or context_id == self.tokenizer.unk_token_id:
                raise HFBackendError(f"tokenizer lacks the {hf_internvl.IMG_CONTEXT} token")
            self.model.img_context_token_id = context_id
        elif self.family is ModelFamily.INTERNVL:
            size, self._image_tokens = hf_internvl.internvl_native_geometry(config)
        else:
            size, self._image_tokens = (448, 448), 0
            if input_size is not None and any(v % 28 for v in input_size):
                raise HFBackendError(f"Qwen2-VL input sizes are multiples of 28, got {input_size}")
        if (
            input_size is not None
            and self.family in (ModelFamily.INTERNVL, ModelFamily.INTERNVL_CHAT)
            and tuple(input_size) != size
        ):
            raise HFBackendError(
                f"{self.family} checkpoint takes {size} images, not {tuple(input_size)}"
            )
        self.input_size = (*input_size,) if input_size is not None else size

    # -- prompts ---------------------------------------------------------------------------
    def _chat_text(self, question: str) -> str:
        """The question in the checkpoint's chat template, ``<image>`` still in place."""
        if self.family is ModelFamily.INTERNVL_CHAT:
            return hf_internvl.render_hermes2(
                question, system_message=self.system_message or hf_internvl.HERMES2_SYSTEM_MESSAGE
            )
        messages = [{"role": "user", "content": question}]
        if self.system_message:
            messages.insert(0, {"role": "system", "content": self.system_message})
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            if not isinstance(text, str):
                raise HFBackendError(
                    f"{self.model_dir.name}'s chat template did not render one text"
                )
            return text
        logger.warning("%s has no chat template; using ChatML", self.model_dir.name)
        return hf_internvl.render_hermes2(
            question, system_message=self.system_message or "You are a helpful assistant."
        )

    def render(self, request: GenerationRequest) -> str:
        """The MedRegA prompt of ``request`` in the chat template, ``<image>`` not yet expanded."""
        try:
            question = build_prompt(request, modality_phrase=self.modality_phrase)
        except PromptError as exc:
            raise HFBackendError(f"cannot prompt {self.family} for {request.task}: {exc}") from exc
        text = self._chat_text(question)
        if text.count(IMAGE_PLACEHOLDER) != 1:
            raise HFBackendError(
                f"the chat template changed the {IMAGE_PLACEHOLDER} placeholder count"
            )
        return text

    # -- generation ------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy, one beam, up to ``max_new_tokens``; one raw output text per request."""
        if not requests:
            return []
        if self.model is None:
            raise HFBackendError(f"{self.model_dir.name} has been closed")
        if len(requests) > self.max_batch_size:
            raise HFBackendError(
                f"batch of {len(requests)} exceeds max_batch_size {self.max_batch_size}"
            )
        width, height = self.input_size
        for request in requests:
            if request.image.shape[:2] != (height, width):
                raise HFBackendError(
                    f"image is {request.image.shape[1]}x{request.image.shape[0]}, "
                    f"model input is {width}x{height}"
                )
        templates = [self.render(r) for r in requests]
        images = [r.image for r in requests]
        torch = self._torch
        with torch.inference_mode():
            if self.family in (ModelFamily.QWEN2_VL, ModelFamily.QWEN2_5_VL):
                inputs = hf_qwen2vl.qwen_image_inputs(self.image_processor, images)
                texts = [
                    t.replace(IMAGE_PLACEHOLDER, s)
                    for t, s in zip(templates, inputs.image_strings, strict=True)
                ]
                model_kwargs = inputs.model_kwargs
            else:
                tokens = self._internvl_image_string()
                texts = [t.replace(IMAGE_PLACEHOLDER, tokens) for t in templates]
                model_kwargs = {"pixel_values": hf_internvl.normalize_imagenet(images)}
            self.last_texts = tuple(texts)
            encoded = self.tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            )
            input_ids = encoded["input_ids"].to(self._device)
            attention_mask = encoded["attention_mask"].to(self._device)
            output = self._run(input_ids, attention_mask, model_kwargs)
        return [self._decode(row) for row in output]

    def _internvl_image_string(self) -> str:
        if self.family is ModelFamily.INTERNVL_CHAT:
            return hf_internvl.image_token_string(self._image_tokens)
        tok = self.tokenizer
        context = tok.convert_ids_to_tokens(int(self.model.config.image_token_id))
        if not isinstance(context, str):
            raise HFBackendError(f"{self.model_dir.name}: image_token_id is not one token")
        start = getattr(tok, "start_image_token", None) or hf_internvl.IMG_START
        end = getattr(tok, "end_image_token", None) or hf_internvl.IMG_END
        return hf_internvl.image_token_string(
            self._image_tokens, start=start, context=context, end=end
        )

    def _generation_kwargs(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": 1,
            "do_sample": False,
            "num_beams": 1,
            "eos_token_id": self._stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }

    def _run(self, input_ids: Any, attention_mask: Any, model_kwargs: dict[str, Any]) -> Any:
        torch = self._torch
        dtype = self.model.dtype
        kwargs = self._generation_kwargs()
        if self.family in (ModelFamily.QWEN2_VL, ModelFamily.QWEN2_5_VL):
            pixel = {k: v.to(self._device) for k, v in model_kwargs.items()}
            pixel["pixel_values"] = pixel["pixel_values"].to(dtype)
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **pixel, **kwargs
            )
            return self._new_tokens(output, input_ids)
        pixels = model_kwargs["pixel_values"]
        embeds = None
        if self._vision_embedder is not None:
            embeds = np.asarray(self._vision_embedder(pixels), dtype=np.float32)
            expected = (pixels.shape[0], self._image_tokens)
            if embeds.ndim != 3 or embeds.shape[:2] != expected:
                raise HFBackendError(
                    f"vision embedder returned shape {embeds.shape}, expected "
                    f"{expected} + (hidden,)"
                )
            embeds = torch.from_numpy(embeds).to(self._device, dtype)
        pixel_values = torch.from_numpy(pixels).to(self._device, dtype)
        if self.family is ModelFamily.INTERNVL_CHAT:
            if embeds is not None:
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    visual_features=embeds,
                    **kwargs,
                )
            else:
                output = self.model.generate(
                    pixel_values=pixel_values,
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    **kwargs,
                )
            return self._new_tokens(output, input_ids)
        if embeds is None:
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                **kwargs,
            )
            return self._new_tokens(output, input_ids)
        inputs_embeds = self.model.get_input_embeddings()(input_ids).clone()
        mask = input_ids == int(self.model.config.image_token_id)
        inputs_embeds[mask] = embeds.reshape(-1, embeds.shape[-1])
        output = self.model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
        )
        return self._new_tokens(output, input_ids)

    def _new_tokens(self, output: Any, input_ids: Any) -> Any:
        """Generated tokens only (``generate`` with ``input_ids`` echoes the prompt, with embeddings
        not)."""
        length = input_ids.shape[1]
        if output.shape[1] >= length and self._torch.equal(
            output[:, :length].to(input_ids.device), input_ids
        ):
            return output[:, length:]
        return output

    def _decode(self, tokens: Any) -> str:
        text = self.tokenizer.decode(tokens.tolist(), skip_special_tokens=False)
        if not isinstance(text, str):
            raise HFBackendError(
                f"{self.model_dir.name}'s tokenizer decoded one sequence to {type(text)}"
            )
        cut = len(text)
        for stop in self._stop_strings:
            index = text.find(stop)
            if index != -1:
                cut = min(cut, index)
        text = text[:cut]
        pad = self.tokenizer.pad_token
        if pad:
            text = text.replace(pad, "")
        return text.strip()

    def close(self) -> None:
        """Drop the model so its (GPU) memory can be freed."""
        self.model = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
