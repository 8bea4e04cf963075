"""Built-in architectures: LeNet-5, CIFAR-style ResNet-10/18, and (models.modern)
MobileNetV2 with or without squeeze-excitation, ImageNet ResNet-50, Vision Transformers and an
LSTM row-by-row image classifier.

LeNet-5 and the ResNet-10/18 use only Conv2d, BatchNorm2d, ReLU, MaxPool2d, AdaptiveAvgPool2d,
Flatten, Linear and tensor add, take inputs in [0, 1] with no normalisation layer, and give
every ReLU its own module so that each activation has a distinct, readable name.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ARCHITECTURES: tuple[str, ...] = ("lenet5", "resnet10", "resnet18", "mobilenetv2",
                                  "mobilenetv2-se", "resnet50", "vit", "vit-s16", "lstm")

_RESNET_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "resnet10": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
}


class LeNet5(nn.Module):
    """Classic LeNet-5 with ReLU and max pooling; the flatten size follows ``input_size``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        # conv1 keeps the size (padding 2), pool halves, conv2 (k=5) removes 4, pool halves.
        side = (input_size // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"lenet5 needs input_size >= 12, got {input_size}")
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(6, 16, kernel_size=5),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
            )
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(16 * side * side, 120),
                relu3=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu4=nn.ReLU(),
                fc3=nn.Linear(84, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        # No nn.Identity for the plain shortcut: it would show up as an extra module in traces.
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(planes),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return self.relu2(out)


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem without max pooling, four stages of basic blocks."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        in_planes = width
        for stage, (n_blocks, stride) in enumerate(zip(blocks, (1, 2, 2, 2), strict=True)):
            planes = width * 2**stage
            layer = []
            for i in range(n_blocks):
                layer.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.fc(self.flatten(self.avgpool(x)))


def build_model(
    arch: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    width: int = 64,
    input_size: int = 28,
) -> nn.Module:
    """Build a zoo architecture with freshly initialised weights.

    ``width``: the ResNets' stage widths (w, 2w, 4w, 8w; ResNet-50's bottlenecks w…8w), and
    MobileNetV2's channels (w / 32 times the standard ones) — 64 everywhere by default, so
    MobileNetV2 defaults to twice the standard 32-channel stem unless width=32 is given.
    ``input_size``: LeNet-5's flatten size, the ViT's image size, the LSTM's row length. Seed
    torch beforehand for reproducible initial weights.
    """
    sizes = {"in_channels": in_channels, "num_classes": num_classes, "width": width}
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if arch == "lenet5":
        return LeNet5(in_channels=in_channels, num_classes=num_classes, input_size=input_size)
    if arch in _RESNET_BLOCKS:
        return ResNet(
            _RESNET_BLOCKS[arch], in_channels=in_channels, num_classes=num_classes, width=width
        )
    from . import modern

    if arch in ("mobilenetv2", "mobilenetv2-se"):
        return modern.MobileNetV2(in_channels, num_classes, width / 32,
                                  se=arch.endswith("-se"))
    if arch == "resnet50":
        return modern.ResNet50(in_channels, num_classes, width)
    if arch == "vit":
        return modern.VisionTransformer(in_channels, num_classes, image_size=input_size,
                                        patch=4 if input_size % 4 == 0 else input_size)
    if arch == "vit-s16":
        return modern.VisionTransformer(in_channels, num_classes, image_size=input_size,
                                        patch=16, dim=384, depth=12, heads=6)
    if arch == "lstm":
        return modern.LSTMClassifier(in_channels, num_classes, input_size)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
