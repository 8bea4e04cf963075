"""CIFAR-style CNNs of osmr/imgclsmob ``pytorch/pytorchcv/models`` (and the original WRN),
written with pytorchcv's blocks: NIN, WRN, PreResNet, DIA-ResNet, PyramidNet, Shake-Shake,
CBAM-ResNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import entry

# ------------------------------------------------------------- pytorchcv common blocks


class ConvBlock(nn.Module):
    """pytorchcv common.ConvBlock: optional ZeroPad2d, conv, BN, activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int | tuple[int, int, int, int], groups: int = 1, bias: bool = False,
                 activation: bool = True) -> None:
        super().__init__()
        self.activate = activation
        self.use_pad = isinstance(padding, list | tuple) and (len(padding) == 4)
        if self.use_pad:
            self.pad = nn.ZeroPad2d(padding=padding)
            padding = 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(num_features=out_channels)
        if self.activate:
            self.activ = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_pad:
            x = self.pad(x)
        x = self.conv(x)
        x = self.bn(x)
        if self.activate:
            x = self.activ(x)
        return x


def conv1x1_block(in_channels: int, out_channels: int, stride: int = 1,
                  activation: bool = True) -> ConvBlock:
    return ConvBlock(in_channels, out_channels, 1, stride, 0, activation=activation)


def conv3x3_block(in_channels: int, out_channels: int, stride: int = 1, padding: int = 1,
                  activation: bool = True) -> ConvBlock:
    return ConvBlock(in_channels, out_channels, 3, stride, padding, activation=activation)


def conv7x7_block(in_channels: int, out_channels: int, stride: int = 1,
                  activation: bool = True) -> ConvBlock:
    return ConvBlock(in_channels, out_channels, 7, stride, 3, activation=activation)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                     bias=False)


class ResBlock(nn.Module):
    """pytorchcv resnet.ResBlock."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3_block(in_channels, out_channels, stride=stride)
        self.conv2 = conv3x3_block(out_channels, out_channels, activation=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        return x


class ResBottleneck(nn.Module):
    """pytorchcv resnet.ResBottleneck."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 conv1_stride: bool = False, bottleneck_factor: int = 4) -> None:
        super().__init__()
        mid_channels = out_channels // bottleneck_factor
        self.conv1 = conv1x1_block(in_channels, mid_channels,
                                   stride=(stride if conv1_stride else 1))
        self.conv2 = conv3x3_block(mid_channels, mid_channels,
                                   stride=(1 if conv1_stride else stride))
        self.conv3 = conv1x1_block(mid_channels, out_channels, activation=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        return x


class ResInitBlock(nn.Module):
    """pytorchcv resnet.ResInitBlock: 7x7/2 conv block and 3x3/2 max pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv7x7_block(in_channels, out_channels, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.pool(x)
        return x


class PreConvBlock(nn.Module):
    """pytorchcv common.PreConvBlock: BN, ReLU, conv; optionally returns the pre-activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, return_preact: bool = False, activate: bool = True) -> None:
        super().__init__()
        self.return_preact = return_preact
        self.activate = activate
        self.bn = nn.BatchNorm2d(num_features=in_channels)
        if self.activate:
            self.activ = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              bias=False)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x = self.bn(x)
        if self.activate:
            x = self.activ(x)
        if self.return_preact:
            x_pre_activ = x
        x = self.conv(x)
        if self.return_preact:
            return x, x_pre_activ
        return x


def pre_conv3x3_block(in_channels: int, out_channels: int, stride: int = 1,
                      return_preact: bool = False, activate: bool = True) -> PreConvBlock:
    return PreConvBlock(in_channels, out_channels, 3, stride, 1, return_preact, activate)


class PreResActivation(nn.Module):
    """pytorchcv preresnet.PreResActivation."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features=in_channels)
        self.activ = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(x)
        x = self.activ(x)
        return x


# ---------------------------------------------------------------------------------- NIN


class NINConv(nn.Module):
    """pytorchcv nin_cifar.NINConv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        self.activ = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.activ(x)
        return x


