"""Write docs/cli-reference.md from the command-line parsers (tests/test_cli_reference.py checks it)."""

from pathlib import Path

from avseg.cli import reference

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"
    target.write_text(reference(), encoding="utf-8")
    print(f"wrote {target}")
