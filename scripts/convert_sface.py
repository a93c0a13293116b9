#!/usr/bin/env python3
"""Convert OpenCV Zoo's SFace face recogniser (int8 block-quantised ONNX) to ``.tflite``.

Usage::

    python scripts/convert_sface.py SFACE.onnx OUT.tflite

SFace (``face_recognition_sface_2021dec_int8bq.onnx``, Apache-2.0) is a
MobileFaceNet: 27 convolution + BatchNorm + PReLU units in one chain (no
residual adds), then BatchNorm, a 128-wide fully connected layer and a last
BatchNorm. 29 of its weight tensors are stored int8 with per-block scales and
int8 zero points (``DequantizeLinear``, opset 21). This script

1. reads the ONNX graph with the ``onnx`` package and dequantises every block by
   the ONNX rule, ``(q - zero_point) * scale``, then applies the graph's reshape;
2. rebuilds the network in PyTorch from the graph's nodes, in their order, with
   each unit's stride, padding and groups taken from the node's attributes, and
   loads every tensor strictly (a missing or extra one is an error);
3. exports it with litert-torch, then quantises the weights with
   ai-edge-quantizer: the fully connected layer (5 of the model's ~10 M weights;
   its 128x50176 matrix) to dynamic-range int8, the convolutions to float16,
   activations kept float (full-integer quantisation costs accuracy and speed
   here, see ../shared/models/MODELS.md);
4. checks that LiteRT's embedding matches PyTorch's (cosine) on a fixed input.

The result keeps PyTorch's layout and the graph's own normalisation: input
1x3x112x112 float32 RGB 0-255 (the network computes (x - 127.5) / 128 itself),
output 1x128 embedding (L2-normalise it).

It needs the converter's venv (scripts/convert-requirements.txt), which the
device never installs. Conversion is repeatable: the same ONNX file, the same
package versions and this file's class and attribute names give a
byte-identical file, so the model manifest records its sha256.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from convert_common import export, litert_output, report
from torch import nn

INPUT_SIZE = 112

#: Smallest cosine between PyTorch's and LiteRT's embedding accepted as "same model".
MIN_COSINE = 0.999


def dequantise(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int,
               block: int) -> np.ndarray:
    """ONNX DequantizeLinear with blocked quantisation: ``(q - zero) * scale`` per block.

    ``scale`` and ``zero`` have ``q``'s shape except along ``axis``, where they
    have one entry per ``block`` consecutive elements (the last block may be short).
    """
    axis = axis % q.ndim
    rep_scale = np.repeat(scale, block, axis=axis)
    rep_zero = np.repeat(zero.astype(np.int32), block, axis=axis)
    n = q.shape[axis]
    rep_scale = np.take(rep_scale, np.arange(n), axis=axis)
    rep_zero = np.take(rep_zero, np.arange(n), axis=axis)
    return ((q.astype(np.int32) - rep_zero) * rep_scale).astype(np.float32)


def read_onnx(path: Path) -> tuple[dict[str, np.ndarray], list[Any]]:
    """Every tensor the graph's compute nodes use, dequantised, and those nodes in order.

    DequantizeLinear and Reshape of weights are evaluated here; the nodes left
    are the network itself.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    compute = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q, scale, zero = (values[n] for n in node.input)
            values[node.output[0]] = dequantise(
                q, scale, zero, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            )
        elif node.op_type == "Reshape" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
        elif node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
        else:
            compute.append((node.op_type, list(node.input), list(node.output), attrs))
    return values, compute


class Unit(nn.Sequential):
    """Conv2d (no bias), BatchNorm2d, per-channel PReLU: one ``conv_N[_dw]`` of the graph."""

    def __init__(self, weight: np.ndarray, attrs: dict[str, Any], eps: float) -> None:
        out_c, in_per_group, k, _ = weight.shape
        groups = int(attrs.get("group", 1))
        pad = list(attrs.get("pads", [0, 0, 0, 0]))
        if pad[:2] != pad[2:]:
            raise ValueError(f"asymmetric padding {pad}")
        stride = list(attrs.get("strides", [1, 1]))
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_per_group * groups, out_c, k, tuple(stride), tuple(pad[:2]),
                               groups=groups, bias=False),
                bn=nn.BatchNorm2d(out_c, eps=eps),
                prelu=nn.PReLU(out_c),
            )
        )


