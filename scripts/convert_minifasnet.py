#!/usr/bin/env python3
"""Convert a MiniFASNet anti-spoofing checkpoint (V2 or V1SE) to a ``.tflite`` file.

Usage::

    python scripts/convert_minifasnet.py CHECKPOINT OUT.tflite

The upstream project (minivision-ai/Silent-Face-Anti-Spoofing, Apache-2.0)
ships only PyTorch state dicts (2.7_80x80_MiniFASNetV2.pth and
4_0_0_80x80_MiniFASNetV1SE.pth). This script rebuilds the network in PyTorch,
reading every channel width, kernel size and block count from the names and
shapes in that state dict (V1SE's squeeze-excitation blocks are found by
their ``se_module.fc1``/``bn1``/``fc2``/``bn2`` tensors), loads it strictly (a
missing or extra tensor is an error, so a wrong architecture cannot pass silently), exports it with
litert-torch, and checks that LiteRT's logits match PyTorch's on a fixed input.

The output keeps PyTorch's layout: input 1x3x80x80 float32 (BGR, 0-255, not
normalised), output 1x3 logits, softmax index 1 = real face.

It needs the ``convert`` extra (torch==2.13.0, litert-torch==0.10.*), which the
device never installs. Conversion is repeatable: the same checkpoint, the same
package versions and this file's class and attribute names give a byte-identical
file (no timestamps or paths are stored; seeds and the check input do not affect
the bytes), so the model manifest can record its sha256.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from convert_common import export, litert_output, report
from torch import nn

#: MiniFASNet's crop size for the 2.7x checkpoint; the model is fully convolutional
#: up to conv_6_dw, whose kernel (5x5 for 80x80) is read from the checkpoint.
INPUT_SIZE = 80

#: Largest |logit| difference between PyTorch and LiteRT accepted as "same model".
TOLERANCE = 1e-3


class ConvBN(nn.Sequential):
    """Conv2d (no bias) then BatchNorm2d; upstream's ``Linear_block``."""

    def __init__(self, weight: torch.Tensor, stride: int, padding: int) -> None:
        out_c, in_per_group, k, _ = weight.shape
        # MiniFASNet's only convolutions with one input channel per group are its
        # depthwise ones (the network's input has 3 channels).
        groups = out_c if in_per_group == 1 and out_c > 1 else 1
        in_c = in_per_group * groups
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_c, out_c, k, stride, padding, groups=groups, bias=False),
                bn=nn.BatchNorm2d(out_c),
            )
        )


class ConvBNPReLU(ConvBN):
    """Conv2d, BatchNorm2d, per-channel PReLU; upstream's ``Conv_block``."""

    def __init__(self, weight: torch.Tensor, stride: int, padding: int) -> None:
        super().__init__(weight, stride, padding)
        self.add_module("prelu", nn.PReLU(weight.shape[0]))


