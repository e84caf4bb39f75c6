"""Training runs reproducibly from a seed; targets are right; export gives a loadable ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.default_model import CLASSES, INPUT_SIZE, OUTPUT_STRIDE
from engine.default_model.data import load_dataset, split_by_patient
from engine.default_model.train import (
    TrainConfig,
    _load_split,
    build_model,
    build_targets,
    centernet_loss,
    seed_everything,
    train_steps,
)


@pytest.fixture(scope="module")
def tiny_split(shared_data: Path):
    root = shared_data / "nih-cxr-boxes"
    train, _ = split_by_patient(load_dataset(root), seed=0)
    return _load_split(root, train[:4])


def _run(tiny_split, seed: int) -> tuple[list[float], torch.nn.Module]:
    torch.set_num_threads(1)
    seed_everything(seed)
    model = build_model()
    images, boxes, labels = tiny_split
    config = TrainConfig(seed=seed, batch_size=4, views=2, warmup_steps=1, threads=1)
    return train_steps(model, images, boxes, labels, config=config, steps=2, progress=False), model


def test_same_seed_same_losses_and_weights(tiny_split) -> None:
    losses_a, model_a = _run(tiny_split, seed=7)
    losses_b, model_b = _run(tiny_split, seed=7)
    assert all(np.isfinite(losses_a))
    assert losses_a == losses_b
    head_a, head_b = model_a.heatmap[-1].weight, model_b.heatmap[-1].weight
    assert torch.equal(head_a, head_b)
    fresh = build_model(pretrained=False).heatmap[-1].weight
    assert not torch.equal(head_a, fresh)  # training moved the weights
    losses_c, _ = _run(tiny_split, seed=8)
    assert losses_c != losses_a  # the seed drives augmentation and order


def test_frozen_trunk_is_not_trained(tiny_split) -> None:
    _, trained = _run(tiny_split, seed=7)
    reference = build_model()
    assert torch.equal(trained.backbone._conv_stem.weight, reference.backbone._conv_stem.weight)
    assert torch.equal(
        trained.backbone._blocks[4]._project_conv.weight,
        reference.backbone._blocks[4]._project_conv.weight,
    )
    assert not torch.equal(
        trained.backbone._blocks[15]._project_conv.weight,
        reference.backbone._blocks[15]._project_conv.weight,
    )


def test_targets_peak_at_box_centres_with_size_and_offset() -> None:
    box = np.array([[100.0, 60.0, 200.0, 120.0]], np.float32)
    grid = (INPUT_SIZE[1] // OUTPUT_STRIDE, INPUT_SIZE[0] // OUTPUT_STRIDE)
    targets = build_targets([box], [np.array([CLASSES.index("Mass")])], grid=grid)
    heat = targets["heatmap"][0]
    cx, cy = 150 / OUTPUT_STRIDE, 90 / OUTPUT_STRIDE
    assert heat[CLASSES.index("Mass"), int(cy), int(cx)] == 1.0
    assert heat[CLASSES.index("Mass")].sum() > 1.0  # Gaussian, not a single cell
    assert heat[CLASSES.index("Nodule")].max() == 0.0
    assert targets["mask"].sum() == 1
    np.testing.assert_allclose(
        targets["size"][0, :, int(cy), int(cx)], [100 / OUTPUT_STRIDE, 60 / OUTPUT_STRIDE]
    )
    np.testing.assert_allclose(
        targets["offset"][0, :, int(cy), int(cx)], [cx - int(cx), cy - int(cy)]
    )


def test_a_present_but_unboxed_finding_is_not_taught_as_absent() -> None:
    """An image whose labels name Effusion without a box: its Effusion channel has no negative
    loss."""
    grid = (INPUT_SIZE[1] // OUTPUT_STRIDE, INPUT_SIZE[0] // OUTPUT_STRIDE)
    box = [np.array([[100.0, 60.0, 200.0, 120.0]], np.float32)]
    label = [np.array([CLASSES.index("Mass")])]
    effusion = CLASSES.index("Effusion")
    partial = build_targets(box, label, grid=grid, unboxed=[np.array([effusion])])
    assert partial["ignore"][0].tolist() == [
        1.0 if c == effusion else 0.0 for c in range(len(CLASSES))
    ]
    full = build_targets(box, label, grid=grid)
    assert full["ignore"].sum() == 0
    for name in ("heatmap", "mask", "size", "offset"):
        assert torch.equal(partial[name], full[name])

    def loss(targets, effusion_logit: float) -> float:
        logits = torch.full((1, len(CLASSES), *grid), -4.0)
        logits[0, effusion] = effusion_logit
        zeros = torch.zeros((1, 2, *grid))
        return float(centernet_loss((logits, zeros, zeros), targets)[0])

    # A confident Effusion response everywhere costs nothing more when Effusion is unboxed ...
    assert loss(partial, 3.0) == pytest.approx(loss(partial, -4.0))
    # ... and is punished when the image is a true negative for it.
    assert loss(full, 3.0) > loss(full, -4.0) + 1.0


def test_export_gives_an_onnx_that_matches_torch_and_carries_metadata(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.default_model.export import export_onnx

    torch.set_num_threads(1)
    weights = tmp_path / "weights.pt"
    torch.save(build_model(pretrained=False).state_dict(), weights)
    path = export_onnx(  # raises if ORT != torch
        weights,
        tmp_path / "m.onnx",
        score_threshold=0.42,
        class_thresholds={"Nodule": 0.2, "Cardiomegaly": 0.6},
    )
    detector = OnnxDetector(path, intra_op_threads=1)
    assert detector.score_threshold == pytest.approx(0.42)
    thresholds = detector.class_score_thresholds
    assert list(thresholds) == list(CLASSES)
    assert (thresholds["Nodule"], thresholds["Cardiomegaly"], thresholds["Mass"]) == pytest.approx(
        (0.2, 0.6, 0.42)
    )
    assert detector.info.name == "m"
    import onnx

    assert onnx.load(str(path)).opset_import[0].version >= 17


def test_class_thresholds_are_read_from_an_evaluation_or_a_plain_file(tmp_path: Path) -> None:
    import json

    from engine.default_model.export import read_class_thresholds

    evaluation = tmp_path / "tuning.json"
    evaluation.write_text(
        json.dumps({"threshold": 0.3, "class_thresholds": {"Mass": 0.25, "Atelectasis": 0.5}})
    )
    assert read_class_thresholds(evaluation) == {"Atelectasis": 0.5, "Mass": 0.25}  # in class order
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"Effusion": 0.35}))
    assert read_class_thresholds(plain) == {"Effusion": 0.35}
    for text, reason in (
        ('{"Bronchitis": 0.3}', "unknown classes"),
        ('{"Mass": 1.0}', "in \\(0, 1\\)"),
        ('["Mass"]', "JSON object"),
        ("{", "cannot read"),
    ):
        plain.write_text(text)
        with pytest.raises(ValueError, match=reason):
            read_class_thresholds(plain)
