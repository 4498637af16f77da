"""The official AVSBench TPAVI checkpoints, as its training saves them, loaded into avseg's TPAVI.

The official training (OpenNLPLab/AVSBench, avs_scripts/*/train.py) saves
`nn.DataParallel(Pred_endecoder).state_dict()`: every key starts with `module.`. Official key
(without the prefix) -> avseg key of `TPAVI`:

    resnet.{conv1,bn1,layer1,layer2}.*      backbone.body.{conv1,bn1,layer1,layer2}.*   (r50)
    resnet.layer3_1.* / resnet.layer4_1.*   backbone.body.layer3.* / layer4.*
    resnet.layer3_2.* / resnet.layer4_2.*   ignored: the second branch of B2_ResNet, never run
    encoder_backbone.*                      backbone.body.* via timm's PVT-v2 key map (pvtb5)
    conv{k}.conv2d_list.{j}.*               project.{k-1}.convs.{j}.*
    tpavi_b{k}.align_channel / theta / phi / g / W_z / norm_layer
                                            tpavi.{k-1}.align_audio / theta / phi / g / out / norm
    path{k}.resConfUnit1.* / resConfUnit2.* decoder.{k-1}.skip.* / refine.*
    path4.resConfUnit1.*                    ignored: built but never called in the official forward
    output_conv.*                           head.*

VGGish is not in the official checkpoint (the official scripts load the public PyTorch port's
`vggish-10086976.pth` separately): `vggish_weights` names that file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from torch import Tensor

from avseg.config import Config
from avseg.errors import UserError

OFFICIAL_WINDOW = 5  # frames per TPAVI window in the official code (`x.reshape(-1, 5, C, H, W)`)
TASKS = {"s4": 1, "ms3": 1, "avss": 71}  # official output channels (AVSS: 70 classes + background)
OFFICIAL_BACKBONES = {"r50": "r50", "pvtb5": "pvtb5"}
IGNORED = (re.compile(r"^resnet\.layer[34]_2\."), re.compile(r"^path4\.resConfUnit1\."))
_SHOWN = 5


def _pvt_key(key: str) -> str:
    """Official PVT-v2 key (no `encoder_backbone.`) -> timm features_only key (`stages_N`)."""
    if key.startswith("patch_embed"):
        key = key.replace("patch_embed1", "patch_embed")
        key = re.sub(r"^patch_embed([234])", lambda m: f"stages_{int(m.group(1)) - 1}.downsample", key)
    key = key.replace("dwconv.dwconv", "dwconv")
    key = re.sub(r"^block(\d+)\.(\d+)", lambda m: f"stages_{int(m.group(1)) - 1}.blocks.{m.group(2)}", key)
    return re.sub(r"^norm(\d+)", lambda m: f"stages_{int(m.group(1)) - 1}.norm", key)


_RENAMES = (
    (r"^resnet\.layer([34])_1\.", r"backbone.body.layer\1."),
    (r"^resnet\.", "backbone.body."),
    (r"^conv([1-4])\.conv2d_list\.", lambda m: f"project.{int(m.group(1)) - 1}.convs."),
    (r"^tpavi_b([1-4])\.align_channel\.", lambda m: f"tpavi.{int(m.group(1)) - 1}.align_audio."),
    (r"^tpavi_b([1-4])\.W_z\.", lambda m: f"tpavi.{int(m.group(1)) - 1}.out."),
    (r"^tpavi_b([1-4])\.norm_layer\.", lambda m: f"tpavi.{int(m.group(1)) - 1}.norm."),
    (r"^tpavi_b([1-4])\.(theta|phi|g)\.", lambda m: f"tpavi.{int(m.group(1)) - 1}.{m.group(2)}."),
    (r"^path([1-4])\.resConfUnit1\.", lambda m: f"decoder.{int(m.group(1)) - 1}.skip."),
    (r"^path([1-4])\.resConfUnit2\.", lambda m: f"decoder.{int(m.group(1)) - 1}.refine."),
    (r"^output_conv\.", "head."),
)


def official_to_avseg_key(key: str) -> str | None:
    """One official key (no `module.` prefix) -> its avseg key, or None for an ignored branch."""
    if any(pattern.match(key) for pattern in IGNORED):
        return None
    if key.startswith("encoder_backbone."):
        return "backbone.body." + _pvt_key(key.removeprefix("encoder_backbone."))
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, key, count=1)
        if count:
            return new
    return key  # unknown: reported as unexpected by `convert_state_dict`


def convert_state_dict(state: dict, own_state: dict[str, Tensor], source: str = "state dict") -> dict:
    """Official state dict -> avseg state dict fitting `own_state` (a TPAVI's; audio encoder excluded).

    Raises UserError (one line naming `source` and the first keys) when any key of the model is
    missing, any official key is unknown, or a shape differs.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = {k: v for k, v in own_state.items() if not k.startswith("audio_encoder.")}
    converted, unexpected = {}, []
    for key, value in state.items():
        new = official_to_avseg_key(key)
        if new is None:
            continue
        if new in own:
            converted[new] = value
        else:
            unexpected.append(key)
    missing = [k for k in own if k not in converted]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:_SHOWN])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:_SHOWN])})")
        raise UserError(f"{source}: not an official TPAVI checkpoint of this task and backbone: keys "
                        + "; ".join(parts))
    wrong = [k for k, v in converted.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        first = wrong[0]
        raise UserError(f"{source}: {len(wrong)} shapes do not fit (first: {first} is {tuple(converted[first].shape)},"
                        f" expected {tuple(own[first].shape)})")
    return converted


def official_config(task: str, backbone: str, vggish_weights: str = "") -> Config:
    """The avseg config of the official model (checkpoints written by `avseg convert-tpavi` carry it)."""
    if task not in TASKS:
        raise UserError(f"task '{task}': expected one of {', '.join(TASKS)}")
    if backbone not in OFFICIAL_BACKBONES:
        raise UserError(f"backbone '{backbone}': the official checkpoints use one of {', '.join(OFFICIAL_BACKBONES)}")
    config = Config()
    config.data.dataset, config.data.image_size = task, 224
    config.audio.encoder, config.audio.vggish_weights, config.audio.freeze = "vggish", vggish_weights, True
    model = config.model
    model.name, model.backbone, model.backbone_weights = "tpavi", OFFICIAL_BACKBONES[backbone], ""
    model.num_classes = 1 if TASKS[task] == 1 else TASKS[task] - 1
    model.tpavi.channels, model.tpavi.stages = 256, [0, 1, 2, 3]
    model.tpavi.window, model.tpavi.audio_bias = OFFICIAL_WINDOW, task != "avss"
    config.output_dir = f"runs/tpavi_{backbone}_{task}_official"
    return config


def read_official(path: str | Path) -> dict:
    """The state dict of an official checkpoint file (weights_only: no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: official TPAVI checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and weights_only errors come in many types
        raise UserError(f"{path}: not a readable PyTorch state dict ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected the state dict the official training saves (name -> tensor)")
    return state
