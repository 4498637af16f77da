"""Run `python -m avseg.cli ...` as a user does, and check the one-line-error promise."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/cpu/qsd_r18_synth_ms3.yaml"
SIZE = 32
SMALL = [f"data.image_size={SIZE}", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64",
         "model.encoder_layers=1", "model.qsd.asd_layers=1", "model.decoder_layers=2", "model.quantizer.codebook_size=16",
         "model.qsd.num_tokens=3", "data.num_workers=0", "train.log_every=1", "train.eval_every=0",
         "train.lr_drop_epochs=[]", "data.batch_size=2"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """stderr split at newlines and carriage returns (progress bars), blank lines dropped."""
        return [line for line in self.err.replace("\r", "\n").splitlines() if line.strip()]


def avseg(*args: str, cwd: Path = ROOT, limit_file_bytes: int | None = None, timeout: float = 240) -> Result:
    """`python -m avseg.cli ARGS` in a subprocess (PYTHONPATH inherited); RLIMIT_FSIZE if asked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def limit() -> None:
        if limit_file_bytes is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    done = subprocess.run([sys.executable, "-m", "avseg.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, command: str, *fragments: str) -> str:
    """Non-zero exit, stderr exactly one line `avseg COMMAND: error: ...` holding every fragment."""
    assert result.code != 0, result
    assert "Traceback" not in result.err, result.err
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith(f"avseg {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def assert_error_ends_a_run(result: Result, command: str, *fragments: str) -> str:
    """A failure after a run started (its notes and progress bars came first): exactly one error
    line, the last one, no traceback, non-zero exit."""
    assert result.code != 0, result
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err_lines if "error" in line.lower()]
    assert len(errors) == 1 and result.err_lines[-1] == errors[0], result.err
    assert errors[0].startswith(f"avseg {command}: error: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]