class SEModule(nn.Module):
    """Squeeze-excitation (V1SE): global mean, 1x1 conv+BN, ReLU, 1x1 conv+BN, sigmoid gate.

    Upstream's ``SEModule``; its tensors are ``fc1``, ``bn1``, ``fc2``, ``bn2``.
    """

    def __init__(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        squeeze, channels = state[f"{prefix}.fc1.weight"].shape[:2]
        self.fc1 = nn.Conv2d(channels, squeeze, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(squeeze)
        self.fc2 = nn.Conv2d(squeeze, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.relu(self.bn1(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(self.bn2(self.fc2(g)))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand, 3x3 depthwise, 1x1 project, optional skip.

    When the checkpoint holds ``<prefix>.se_module.*`` (V1SE: the last block of
    each residual stage), the projection is gated by squeeze-excitation before
    the skip is added, as upstream's ``Depth_Wise_SE`` does.
    """

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, stride: int,
                 residual: bool) -> None:
        super().__init__()
        self.conv = ConvBNPReLU(state[f"{prefix}.conv.conv.weight"], 1, 0)
        dw = state[f"{prefix}.conv_dw.conv.weight"]
        self.conv_dw = ConvBNPReLU(dw, stride, dw.shape[-1] // 2)
        self.project = ConvBN(state[f"{prefix}.project.conv.weight"], 1, 0)
        self.residual = residual
        # Only set when present, so V2's module tree (and its file's sha256) is unchanged.
        if residual and f"{prefix}.se_module.fc1.weight" in state:
            self.se_module = SEModule(state, f"{prefix}.se_module")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if hasattr(self, "se_module"):
            y = self.se_module(y)
        return x + y if self.residual else y


class Residual(nn.Module):
    """A stage of stride-1 residual DepthWise blocks, as many as the checkpoint holds."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        super().__init__()
        pattern = re.compile(rf"^{re.escape(prefix)}\.model\.(\d+)\.")
        count = 1 + max(int(m.group(1)) for k in state if (m := pattern.match(k)))
        self.model = nn.Sequential(
            *(DepthWise(state, f"{prefix}.model.{i}", 1, True) for i in range(count))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet (V1, V2 or V1SE: widths and SE blocks differ) built from a state dict.

    Module names match the checkpoint's, so ``load_state_dict(strict=True)``
    proves the rebuilt graph holds every tensor the checkpoint has.
    Dropout is left out: it has no weights and is the identity at inference.
    """

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.conv1 = ConvBNPReLU(state["conv1.conv.weight"], 2, 1)
        self.conv2_dw = ConvBNPReLU(state["conv2_dw.conv.weight"], 1, 1)
        self.conv_23 = DepthWise(state, "conv_23", 2, False)
        self.conv_3 = Residual(state, "conv_3")
        self.conv_34 = DepthWise(state, "conv_34", 2, False)
        self.conv_4 = Residual(state, "conv_4")
        self.conv_45 = DepthWise(state, "conv_45", 2, False)
        self.conv_5 = Residual(state, "conv_5")
        self.conv_6_sep = ConvBNPReLU(state["conv_6_sep.conv.weight"], 1, 0)
        self.conv_6_dw = ConvBN(state["conv_6_dw.conv.weight"], 1, 0)
        # Upstream skips `linear` when the embedding is 512 wide; follow the checkpoint.
        self.linear: nn.Module = nn.Identity()
        if "linear.weight" in state:
            out_f, in_f = state["linear.weight"].shape
            self.linear = nn.Linear(in_f, out_f, bias=False)
        self.bn = nn.BatchNorm1d(state["bn.weight"].shape[0])
        classes, emb = state["prob.weight"].shape
        self.prob = nn.Linear(emb, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34,
                      self.conv_4, self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        x = torch.flatten(x, 1)
        return self.prob(self.bn(self.linear(x)))


# litert-torch names every tensor after the module path ("<module>.MiniFASNet/
# <module>.DepthWise_conv_23/..."), so those names are part of the file's bytes and
# sha256. Pin the module name so the output is the same whether this file runs as
# __main__ or is imported. Renaming a class or attribute here changes the sha256.
for _cls in (ConvBN, ConvBNPReLU, SEModule, DepthWise, Residual, MiniFASNet):
    _cls.__module__ = "minifasnet"


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with DataParallel's ``module.`` prefix removed."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # some trainers wrap it
        state = state["state_dict"]
    return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())


def build(path: Path) -> MiniFASNet:
    """The network rebuilt from ``path`` with its weights loaded strictly, in eval mode."""
    state = load_checkpoint(path)
    model = MiniFASNet(state)
    model.load_state_dict(state, strict=True)
    return model.eval()


def sample_input() -> torch.Tensor:
    """A fixed 1x3x80x80 input in the model's 0-255 range (same on every run)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=g) * 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="upstream .pth state dict")
    parser.add_argument("out", type=Path, help="where to write the .tflite file")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"{args.checkpoint}: no such checkpoint")

    try:
        model = build(args.checkpoint)
    except (KeyError, RuntimeError) as e:  # names or shapes that are not MiniFASNetV1/V2
        print(f"{args.checkpoint}: not a MiniFASNet (V1, V2, V1SE) this script knows: {e}",
              file=sys.stderr)
        return 1
    sample = sample_input()
    with torch.no_grad():
        expected = model(sample).numpy()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    export(model, sample, args.out)

    got = litert_output(args.out, sample.numpy())
    diff = float(np.abs(got - expected).max())
    if diff > TOLERANCE:
        print(f"{args.out}: LiteRT differs from PyTorch by {diff:.2e}", file=sys.stderr)
        return 1
    print(report(args.out, f"max |diff| {diff:.1e}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
