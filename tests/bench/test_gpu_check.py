"""scripts/gpu_check.sh on a machine without a GPU: its options, a clear SKIP line per check, and
commands (shown by --dry-run) that the avseg command line accepts as written."""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avseg.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/gpu_check.sh"
CHECKS = ["cuda", "synth-data", "train-fp16", "train-bf16", "train-compile", "eval-bf16", "ddp-nccl", "bench-speed",
          "bench-train"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without a GPU")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@no_gpu
def test_without_a_gpu_every_check_says_skip_and_why(tmp_path):
    result = _run("--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"SKIP {name}" for name in CHECKS]
    assert all("no CUDA device" in line for line in lines)
    required = _run("--out", str(tmp_path / "out"), "--require-gpu")
    assert required.returncode == 1 and "--require-gpu and no GPU" in required.stderr


def test_options_help_and_errors(tmp_path):
    help_text = _run("--help")
    assert help_text.returncode == 0
    for name in CHECKS[:2] + CHECKS[2:]:
        if name != "synth-data":
            assert name in help_text.stdout
    bad = _run("--frobnicate")
    assert bad.returncode == 2 and bad.stderr.strip() == "gpu_check: unknown option '--frobnicate' (see --help)"
    missing = subprocess.run(["bash", str(SCRIPT), "--python", "no-such-python"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "no-such-python" in missing.stderr


def _parse_avseg(argv: list[str]) -> argparse.Namespace:
    """Parse `avseg ARGV` with the command's own parser, without running it."""
    command, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog=f"avseg {command}", exit_on_error=False)
    importlib.import_module(COMMANDS[command][0]).add_cli_arguments(parser)
    return parser.parse_args(rest)


def test_dry_run_commands_are_accepted_by_avseg_and_name_existing_configs(tmp_path):
    result = _run("--dry-run", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines] == CHECKS  # every check, ddp-nccl included
    parsed = {}
    for line in lines:
        name, command = line.split()[1], shlex.split(line.split(": ", 1)[1])
        if "avseg.cli" not in command:
            continue
        argv = command[command.index("avseg.cli") + 1:]
        parsed[name] = _parse_avseg(argv)
        for item in argv:
            if item.endswith(".yaml"):
                assert (ROOT / item).is_file(), f"{name}: {item}"
    assert parsed["train-compile"].compile and parsed["train-compile"].amp == "bf16"
    assert "train.amp=fp16" in parsed["train-fp16"].overrides and "train.device=cuda" in parsed["train-fp16"].overrides
    assert parsed["eval-bf16"].amp == "bf16" and parsed["eval-bf16"].checkpoint.endswith("train_bf16/last.pt")
    assert parsed["bench-speed"].device == "cuda" and parsed["bench-train"].device == "cuda"
    assert "--nproc_per_node 2" in next(line for line in lines if " ddp-nccl " in line)
