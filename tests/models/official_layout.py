"""State dicts in the official AVSBench TPAVI key layout, built by the tests themselves.

Written from the official model's architecture (avs_scripts/*/model/{ResNet,PVT}_AVSModel.py,
TPAVI.py, resnet.py, pvt.py), not from avseg's key map: every key name and shape the official
`Pred_endecoder(channel=256, tpavi_stages=[0, 1, 2, 3], tpavi_va_flag=True)` has, the unused
branches included (B2_ResNet's layer3_2 / layer4_2, path4.resConfUnit1), with the `module.`
prefix of `nn.DataParallel` as the official training saves it. Values are random.
"""

from __future__ import annotations

import torch

C = 256
R50_CHANNELS = (256, 512, 1024, 2048)
PVT_B5 = {"dims": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "sr": (8, 4, 2, 1)}


def _resnet_shapes() -> dict[str, tuple]:
    """B2_ResNet: torchvision ResNet-50 names, layer3/4 as layer3_1/4_1, plus layer3_2/4_2 (same shapes)."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}
    shapes.update(_bn("bn1", 64))
    inplanes = 64
    layers = {"layer1": (64, 3), "layer2": (128, 4), "layer3_1": (256, 6), "layer4_1": (512, 3)}
    for name, (planes, blocks) in layers.items():
        inplanes = _bottlenecks(shapes, name, inplanes, planes, blocks)
    inplanes = 512  # the second branch starts again from layer2's output
    for name, (planes, blocks) in {"layer3_2": (256, 6), "layer4_2": (512, 3)}.items():
        inplanes = _bottlenecks(shapes, name, inplanes, planes, blocks)
    return {f"resnet.{k}": v for k, v in shapes.items()}


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _bottlenecks(shapes: dict, name: str, inplanes: int, planes: int, blocks: int) -> int:
    for b in range(blocks):
        p = f"{name}.{b}"
        shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
        shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
        for i, ch in ((1, planes), (2, planes), (3, planes * 4)):
            shapes.update(_bn(f"{p}.bn{i}", ch))
        if b == 0:
            shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
            shapes.update(_bn(f"{p}.downsample.1", planes * 4))
        inplanes = planes * 4
    return inplanes


def _pvt_shapes() -> dict[str, tuple]:
    """pvt_v2_b5 of the official pvt.py (patch_embed{i}, block{i}.{j}, norm{i}; no head)."""
    shapes, previous = {}, 3
    for i, (dim, depth, sr) in enumerate(zip(PVT_B5["dims"], PVT_B5["depths"], PVT_B5["sr"]), start=1):
        kernel = 7 if i == 1 else 3
        shapes[f"patch_embed{i}.proj.weight"] = (dim, previous, kernel, kernel)
        shapes[f"patch_embed{i}.proj.bias"] = (dim,)
        shapes[f"patch_embed{i}.norm.weight"] = shapes[f"patch_embed{i}.norm.bias"] = (dim,)
        for j in range(depth):
            p = f"block{i}.{j}"
            for norm in ("norm1", "norm2"):
                shapes[f"{p}.{norm}.weight"] = shapes[f"{p}.{norm}.bias"] = (dim,)
            shapes[f"{p}.attn.q.weight"], shapes[f"{p}.attn.q.bias"] = (dim, dim), (dim,)
            shapes[f"{p}.attn.kv.weight"], shapes[f"{p}.attn.kv.bias"] = (2 * dim, dim), (2 * dim,)
            shapes[f"{p}.attn.proj.weight"], shapes[f"{p}.attn.proj.bias"] = (dim, dim), (dim,)
            if sr > 1:
                shapes[f"{p}.attn.sr.weight"], shapes[f"{p}.attn.sr.bias"] = (dim, dim, sr, sr), (dim,)
                shapes[f"{p}.attn.norm.weight"] = shapes[f"{p}.attn.norm.bias"] = (dim,)
            shapes[f"{p}.mlp.fc1.weight"], shapes[f"{p}.mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
            shapes[f"{p}.mlp.dwconv.dwconv.weight"], shapes[f"{p}.mlp.dwconv.dwconv.bias"] = (4 * dim, 1, 3, 3), (4 * dim,)
            shapes[f"{p}.mlp.fc2.weight"], shapes[f"{p}.mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
        shapes[f"norm{i}.weight"] = shapes[f"norm{i}.bias"] = (dim,)
        previous = dim
    return {f"encoder_backbone.{k}": v for k, v in shapes.items()}


def _head_shapes(channels: tuple, outputs: int, audio_bias: bool) -> dict[str, tuple]:
    shapes = {}
    for k, ch in enumerate(channels, start=1):
        for j in range(4):
            shapes[f"conv{k}.conv2d_list.{j}.weight"], shapes[f"conv{k}.conv2d_list.{j}.bias"] = (C, ch, 3, 3), (C,)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                shapes[f"path{k}.{unit}.{conv}.weight"], shapes[f"path{k}.{unit}.{conv}.bias"] = (C, C, 3, 3), (C,)
        p = f"tpavi_b{k}"
        shapes[f"{p}.align_channel.weight"] = (C, 128)
        if audio_bias:
            shapes[f"{p}.align_channel.bias"] = (C,)
        shapes[f"{p}.norm_layer.weight"] = shapes[f"{p}.norm_layer.bias"] = (C,)
        for name in ("g", "theta", "phi"):
            shapes[f"{p}.{name}.weight"], shapes[f"{p}.{name}.bias"] = (C // 2, C, 1, 1, 1), (C // 2,)
        shapes[f"{p}.W_z.0.weight"], shapes[f"{p}.W_z.0.bias"] = (C, C // 2, 1, 1, 1), (C,)
        shapes.update(_bn(f"{p}.W_z.1", C))
    shapes.update({"output_conv.0.weight": (128, C, 3, 3), "output_conv.0.bias": (128,),
                   "output_conv.2.weight": (32, 128, 3, 3), "output_conv.2.bias": (32,),
                   "output_conv.4.weight": (outputs, 32, 1, 1), "output_conv.4.bias": (outputs,)})
    return shapes


def official_state_dict(task: str, backbone: str = "r50", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official layout of `task` (s4, ms3, avss) and `backbone` (r50, pvtb5)."""
    outputs = 71 if task == "avss" else 1
    if backbone == "r50":
        shapes = {**_resnet_shapes(), **_head_shapes(R50_CHANNELS, outputs, task != "avss")}
    else:
        shapes = {**_pvt_shapes(), **_head_shapes(PVT_B5["dims"], outputs, task != "avss")}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * (0.02 if len(shape) > 1 else 0.1)
    return {f"module.{k}": v for k, v in state.items()}
