"""docs/cli-reference.md is the parsers' own description of every command (never stale)."""

from pathlib import Path

from avseg.cli import COMMANDS, reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"


def test_the_command_reference_is_current():
    text = reference()
    assert DOC.read_text(encoding="utf-8") == text, \
        "docs/cli-reference.md is stale: run `python scripts/cli_reference.py` and commit it"
    for name in COMMANDS:  # every command has its section, with its arguments
        assert f"## `avseg {name}`" in text
    assert "| `--checkpoint CHECKPOINT` | required | checkpoint written by avseg train (best.pt, last.pt) |" in text
    assert "| `--batch-size BATCH_SIZE` | 0 | clips per batch (default: train.eval_batch_size or data.batch_size) |" in text
    assert "==SUPPRESS==" not in text  # the old spellings stay out of the reference