class CIFARNIN(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/nin_cifar.py."""

    def __init__(self, channels: list[list[int]], first_kernel_sizes: list[int],
                 in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        for i, channels_per_stage in enumerate(channels):
            stage = nn.Sequential()
            for j, out_channels in enumerate(channels_per_stage):
                if (j == 0) and (i != 0):
                    if i == 1:
                        stage.add_module(f"pool{i + 1}",
                                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
                    else:
                        stage.add_module(f"pool{i + 1}",
                                         nn.AvgPool2d(kernel_size=3, stride=2, padding=1))
                    stage.add_module(f"dropout{i + 1}", nn.Dropout(p=0.5))
                kernel_size = first_kernel_sizes[i] if j == 0 else 1
                padding = (kernel_size - 1) // 2
                stage.add_module(f"unit{j + 1}", NINConv(in_channels, out_channels,
                                                         kernel_size=kernel_size,
                                                         padding=padding))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.output = nn.Sequential()
        self.output.add_module("final_conv", NINConv(in_channels, num_classes, kernel_size=1))
        self.output.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.output(x)
        x = x.view(x.size(0), -1)
        return x


@entry("nin_cifar", (3, 32, 32), "osmr/imgclsmob pytorch/pytorchcv/models/nin_cifar.py",
       ("conv2d 5x5/1x1", "relu inplace", "maxpool / avgpool with padding", "dropout",
        "relu at the logits", "avgpool 8x8", "x.view(x.size(0), -1)"))
def nin_cifar() -> nn.Module:
    """NIN-CIFAR10 of pytorchcv nin_cifar.py with channels / 12."""
    return CIFARNIN([[16, 12, 8], [16, 16, 16], [16, 16]], [5, 5, 3], num_classes=10)


# ---------------------------------------------------------------------------------- WRN


class WRNBasicBlock(nn.Module):
    """xternalz/WideResNet-pytorch wideresnet.BasicBlock (``torch.add`` shortcut,
    ``F.dropout``)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int,
                 dropRate: float = 0.0) -> None:  # noqa: N803 (the original's name)
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False) or None

    def forward(self, x: Tensor) -> Tensor:
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    """xternalz/WideResNet-pytorch wideresnet.NetworkBlock."""

    def __init__(self, nb_layers: float, in_planes: int, out_planes: int, stride: int,
                 dropRate: float = 0.0) -> None:  # noqa: N803
        super().__init__()
        layers = []
        for i in range(int(nb_layers)):
            layers.append(WRNBasicBlock(i == 0 and in_planes or out_planes, out_planes,
                                        i == 0 and stride or 1, dropRate))
        self.layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """xternalz/WideResNet-pytorch wideresnet.py (the WRN of pytorchcv's wrn_cifar lineage)."""

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1,
                 dropRate: float = 0.0) -> None:  # noqa: N803
        super().__init__()
        nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]  # noqa: N806
        assert (depth - 4) % 6 == 0
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, nChannels[0], nChannels[1], 1, dropRate)
        self.block2 = NetworkBlock(n, nChannels[1], nChannels[2], 2, dropRate)
        self.block3 = NetworkBlock(n, nChannels[2], nChannels[3], 2, dropRate)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(nChannels[3], num_classes)
        self.nChannels = nChannels[3]

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


@entry("wrn_cifar", (3, 32, 32),
       "xternalz/WideResNet-pytorch wideresnet.py (as used by pytorchcv wrn_cifar)",
       ("pre-activation blocks", "torch.add shortcut", "F.dropout(training=self.training)",
        "F.avg_pool2d(out, 8)", "out.view(-1, C)", "1x1 shortcut conv"))
def wrn_cifar() -> nn.Module:
    """WRN-10-1 (one block per group, widths 16/16/32/64) with dropRate 0.3."""
    return WideResNet(depth=10, num_classes=10, widen_factor=1, dropRate=0.3)


# ---------------------------------------------------------------------------- PreResNet


