"""HFGroundingVLM end to end on tiny randomly initialised checkpoints.

The checkpoints are built here from configs (1 layer, hidden size 32) with a
WordLevel tokenizer trained on a few words plus the special tokens, saved with
``save_pretrained`` and loaded back through the adapter exactly as a real
checkpoint directory would be: nothing is downloaded. What the model writes is
random; what is checked is what it was fed (chat template, MedRegA prompt,
image tokens) and that its output comes back as text the parser can read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine.backends import hf_internvl
from engine.backends.hf_backend import HFBackendError, HFGroundingVLM, ModelFamily, detect_family
from engine.backends.vision_onnx import OnnxVisionEmbedder, export_vision_tower
from engine.model import GenerationRequest
from engine.prompts import build_prompt
from engine.report import Task

SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<ref>", "</ref>", "<box>", "</box>",
]
CORPUS = (
    "right lung left lung no focal consolidation 102 106 481 910 [ ] , : system user assistant 右肺"
)
# ChatML with newlines, as transformers-native InternVL and Qwen2-VL checkpoints ship it.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] "
    "}}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def _tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([CORPUS], trainers.WordLevelTrainer(special_tokens=["<unk>", *SPECIAL]))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL})
    if chat_template:
        fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    """A transformers-native InternVL checkpoint: 56x56 input, 4 image tokens."""
    path = tmp_path_factory.mktemp("internvl")
    tok = _tokenizer(CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = transformers.InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=64,
            num_hidden_layers=1,
            image_size=[56, 56],
            patch_size=[14, 14],
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=len(tok), max_position_embeddings=512, **TINY_TEXT
        ),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
    )
    transformers.InternVLForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qwen2vl_dir(tmp_path_factory):
    """A Qwen2-VL checkpoint with its image processor (PIL backend, no torchvision needed)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = tmp_path_factory.mktemp("qwen2vl")
    tok = _tokenizer(CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = transformers.Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=512,
            rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]},
            **TINY_TEXT,
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<unk>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    transformers.Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=56 * 56 * 4, patch_size=14, merge_size=2
    ).save_pretrained(path)
    return path


def _request(
    size,
    *,
    task=Task.GROUNDED_REPORT,
    language="en",
    targets=("right lung", "left lung"),
    regions=(),
    seed=0,
):
    image = np.random.default_rng(seed).random((size[1], size[0], 3), dtype=np.float32)
    return GenerationRequest(
        image=image, task=task, language=language, targets=tuple(targets), regions=tuple(regions)
    )


def _record_generate(monkeypatch, model):
    calls = []
    original = model.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(model.model, "generate", spy)
    return calls


def _parse(text: str):
    from engine.grammar import parse_grounded_text

    result = parse_grounded_text(text)  # random text: phrases and/or problems, never an exception
    assert isinstance(result.phrases, tuple) and isinstance(result.problems, tuple)
    return result


# -- refusing what is not a local checkpoint -------------------------------------------------


def test_hub_ids_are_refused_without_any_download():
    with pytest.raises(HFBackendError, match="hub id.*local"):
        HFGroundingVLM("Luxuriant16/medrega")


def test_missing_directory_and_unknown_model_type_are_refused(tmp_path):
    with pytest.raises(HFBackendError, match="does not exist"):
        HFGroundingVLM(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(HFBackendError, match="unsupported model_type 'bert'"):
        detect_family(tmp_path)


def test_remote_code_checkpoint_needs_explicit_trust(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "internvl_chat", "architectures": ["InternVLChatModel"]})
    )
    assert detect_family(tmp_path) is ModelFamily.INTERNVL_CHAT
    with pytest.raises(HFBackendError, match="trust_remote_code=True"):
        HFGroundingVLM(tmp_path)


# -- transformers-native InternVL ------------------------------------------------------------