class SFace(nn.Module):
    """MobileFaceNet as SFace's graph has it: normalise, units, bn1, fc, fc1 BatchNorm."""

    def __init__(self, units: list[Unit], features: int, embedding: int, bn1_eps: float,
                 fc1_eps: float, mean: float, scale: float) -> None:
        super().__init__()
        self.mean, self.scale = mean, scale
        self.units = nn.Sequential(*units)
        self.bn1 = nn.BatchNorm2d(units[-1].bn.num_features, eps=bn1_eps)
        self.pre_fc1 = nn.Linear(features, embedding)
        self.fc1 = nn.BatchNorm1d(embedding, eps=fc1_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.scale
        x = self.bn1(self.units(x))
        return self.fc1(self.pre_fc1(torch.flatten(x, 1)))


# litert-torch names tensors after the module path, so these names are part of the
# file's bytes: pin the module name whether this file runs as __main__ or is imported.
for _cls in (Unit, SFace):
    _cls.__module__ = "sface"


def _bn_state(prefix: str, values: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    gamma, beta, mean, var = (values[n] for n in names[1:5])
    return {f"{prefix}.weight": gamma, f"{prefix}.bias": beta, f"{prefix}.running_mean": mean,
            f"{prefix}.running_var": var}


def build(path: Path) -> SFace:
    """The network rebuilt from the ONNX file with its weights loaded strictly, in eval mode."""
    values, nodes = read_onnx(path)
    ops = [n[0] for n in nodes]
    if ops[:2] != ["Sub", "Mul"] or ops[-4:] != ["Dropout", "Flatten", "Gemm",
                                                    "BatchNormalization"]:
        raise ValueError(f"unexpected graph shape {ops[:2]}…{ops[-4:]}")
    mean = float(values[nodes[0][1][1]].ravel()[0])
    scale = float(values[nodes[1][1][1]].ravel()[0])
    state: dict[str, Any] = {}
    units: list[Unit] = []
    body = nodes[2:-4]
    i = 0
    while i < len(body) and body[i][0] == "Conv":
        conv, bn, prelu = body[i : i + 3]
        if (bn[0], prelu[0]) != ("BatchNormalization", "PRelu"):
            raise ValueError(f"{conv[2][0]}: expected BatchNorm then PReLU")
        weight = values[conv[1][1]]
        units.append(Unit(weight, conv[3], float(bn[3].get("epsilon", 1e-5))))
        p = f"units.{len(units) - 1}"
        state[f"{p}.conv.weight"] = weight
        state.update(_bn_state(f"{p}.bn", values, bn[1]))
        state[f"{p}.prelu.weight"] = values[prelu[1][1]].reshape(-1)
        i += 3
    if len(body) - i != 1 or body[i][0] != "BatchNormalization":
        raise ValueError("expected bn1 after the last unit")
    bn1 = body[i]
    gemm, fc1 = nodes[-2], nodes[-1]
    if gemm[3].get("transB", 0) != 1:
        raise ValueError("pre_fc1: expected transB=1")
    w, b = values[gemm[1][1]], values[gemm[1][2]]
    model = SFace(units, w.shape[1], w.shape[0], float(bn1[3].get("epsilon", 1e-5)),
                  float(fc1[3].get("epsilon", 1e-5)), mean, scale)
    state.update(_bn_state("bn1", values, bn1[1]))
    state["pre_fc1.weight"], state["pre_fc1.bias"] = w, b
    state.update(_bn_state("fc1", values, fc1[1]))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in state.items()}
    for k in model.state_dict():
        if k.endswith("num_batches_tracked"):  # a training counter, not in the graph
            tensors[k] = torch.tensor(0)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def sample_input() -> torch.Tensor:
    """A fixed 1x3x112x112 input in the model's 0-255 range (same on every run)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=g) * 255.0


def quantise(float_path: Path, out: Path) -> None:
    """Fully connected weights to dynamic-range int8, convolution weights to float16."""
    from ai_edge_quantizer import quantizer

    qt = quantizer.Quantizer(str(float_path))
    qt.add_dynamic_config(".*", "FULLY_CONNECTED", 8)
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        qt.add_weight_only_config(".*", op, 16, algorithm_key="float_casting")
    result = qt.quantize(enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path, help="SFace int8bq .onnx file")
    parser.add_argument("out", type=Path, help="where to write the .tflite file")
    parser.add_argument("--float", action="store_true", help="skip weight quantisation")
    args = parser.parse_args(argv)
    if not args.onnx.is_file():
        parser.error(f"{args.onnx}: no such file")

    import tempfile

    try:
        model = build(args.onnx)
    except (KeyError, ValueError, RuntimeError) as e:
        print(f"{args.onnx}: not an SFace graph this script knows: {e}", file=sys.stderr)
        return 1
    sample = sample_input()
    with torch.no_grad():
        expected = model(sample).numpy()[0]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "sface_float.tflite"
        export(model, sample, float_path)
        if args.float:
            args.out.write_bytes(float_path.read_bytes())
        else:
            quantise(float_path, args.out)

    got = litert_output(args.out, sample.numpy())[0]
    c = cosine(got, expected)
    if c < MIN_COSINE:
        print(f"{args.out}: LiteRT's embedding is off PyTorch's (cosine {c:.6f})", file=sys.stderr)
        return 1
    print(report(args.out, f"cosine {c:.6f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