class PreResBlock(nn.Module):
    """pytorchcv preresnet.PreResBlock (returns the block output and its pre-activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = pre_conv3x3_block(in_channels, out_channels, stride=stride,
                                       return_preact=True)
        self.conv2 = pre_conv3x3_block(out_channels, out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, x_pre_activ = self.conv1(x)
        x = self.conv2(x)
        return x, x_pre_activ


class PreResUnit(nn.Module):
    """pytorchcv preresnet.PreResUnit (identity conv on the pre-activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.resize_identity = (in_channels != out_channels) or (stride != 1)
        self.body = PreResBlock(in_channels, out_channels, stride)
        if self.resize_identity:
            self.identity_conv = conv1x1(in_channels, out_channels, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        x, x_pre_activ = self.body(x)
        if self.resize_identity:
            identity = self.identity_conv(x_pre_activ)
        x = x + identity
        return x


class CIFARPreResNet(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/preresnet_cifar.py."""

    def __init__(self, channels: list[list[int]], init_block_channels: int,
                 in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("init_block", conv3x3(in_channels, init_block_channels))
        in_channels = init_block_channels
        for i, channels_per_stage in enumerate(channels):
            stage = nn.Sequential()
            for j, out_channels in enumerate(channels_per_stage):
                stride = 2 if (j == 0) and (i != 0) else 1
                stage.add_module(f"unit{j + 1}", PreResUnit(in_channels, out_channels, stride))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("post_activ", PreResActivation(in_channels))
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))
        self.output = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.output(x)
        return x


@entry("preresnet_cifar", (3, 32, 32),
       "osmr/imgclsmob pytorch/pytorchcv/models/preresnet_cifar.py",
       ("pre-activation BN-ReLU-conv", "tuple returns (x, pre-activation)",
        "identity conv on the pre-activation", "x + identity", "avgpool 8x8", "view"))
def preresnet_cifar() -> nn.Module:
    """PreResNet-CIFAR of pytorchcv preresnet_cifar.py: 2 units per stage, 8/16/32 channels."""
    return CIFARPreResNet([[8, 8], [16, 16], [32, 32]], init_block_channels=8)


# --------------------------------------------------------------------------- DIA-ResNet


class FirstLSTMAmp(nn.Module):
    """pytorchcv diaresnet.FirstLSTMAmp."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        mid_features = in_features // 4
        self.fc1 = nn.Linear(in_features, mid_features)
        self.activ = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(mid_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.activ(x)
        x = self.fc2(x)
        return x


class DIALSTMCell(nn.Module):
    """pytorchcv diaresnet.DIALSTMCell: an LSTM cell written with Linear layers, chunk(4),
    sigmoid/tanh gates and torch.stack."""

    def __init__(self, in_x_features: int, in_h_features: int, num_layers: int,
                 dropout_rate: float = 0.1) -> None:
        super().__init__()
        out_features = 4 * in_h_features
        self.x_amps = nn.Sequential()
        self.h_amps = nn.Sequential()
        for i in range(num_layers):
            amp_class = FirstLSTMAmp if i == 0 else nn.Linear
            self.x_amps.add_module(f"amp{i + 1}", amp_class(in_x_features, out_features))
            self.h_amps.add_module(f"amp{i + 1}", amp_class(in_h_features, out_features))
            in_x_features = in_h_features
        self.dropout = nn.Dropout(p=dropout_rate)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        hy = []
        cy = []
        for i in range(len(self.x_amps._modules)):
            hx_i = h[i]
            cx_i = c[i]
            gates = self.x_amps[i](x) + self.h_amps[i](hx_i)
            i_gate, f_gate, c_gate, o_gate = gates.chunk(chunks=4, dim=1)
            i_gate = torch.sigmoid(i_gate)
            f_gate = torch.sigmoid(f_gate)
            c_gate = torch.tanh(c_gate)
            o_gate = torch.sigmoid(o_gate)
            cy_i = (f_gate * cx_i) + (i_gate * c_gate)
            hy_i = o_gate * torch.sigmoid(cy_i)
            cy.append(cy_i)
            hy.append(hy_i)
            x = self.dropout(hy_i)
        return torch.stack(hy, dim=0), torch.stack(cy, dim=0)


class DIAAttention(nn.Module):
    """pytorchcv diaresnet.DIAAttention (``forward(x, hc=None)``, ``torch.zeros_like``)."""

    def __init__(self, in_x_features: int, in_h_features: int, num_layers: int = 1) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(output_size=1)
        self.lstm = DIALSTMCell(in_x_features, in_h_features, num_layers)

    def forward(self, x: Tensor, hc: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        w = self.pool(x)
        w = w.view(w.size(0), -1)
        if hc is None:
            h = torch.zeros_like(w).unsqueeze(dim=0)
            c = torch.zeros_like(w).unsqueeze(dim=0)
        else:
            h, c = hc
        h, c = self.lstm(w, h, c)
        w = h[-1].unsqueeze(dim=2).unsqueeze(dim=3)
        x = x * w
        return x, (h, c)


class DIAResUnit(nn.Module):
    """pytorchcv diaresnet.DIAResUnit (``forward(x, hc=None)``; the attention module is shared
    by every unit of a stage)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 attention: DIAAttention) -> None:
        super().__init__()
        self.resize_identity = (in_channels != out_channels) or (stride != 1)
        self.body = ResBlock(in_channels, out_channels, stride)
        if self.resize_identity:
            self.identity_conv = conv1x1_block(in_channels, out_channels, stride=stride,
                                               activation=False)
        self.activ = nn.ReLU(inplace=True)
        self.attention = attention

    def forward(self, x: Tensor, hc: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if self.resize_identity:
            identity = self.identity_conv(x)
        else:
            identity = x
        x = self.body(x)
        x, hc = self.attention(x, hc)
        x = x + identity
        x = self.activ(x)
        return x, hc


class DualPathSequential(nn.Sequential):
    """pytorchcv common.DualPathSequential (``forward(x1, x2=None)``)."""

    def __init__(self, return_two: bool = True, first_ordinals: int = 0,
                 last_ordinals: int = 0) -> None:
        super().__init__()
        self.return_two = return_two
        self.first_ordinals = first_ordinals
        self.last_ordinals = last_ordinals

    def forward(self, x1: Tensor, x2: object = None) -> object:  # type: ignore[override]
        length = len(self._modules.values())
        for i, module in enumerate(self._modules.values()):
            if (i < self.first_ordinals) or (i >= length - self.last_ordinals):
                x1, x2 = module(x1), x2
            else:
                x1, x2 = module(x1, x2)
        if self.return_two:
            return x1, x2
        return x1


class CIFARDIAResNet(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/diaresnet_cifar.py."""

    def __init__(self, channels: list[list[int]], init_block_channels: int,
                 in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("init_block", conv3x3_block(in_channels, init_block_channels))
        in_channels = init_block_channels
        for i, channels_per_stage in enumerate(channels):
            stage = DualPathSequential(return_two=False)
            attention = DIAAttention(channels_per_stage[0], channels_per_stage[0])
            for j, out_channels in enumerate(channels_per_stage):
                stride = 2 if (j == 0) and (i != 0) else 1
                stage.add_module(f"unit{j + 1}", DIAResUnit(in_channels, out_channels, stride,
                                                            attention=attention))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))
        self.output = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.output(x)
        return x


@entry("diaresnet_cifar", (3, 32, 32),
       "osmr/imgclsmob pytorch/pytorchcv/models/diaresnet_cifar.py (+ diaresnet.py blocks)",
       ("optional forward args (hc=None, x2=None)", "torch.zeros_like", "module shared by "
        "several units", "LSTM cell of Linear layers: chunk, sigmoid, tanh, products",
        "torch.stack", "h[-1]", "x * w (two tensors)", "tuple-passing Sequential"))
def diaresnet_cifar() -> nn.Module:
    """DIA-ResNet-CIFAR of pytorchcv diaresnet_cifar.py: 2 units per stage, 8/16/32 channels."""
    return CIFARDIAResNet([[8, 8], [16, 16], [32, 32]], init_block_channels=8)


# --------------------------------------------------------------------------- PyramidNet


class PyrBlock(nn.Module):
    """pytorchcv pyramidnet.PyrBlock."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = pre_conv3x3_block(in_channels, out_channels, stride=stride, activate=False)
        self.conv2 = pre_conv3x3_block(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        return x


class PyrUnit(nn.Module):
    """pytorchcv pyramidnet.PyrUnit: identity padded with zero channels by ``F.pad``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        assert out_channels >= in_channels
        self.resize_identity = stride != 1
        self.identity_pad_width = (0, 0, 0, 0, 0, out_channels - in_channels)
        self.body = PyrBlock(in_channels, out_channels, stride)
        self.bn = nn.BatchNorm2d(num_features=out_channels)
        if self.resize_identity:
            self.identity_pool = nn.AvgPool2d(kernel_size=2, stride=stride, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        x = self.body(x)
        x = self.bn(x)
        if self.resize_identity:
            identity = self.identity_pool(identity)
        identity = F.pad(identity, pad=self.identity_pad_width)
        x = x + identity
        return x


class CIFARPyramidNet(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/pyramidnet_cifar.py."""

    def __init__(self, channels: list[list[int]], init_block_channels: int,
                 in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("init_block", conv3x3_block(in_channels, init_block_channels,
                                                             activation=False))
        in_channels = init_block_channels
        for i, channels_per_stage in enumerate(channels):
            stage = nn.Sequential()
            for j, out_channels in enumerate(channels_per_stage):
                stride = 1 if (i == 0) or (j != 0) else 2
                stage.add_module(f"unit{j + 1}", PyrUnit(in_channels, out_channels, stride))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("post_activ", PreResActivation(in_channels))
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))
        self.output = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.output(x)
        return x


@entry("pyramidnet_cifar", (3, 32, 32),
       "osmr/imgclsmob pytorch/pytorchcv/models/pyramidnet_cifar.py (PyrUnit of pyramidnet.py)",
       ("F.pad of the channel dim (zero channels)", "F.pad with zero widths",
        "avgpool ceil_mode on the identity", "pre-activation without ReLU", "x + identity"))
def pyramidnet_cifar() -> nn.Module:
    """PyramidNet-CIFAR: 2 units per stage, channels growing 8 → 26 (alpha 18)."""
    return CIFARPyramidNet([[11, 14], [17, 20], [23, 26]], init_block_channels=8)


# -------------------------------------------------------------------------- Shake-Shake


class ShakeShake(torch.autograd.Function):
    """pytorchcv shakeshakeresnet_cifar.ShakeShake (training only)."""

    @staticmethod
    def forward(ctx: object, x1: Tensor, x2: Tensor, alpha: Tensor) -> Tensor:
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx: object, dy: Tensor) -> tuple[Tensor, Tensor, None]:
        beta = torch.rand(dy.size(0), dtype=dy.dtype, device=dy.device).view(-1, 1, 1, 1)
        return beta * dy, (1 - beta) * dy, None


class ShakeShakeShortcut(nn.Module):
    """pytorchcv shakeshakeresnet_cifar.ShakeShakeShortcut: shifted second half via slicing
    and ZeroPad2d."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        assert out_channels % 2 == 0
        mid_channels = out_channels // 2
        self.pool = nn.AvgPool2d(kernel_size=1, stride=stride)
        self.conv1 = conv1x1(in_channels, mid_channels)
        self.conv2 = conv1x1(in_channels, mid_channels)
        self.bn = nn.BatchNorm2d(num_features=out_channels)
        self.pad = nn.ZeroPad2d(padding=(1, 0, 1, 0))

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.pool(x)
        x1 = self.conv1(x1)
        x2 = x[:, :, :-1, :-1].contiguous()
        x2 = self.pad(x2)
        x2 = self.pool(x2)
        x2 = self.conv2(x2)
        x = torch.cat((x1, x2), dim=1)
        x = self.bn(x)
        return x


class ShakeShakeResUnit(nn.Module):
    """pytorchcv shakeshakeresnet_cifar.ShakeShakeResUnit (eval: ``0.5 * (x1 + x2)``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.resize_identity = (in_channels != out_channels) or (stride != 1)
        self.branch1 = ResBlock(in_channels, out_channels, stride)
        self.branch2 = ResBlock(in_channels, out_channels, stride)
        if self.resize_identity:
            self.identity_branch = ShakeShakeShortcut(in_channels, out_channels, stride)
        self.activ = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.resize_identity:
            identity = self.identity_branch(x)
        else:
            identity = x
        x1 = self.branch1(x)
        x2 = self.branch2(x)
        if self.training:
            alpha = torch.rand(x1.size(0), dtype=x1.dtype, device=x1.device).view(-1, 1, 1, 1)
            x = ShakeShake.apply(x1, x2, alpha)
        else:
            x = 0.5 * (x1 + x2)
        x = x + identity
        x = self.activ(x)
        return x


class CIFARShakeShakeResNet(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/shakeshakeresnet_cifar.py."""

    def __init__(self, channels: list[list[int]], init_block_channels: int,
                 in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("init_block", conv3x3_block(in_channels, init_block_channels))
        in_channels = init_block_channels
        for i, channels_per_stage in enumerate(channels):
            stage = nn.Sequential()
            for j, out_channels in enumerate(channels_per_stage):
                stride = 2 if (j == 0) and (i != 0) else 1
                stage.add_module(f"unit{j + 1}", ShakeShakeResUnit(in_channels, out_channels,
                                                                   stride))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))
        self.output = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.output(x)
        return x


@entry("shakeshake_cifar", (3, 32, 32),
       "osmr/imgclsmob pytorch/pytorchcv/models/shakeshakeresnet_cifar.py",
       ("eval branch mean 0.5 * (x1 + x2)", "autograd.Function only in training",
        "control flow on self.training", "slicing x[:, :, :-1, :-1]", "ZeroPad2d",
        "avgpool kernel 1 stride 2", "cat"))
def shakeshake_cifar() -> nn.Module:
    """Shake-Shake ResNet-CIFAR: one unit per stage, 8/16/32 channels."""
    return CIFARShakeShakeResNet([[8], [16], [32]], init_block_channels=8)


# ---------------------------------------------------------------------------- CBAM-ResNet


class CbamMLP(nn.Module):
    """pytorchcv cbamresnet.MLP (shared by the average and max paths)."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        mid_channels = channels // reduction_ratio
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels, mid_channels)
        self.activ = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(mid_channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        x = self.fc1(x)
        x = self.activ(x)
        x = self.fc2(x)
        return x


class ChannelGate(nn.Module):
    """pytorchcv cbamresnet.ChannelGate (avg + max pooled paths, ``expand_as``)."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.max_pool = nn.AdaptiveMaxPool2d(output_size=(1, 1))
        self.mlp = CbamMLP(channels, reduction_ratio)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        att1 = self.avg_pool(x)
        att1 = self.mlp(att1)
        att2 = self.max_pool(x)
        att2 = self.mlp(att2)
        att = att1 + att2
        att = self.sigmoid(att)
        att = att.unsqueeze(2).unsqueeze(3).expand_as(x)
        x = x * att
        return x


class SpatialGate(nn.Module):
    """pytorchcv cbamresnet.SpatialGate (``x.max(dim=1)[0]``, ``x.mean(dim=1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv7x7_block(2, 1, activation=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        att1 = x.max(dim=1)[0].unsqueeze(1)
        att2 = x.mean(dim=1).unsqueeze(1)
        att = torch.cat((att1, att2), dim=1)
        att = self.conv(att)
        att = self.sigmoid(att)
        x = x * att
        return x


class CbamBlock(nn.Module):
    """pytorchcv cbamresnet.CbamBlock."""

    def __init__(self, channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.ch_gate = ChannelGate(channels, reduction_ratio)
        self.sp_gate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        x = self.ch_gate(x)
        x = self.sp_gate(x)
        return x


class CbamResUnit(nn.Module):
    """pytorchcv cbamresnet.CbamResUnit."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 bottleneck: bool) -> None:
        super().__init__()
        self.resize_identity = (in_channels != out_channels) or (stride != 1)
        if bottleneck:
            self.body: nn.Module = ResBottleneck(in_channels, out_channels, stride,
                                                 conv1_stride=False)
        else:
            self.body = ResBlock(in_channels, out_channels, stride)
        if self.resize_identity:
            self.identity_conv = conv1x1_block(in_channels, out_channels, stride=stride,
                                               activation=False)
        self.cbam = CbamBlock(channels=out_channels, reduction_ratio=4)
        self.activ = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.resize_identity:
            identity = self.identity_conv(x)
        else:
            identity = x
        x = self.body(x)
        x = self.cbam(x)
        x = x + identity
        x = self.activ(x)
        return x


class CbamResNet(nn.Module):
    """osmr/imgclsmob pytorch/pytorchcv/models/cbamresnet.py; the final AvgPool2d's kernel is
    the feature map size (7 for pytorchcv's 224×224 inputs)."""

    def __init__(self, channels: list[list[int]], init_block_channels: int, bottleneck: bool,
                 in_channels: int = 3, in_size: tuple[int, int] = (224, 224),
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("init_block", ResInitBlock(in_channels, init_block_channels))
        in_channels = init_block_channels
        for i, channels_per_stage in enumerate(channels):
            stage = nn.Sequential()
            for j, out_channels in enumerate(channels_per_stage):
                stride = 2 if (j == 0) and (i != 0) else 1
                stage.add_module(f"unit{j + 1}", CbamResUnit(in_channels, out_channels, stride,
                                                             bottleneck))
                in_channels = out_channels
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=in_size[0] // 32,
                                                            stride=1))
        self.output = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = self.output(x)
        return x


@entry("cbam_resnet", (3, 64, 64), "osmr/imgclsmob pytorch/pytorchcv/models/cbamresnet.py",
       ("adaptive avg + adaptive max pool", "module called twice (shared MLP)", "expand_as",
        "x * attention (two tensors)", "x.max(dim=1)[0] (max over dims)", "x.mean(dim=1)",
        "cat", "7x7 conv on 2 channels", "sigmoid"))
def cbam_resnet() -> nn.Module:
    """CBAM-ResNet-10-style net of pytorchcv cbamresnet.py on 64×64, channels 8/16/32/64."""
    return CbamResNet([[8], [16], [32], [64]], init_block_channels=8, bottleneck=False,
                      in_size=(64, 64), num_classes=10)