def test_internvl_prompt_template_and_image_tokens(internvl_dir, monkeypatch):
    vlm = HFGroundingVLM(internvl_dir, max_new_tokens=6)
    assert vlm.family is ModelFamily.INTERNVL and vlm.input_size == (56, 56)
    calls = _record_generate(monkeypatch, vlm)
    request = _request(vlm.input_size)
    (text,) = vlm.generate([request])
    assert isinstance(text, str)

    question = build_prompt(request).replace("<image>", "<img>" + "<IMG_CONTEXT>" * 4 + "</img>")
    expected = (
        "<|im_start|>system\nYou are a helpful "
        f"assistant.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert vlm.last_texts == (expected,)
    (call,) = calls
    ids = call["input_ids"][0]
    assert int((ids == vlm.model.config.image_token_id).sum()) == 4
    assert "<ref> right lung </ref> , <ref> left lung </ref> <|im_end|>" in vlm.tokenizer.decode(
        ids, skip_special_tokens=False
    )
    assert call["do_sample"] is False and call["num_beams"] == 1
    assert tuple(call["pixel_values"].shape) == (1, 3, 56, 56)
    # ImageNet normalisation of the stretched 56x56 input
    expected_pixels = (request.image - hf_internvl.IMAGENET_MEAN) / hf_internvl.IMAGENET_STD
    np.testing.assert_allclose(
        call["pixel_values"][0].permute(1, 2, 0).numpy(), expected_pixels, rtol=1e-5, atol=1e-5
    )


def test_internvl_batch_is_greedy_and_deterministic(internvl_dir):
    vlm = HFGroundingVLM(internvl_dir, max_new_tokens=5, max_batch_size=2)
    zh = _request(vlm.input_size, language="zh-CN", targets=["右肺"], seed=1)
    en = _request(vlm.input_size, task=Task.REPORT, targets=(), seed=2)
    batch = vlm.generate([zh, en])
    assert len(batch) == 2
    assert vlm.generate([zh]) == batch[:1]  # left padding does not change a greedy answer
    assert "请定位并描述这张医学影像中的<ref>右肺</ref>" in vlm.last_texts[0]
    for text in batch:
        _parse(text)


def test_model_version_follows_the_checkpoint(internvl_dir, tmp_path):
    import shutil

    from engine.backends.hf_backend import checkpoint_version

    copy = tmp_path / "copy"
    shutil.copytree(internvl_dir, copy)
    assert checkpoint_version(copy) == checkpoint_version(internvl_dir)
    config = json.loads((copy / "config.json").read_text())
    config["image_seq_length"] = 4  # same value, re-serialised differently: a different file
    (copy / "config.json").write_text(json.dumps(config, indent=1))
    assert checkpoint_version(copy) != checkpoint_version(internvl_dir)
    vlm = HFGroundingVLM(internvl_dir, max_new_tokens=1)
    assert vlm.info.version == checkpoint_version(internvl_dir)
    vlm.close()
    with pytest.raises(HFBackendError, match="closed"):
        vlm.generate([_request((56, 56))])


def test_wrong_image_size_and_oversized_batch_are_refused(internvl_dir):
    vlm = HFGroundingVLM(internvl_dir, max_new_tokens=2)
    with pytest.raises(HFBackendError, match="model input is 56x56"):
        vlm.generate([_request((64, 56))])
    with pytest.raises(HFBackendError, match="max_batch_size"):
        vlm.generate([_request((56, 56))] * 2)
    with pytest.raises(HFBackendError, match="takes \\(56, 56\\)"):
        HFGroundingVLM(internvl_dir, input_size=(448, 448))


def test_vision_tower_onnx_matches_torch_and_serves_generation(internvl_dir, tmp_path):
    vlm = HFGroundingVLM(internvl_dir, max_new_tokens=6)
    onnx_path = export_vision_tower(vlm, tmp_path / "vision.onnx")
    embedder = OnnxVisionEmbedder(onnx_path)
    # batch 3 != export's 2
    pixels = hf_internvl.normalize_imagenet([_request((56, 56), seed=s).image for s in range(3)])
    from engine.backends.vision_onnx import vision_tower_module

    with torch.no_grad():
        reference = vision_tower_module(vlm)(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(embedder(pixels), reference, rtol=1e-4, atol=1e-5)

    request = _request((56, 56), seed=4)
    split = HFGroundingVLM(internvl_dir, max_new_tokens=6, vision_embedder=embedder)
    assert split.generate([request]) == vlm.generate([request])


# -- Qwen2-VL --------------------------------------------------------------------------------


def test_qwen2vl_prompt_and_image_pad_count(qwen2vl_dir, monkeypatch):
    vlm = HFGroundingVLM(
        qwen2vl_dir, max_new_tokens=6, input_size=(56, 56), system_message="Be brief."
    )
    assert vlm.family is ModelFamily.QWEN2_VL
    calls = _record_generate(monkeypatch, vlm)
    request = _request((56, 56), task=Task.TEXT_TO_REGION, targets=["right lung"])
    (text,) = vlm.generate([request])
    _parse(text)
    (call,) = calls
    grid = call["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4]]
    pads = int(grid.prod()) // 4
    question = build_prompt(request).replace(
        "<image>", "<|vision_start|>" + "<|image_pad|>" * pads + "<|vision_end|>"
    )
    assert vlm.last_texts == (
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        ),
    )
    assert int((call["input_ids"][0] == vlm.model.config.image_token_id).sum()) == pads


def test_chat_template_kept_by_the_processor_is_used(qwen2vl_dir, tmp_path):
    import shutil

    moved = tmp_path / "qwen"
    shutil.copytree(qwen2vl_dir, moved)
    config = json.loads((moved / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (moved / "tokenizer_config.json").write_text(json.dumps(config))
    (moved / "chat_template.jinja").unlink(missing_ok=True)
    (moved / "chat_template.json").write_text(
        json.dumps({"chat_template": CHAT_TEMPLATE.replace("helpful", "processor")})
    )
    vlm = HFGroundingVLM(moved, max_new_tokens=1, input_size=(56, 56))
    vlm.generate([_request((56, 56), task=Task.REPORT, targets=())])
    assert vlm.last_texts[0].startswith(
        "<|im_start|>system\nYou are a processor assistant.<|im_end|>\n"
    )


def test_qwen2vl_refuses_external_vision_embedder(qwen2vl_dir):
    with pytest.raises(HFBackendError, match="InternVL families"):
        HFGroundingVLM(qwen2vl_dir, vision_embedder=lambda x: x)


# -- InternVL-chat (MedRegA) -----------------------------------------------------------------


class _FakeInternVLChat:
    """Stands in for MedRegA's remote InternVLChatModel: same config fields and generate()."""

    def __init__(self, tokenizer, answer: str):
        self.config = SimpleNamespace(
            template="Hermes-2", force_image_size=448, downsample_ratio=0.5,
            vision_config=SimpleNamespace(image_size=448, patch_size=14),
        )
        self.dtype = torch.float32
        self.img_context_token_id = None
        self.calls = []
        self._answer = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def to(self, device):
        return self

    def eval(self):
        return self

    def generate(self, **kwargs):  # like InternVLChatModel.generate: returns new tokens only
        self.calls.append(kwargs)
        return self._answer.repeat(kwargs["input_ids"].shape[0], 1)


@pytest.fixture()
def medrega_dir(tmp_path, monkeypatch):
    tok = _tokenizer(None)
    tok.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "internvl_chat", "template": "Hermes-2"})
    )
    fake = _FakeInternVLChat(
        tok,
        "<ref> right lung </ref> <box> [ [ 102 , 106 , 481 , 910 ] ] </box> : no <|im_end|> left",
    )
    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        return fake

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", from_pretrained)
    return tmp_path, fake, seen


def test_medrega_prompt_is_hermes2_with_256_image_tokens(medrega_dir):
    path, fake, seen = medrega_dir
    vlm = HFGroundingVLM(path, trust_remote_code=True)
    assert seen["trust_remote_code"] is True and seen["local_files_only"] is True
    assert vlm.input_size == (448, 448)
    request = _request((448, 448))
    (text,) = vlm.generate([request])
    question = build_prompt(request).replace(
        "<image>", "<img>" + "<IMG_CONTEXT>" * 256 + "</img>", 1
    )
    assert vlm.last_texts[0] == (
        "<|im_start|>system\n" + hf_internvl.HERMES2_SYSTEM_MESSAGE + "<|im_end|>"
        "<|im_start|>user\n" + question + "<|im_end|><|im_start|>assistant\n"
    )
    (call,) = fake.calls
    assert fake.img_context_token_id == vlm.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert call["max_new_tokens"] == 400 and call["num_beams"] == 1 and call["do_sample"] is False
    assert vlm.tokenizer.convert_tokens_to_ids("<|im_end|>") in call["eos_token_id"]
    assert tuple(call["pixel_values"].shape) == (1, 3, 448, 448)
    # the answer is cut at the end-of-turn token and returned as written
    assert text == "<ref> right lung </ref> <box> [ [ 102 , 106 , 481 , 910 ] ] </box> : no"
    (phrase,) = _parse(text).phrases
    assert phrase.labels == ("right lung",) and tuple(phrase.boxes[0]) == (102, 106, 481, 910)


def test_medrega_takes_visual_features_from_an_external_tower(medrega_dir):
    path, fake, _ = medrega_dir
    embeds = np.ones((1, 256, 8), np.float32)
    vlm = HFGroundingVLM(path, trust_remote_code=True, vision_embedder=lambda pixels: embeds)
    vlm.generate([_request((448, 448))])
    (call,) = fake.calls
    assert "pixel_values" not in call
    np.testing.assert_array_equal(call["visual_features"].numpy(), embeds)
    bad = HFGroundingVLM(
        path, trust_remote_code=True, vision_embedder=lambda pixels: embeds[:, :10]
    )
    with pytest.raises(HFBackendError, match="expected \\(1, 256\\)"):
        bad.generate([_request((448, 448))])


# -- MedRegA's region tasks: the exact prompts the model is sent -------------------------------

MEDREGA_MD = Path(__file__).resolve().parents[4].parent / "shared" / "MEDREGA.md"


def _medrega_prompt(label: str) -> str:
    """One prompt of MEDREGA.md's "Prompts" list (``\\n`` as written there)."""
    if not MEDREGA_MD.is_file():
        pytest.fail(f"{MEDREGA_MD} not found; CI puts shared/ beside the repository")
    section = MEDREGA_MD.read_text(encoding="utf-8").split("## Prompts", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = re.match(r"^- ([^:]+): `([^`]*)`", line)
        if match and match.group(1).strip() == label:
            return match.group(2).replace("\\n", "\n")
    raise AssertionError(f"no {label!r} prompt in {MEDREGA_MD}")


def _sent_question(vlm) -> str:
    """The user turn of the last text sent, image tokens put back to ``<image>``."""
    (text,) = vlm.last_texts
    user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    return user.replace("<img>" + "<IMG_CONTEXT>" * 256 + "</img>", "<image>", 1)


def test_medrega_region_to_text_sends_medregas_prompt(medrega_dir):
    path, fake, _ = medrega_dir
    vlm = HFGroundingVLM(path, trust_remote_code=True, modality_phrase="CT scan")
    vlm.generate([_request((448, 448), task=Task.REGION_TO_TEXT, targets=(),
                           regions=[(421, 351, 505, 470)])])
    assert _sent_question(vlm) == _medrega_prompt("Region→text")
    assert len(fake.calls) == 1


def test_medrega_text_to_region_sends_medregas_prompt(medrega_dir):
    path, _, _ = medrega_dir
    vlm = HFGroundingVLM(path, trust_remote_code=True, modality_phrase="MRI scan")
    vlm.generate([_request((448, 448), task=Task.TEXT_TO_REGION,
                           targets=["carotid vessel wall"])])
    assert _sent_question(vlm) == _medrega_prompt("Text→region")


def test_medrega_region_tasks_on_a_chest_radiograph_in_both_languages(medrega_dir):
    path, _, _ = medrega_dir
    vlm = HFGroundingVLM(path, trust_remote_code=True)  # the default: a chest x-ray image
    box_rule = (
        "[x1, y1, x2, y2]，整数范围从0到999。"
        "这些值分别对应左上角的x，左上角的y，右下角的x和右下角的y。"
    )
    expected = {
        (Task.REGION_TO_TEXT, "en"): _medrega_prompt("Region→text").replace(
            "[[421, 351, 505, 470]]", "[[200, 400, 900, 850]]"
        ).replace("CT scan", "chest x-ray image"),
        (Task.TEXT_TO_REGION, "en"): _medrega_prompt("Text→region").replace(
            "carotid vessel wall", "cardiomegaly"
        ).replace("MRI scan", "chest x-ray image"),
        # RadGround's wording (MedRegA publishes none in Chinese for these two tasks)
        (Task.REGION_TO_TEXT, "zh-CN"): (
            "你是一个医疗助手，你的任务是目标识别。你需要识别给定区域中的目标。区域用边界框的形式表示，"
            + box_rule
            + "<image>\n这张医学影像中的<ref>这个</ref><box>[[200, 400, 900, 850]]</box>是什么？"
        ),
        (Task.TEXT_TO_REGION, "zh-CN"): (
            "你是一个医疗助手，你的任务是目标检测。你需要找到给定目标的所有区域。区域用边界框的形式表示，"
            + box_rule
            + "对于每个目标，请使用这种格式用边界框表示区域："
            + '"<ref>目标</ref><box>[[x1, y1, x2, y2]]</box>"。'
            + "<image>\n请定位这张医学影像中的<ref>心影增大</ref>"
        ),
    }
    for (task, language), prompt in expected.items():
        if task is Task.REGION_TO_TEXT:
            request = _request((448, 448), task=task, language=language, targets=(),
                               regions=[(200, 400, 900, 850)])
        else:
            target = "cardiomegaly" if language == "en" else "心影增大"
            request = _request((448, 448), task=task, language=language, targets=[target])
        vlm.generate([request])
        assert _sent_question(vlm) == prompt, (task, language)
