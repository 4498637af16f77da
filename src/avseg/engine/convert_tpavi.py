"""`avseg convert-tpavi`: an official AVSBench TPAVI checkpoint -> an avseg checkpoint.

    avseg convert-tpavi S4_pvt_best.pth --task s4 --backbone pvtb5 --vggish weights/vggish-10086976.pth \
        --out weights/tpavi_pvtb5_s4_official.pt

The output is an ordinary avseg checkpoint (model weights, VGGish included, and the config of the
official model): `avseg eval`, `avseg predict`, `avseg app` and `Predictor.from_checkpoint` use it
as any other. Key mapping and the official code's quirks: `avseg.models.tpavi_official`,
docs/model.md ("TPAVI: the official function").
"""

from __future__ import annotations

from pathlib import Path

from avseg.engine.checkpoint import save_checkpoint
from avseg.errors import UserError
from avseg.models.tpavi import from_official
from avseg.models.tpavi_official import OFFICIAL_BACKBONES, TASKS, official_config


def convert_tpavi(official: str | Path, *, task: str, backbone: str, vggish: str | Path, out: str | Path) -> Path:
    """Load `official` with `from_official` and write it as an avseg checkpoint at `out`."""
    if not Path(vggish).is_file():
        raise UserError(f"{vggish}: VGGish weight file not found (the public PyTorch port's vggish-10086976.pth)")
    model = from_official(official, task=task, backbone=backbone, vggish_weights=vggish)
    config = official_config(task, backbone)  # the checkpoint holds VGGish: no weight path needed
    return save_checkpoint(out, model=model, config=config, step=0, epoch=0,
                           extra={"converted_from": str(official), "vggish": str(vggish)})


def add_cli_arguments(parser) -> None:
    parser.add_argument("official", help="checkpoint saved by the official AVSBench training (module.* keys)")
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="the setting it was trained on")
    parser.add_argument("--backbone", default="r50", choices=sorted(OFFICIAL_BACKBONES),
                        help="r50 (ResNet-50) or pvtb5 (PVT-v2-b5, the official 'pvt')")
    parser.add_argument("--vggish", required=True, help="vggish-10086976.pth (public PyTorch port) the model was trained with")
    parser.add_argument("--out", required=True, help="path of the avseg checkpoint to write")


def run_cli(args) -> int:
    path = convert_tpavi(args.official, task=args.task, backbone=args.backbone, vggish=args.vggish, out=args.out)
    print(f"wrote {path} (official TPAVI {args.backbone} {args.task}); use it with avseg eval / predict --checkpoint {path}")
    return 0
