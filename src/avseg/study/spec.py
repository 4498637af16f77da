"""A study spec: which synthetic benchmark, which rows, which seeds, which schedule (docs/study.md).

    spec = load_spec("configs/study/medium.yaml", ["seeds=[0,1]"])
    spec.rows[0].name, spec.rows[0].overrides     # "1_baseline", ["model.qsd.decomposition=none", ...]

A spec is YAML mirroring the dataclasses below; unknown keys and wrong types stop with the file
and the key (the same rules as training configs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from avseg.config import load_config
from avseg.errors import UserError


@dataclass
class BenchmarkSpec:
    """The synthetic benchmark (`avseg synth --layout avss`): tier, size, classes, AVSS subsets."""

    tier: str = "medium"
    clips: int = 200
    image_size: int = 96
    num_classes: int = 8
    subsets: list[str] = field(default_factory=lambda: ["v1s", "v1m"])
    seed: int = 0


@dataclass
class RowSpec:
    """One row: a name (a folder name), a label for tables, config overrides, whether it is the paper's."""

    name: str = ""
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    paper: bool = True


@dataclass
class ScheduleSpec:
    epochs: int = 8
    lr_drop_epochs: list[int] = field(default_factory=lambda: [6])
    batch_size: int = 4


@dataclass
class AudioPretrainSpec:
    """`avseg pretrain-audio` on the train split's sound tags; the encoder is then frozen for every row."""

    enabled: bool = True
    epochs: int = 15


@dataclass
class SNRSpec:
    """Noise robustness (the paper's Fig. 7): the test clips re-mixed at these SNRs."""

    values: list[float] = field(default_factory=lambda: [20.0, 10.0, 5.0, 0.0, -5.0])
    rows: list[str] = field(default_factory=list)


@dataclass
class TSNESpec:
    """Decomposed semantics (the paper's Fig. 6): tokens of these rows, from the run of `seed`."""

    rows: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class StudySpec:
    name: str = "study"
    description: str = ""
    benchmark: BenchmarkSpec = field(default_factory=BenchmarkSpec)
    base_config: str = "configs/cpu/qsd_r18_synth_avss.yaml"
    overrides: list[str] = field(default_factory=list)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    audio_pretrain: AudioPretrainSpec = field(default_factory=AudioPretrainSpec)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    rows: list[RowSpec] = field(default_factory=list)
    # rows to train first (the rest follow in spec order): a study stopped early then has the
    # comparisons that matter most with every seed
    run_order: list[str] = field(default_factory=list)
    snr: SNRSpec = field(default_factory=SNRSpec)
    tsne: TSNESpec = field(default_factory=TSNESpec)
    # train.device of every run (`avseg study --device`; "" = the base config's); a resumed study may change it
    device: str = ""

    def row(self, name: str) -> RowSpec:
        return next(row for row in self.rows if row.name == name)

    def runs(self) -> list[tuple[str, int]]:
        """(row, seed) in training order: `run_order` rows first, every seed of a row together."""
        names = list(self.run_order) + [row.name for row in self.rows if row.name not in self.run_order]
        return [(name, seed) for name in names for seed in self.seeds]


def _check(spec: StudySpec, source: str) -> None:
    from avseg.data.synth.config import TIERS

    b = spec.benchmark
    if b.tier not in TIERS:
        raise UserError(f"{source}: benchmark.tier '{b.tier}': expected one of {', '.join(TIERS)}")
    if b.clips < 4 or b.image_size < 32 or b.num_classes < 6:
        raise UserError(f"{source}: benchmark needs clips >= 4, image_size >= 32 and num_classes >= 6 "
                        "(tiers show up to 5 objects plus an off-screen class)")
    if not spec.rows:
        raise UserError(f"{source}: rows: the study names no row")
    names = [row.name for row in spec.rows]
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad or len(set(names)) != len(names):
        raise UserError(f"{source}: rows: each row needs a distinct folder-safe name, got {names}")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds) or min(spec.seeds) < 0:
        raise UserError(f"{source}: seeds: a list of distinct seeds >= 0, got {list(spec.seeds)}")
    if spec.schedule.epochs < 1 or spec.schedule.batch_size < 1:
        raise UserError(f"{source}: schedule.epochs and schedule.batch_size must be >= 1")
    for key, wanted in (("snr.rows", spec.snr.rows), ("tsne.rows", spec.tsne.rows), ("run_order", spec.run_order)):
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise UserError(f"{source}: {key} names rows that the study does not have: {', '.join(unknown)}")
    if spec.tsne.rows and spec.tsne.seed not in spec.seeds:
        raise UserError(f"{source}: tsne.seed {spec.tsne.seed} is not one of the seeds {list(spec.seeds)}")
    if not Path(spec.base_config).is_file():
        raise UserError(f"{source}: base_config {spec.base_config}: file not found")


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    """Read a study spec YAML and apply dotted `key=value` overrides; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: study spec not found")
    schema = OmegaConf.structured(StudySpec)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.load(path))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        spec = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError) as err:
        message = str(err).splitlines()[0]
        raise UserError(f"{path}: {message}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    for row in spec.rows:
        row.label = row.label or row.name
    _check(spec, str(path))
    return spec


def spec_to_dict(spec: StudySpec) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(spec), resolve=True)


def run_folder(out: Path, row: str, seed: int) -> Path:
    """A study run's folder: `OUT/runs/{row}/seed{seed}` (an ordinary `avseg train` output_dir)."""
    return out / "runs" / row / f"seed{seed}"


def run_config(spec: StudySpec, row_name: str, seed: int, data_root: Path, run_dir: Path,
               audio_weights: Path | None):
    """The training config of one row and seed: base config, study settings, spec and row overrides."""
    b, s = spec.benchmark, spec.schedule
    fixed = [f"data.root={data_root}", f"data.avss_subsets=[{','.join(b.subsets)}]",
             f"data.image_size={b.image_size}", f"model.num_classes={b.num_classes}",
             f"data.batch_size={s.batch_size}", f"train.epochs={s.epochs}",
             f"train.lr_drop_epochs=[{','.join(str(e) for e in s.lr_drop_epochs)}]",
             f"output_dir={run_dir}", f"seed={seed}"] + ([f"train.device={spec.device}"] if spec.device else [])
    if audio_weights is not None:
        fixed += [f"audio.tiny_weights={audio_weights}", "audio.freeze=true"]
    return load_config(spec.base_config, fixed + list(spec.overrides) + list(spec.row(row_name).overrides))
