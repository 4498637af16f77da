"""Mutation score of the core packages with mutmut (`make mutation`; not part of `make test`).

For each package below, a scratch copy of the repository gets its own mutmut configuration (the
package's files to mutate, the tests of that area to run), `mutmut run` plants every mutant and
runs those tests against it, and the counts are printed and written to a JSON file:

    python scripts/mutation.py                       # every package (hours on 2 CPU cores)
    python scripts/mutation.py metrics readers       # some of them
    python scripts/mutation.py --list                # the packages, their files and tests

A mutant is "killed" when a test fails (or times out) with it, "survived" when every test passes.
Score = killed / (killed + survived); mutants no test reaches ("no tests") count as survived.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: dict[str, tuple[list[str], list[str]]] = {
    # name: (files to mutate, tests that guard them)
    "metrics": (["src/avseg/metrics/avsbench.py", "src/avseg/metrics/avss.py", "src/avseg/metrics/cavp.py"],
                ["tests/metrics"]),
    "models": (["src/avseg/models/matcher.py", "src/avseg/models/criterion.py", "src/avseg/models/postprocess.py"],
               ["tests/models/test_matcher.py", "tests/models/test_criterion.py", "tests/models/test_postprocess.py",
                "tests/models/test_loss_values.py", "tests/models/test_ignore_set_losses.py"]),
    # the QSD architecture itself: the decomposition, recombination, decoders and the paper's extras
    "qsd": (["src/avseg/models/qsd.py", "src/avseg/models/recombination.py", "src/avseg/models/semantic_decoder.py",
             "src/avseg/models/mask_decoder.py", "src/avseg/models/qsd_extras.py"],
            ["tests/models/test_qsd_model.py", "tests/models/test_qsd_parts_values.py",
             "tests/models/test_qsd_rows_values.py", "tests/models/test_mask_decoder_values.py",
             "tests/models/test_qsd_checks.py", "tests/models/test_qsd_structure.py",
             "tests/models/test_fast_paths.py",
             "tests/models/test_build.py::test_each_ablation_row_changes_what_it_claims"]),
    "quantizer": (["src/avseg/models/quantizer.py"],
                  ["tests/models/test_quantizer.py", "tests/models/test_quantizer_lookup.py",
                   "tests/models/test_quantizer_values.py"]),
    "evaluate": (["src/avseg/engine/evaluate.py"],
                 ["tests/engine/test_evaluate.py", "tests/engine/test_eval_cli.py", "tests/engine/test_engine_parts.py",
                  "tests/engine/test_precision.py", "tests/inference/test_one_rule.py", "tests/data/test_cavp_rules.py",
                  "tests/test_cli_reference.py"]),
    "readers": (["src/avseg/data/avsbench.py", "src/avseg/data/avss.py"],
                ["tests/data/test_avsbench_readers.py", "tests/data/test_avss_reader.py",
                 "tests/data/test_frame_order.py", "tests/data/test_reader_values.py",
                 "tests/data/test_avss_reader_values.py",
                 # the readers' CAVP front end and waveform paths are tested with the CAVP data
                 "tests/data/test_cavp_rules.py", "tests/data/test_cavp_augment.py", "tests/data/test_vpo.py",
                 "tests/data/test_single_plus_cavp.py"]),
    "inference": (["src/avseg/inference/predictor.py"],
                  ["tests/inference/test_predict.py", "tests/inference/test_predict_audio_input.py",
                   "tests/inference/test_predict_cavp.py", "tests/inference/test_predict_outputs.py",
                   "tests/inference/test_onnx.py", "tests/inference/test_predictor_values.py",
                   "tests/inference/test_predictor_setup.py",
                   # the longest-side resize of frames is checked against the evaluation's there
                   "tests/inference/test_one_rule.py"]),
}
COPIED = ("src", "tests", "configs", "docs/cli-reference.md", "pyproject.toml")


def _setup_cfg(files: list[str], tests: list[str]) -> str:
    lines = ["[mutmut]", "source_paths = src", "only_mutate ="]
    lines += [f"    {f}" for f in files]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -q", "also_copy =", "    configs",
              "    docs"]  # the scratch copy's docs/ holds cli-reference.md only
    return "\n".join(lines) + "\n"


def measure(name: str, scratch: Path, max_children: int) -> dict:
    """Run mutmut on one package in `scratch/name`; the counts of its mutants."""
    files, tests = PACKAGES[name]
    work = scratch / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for item in COPIED:
        source = ROOT / item
        (work / item).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / item)
    # mutmut reads [tool.mutmut] from pyproject.toml first: this package's settings go in setup.cfg
    (work / "setup.cfg").write_text(_setup_cfg(files, tests), encoding="utf-8")
    # processes the tests start (torch.multiprocessing workers of the two-rank tests) import the
    # mutated copy too; without this they would import the installed, unmutated package
    # (made now: a folder missing when Python starts would stay unsearched in mutmut's own process)
    (work / "mutants" / "src").mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(work / "mutants" / "src")}
    start = time.perf_counter()
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run([*mutmut, "run", "--max-children", str(max_children)], cwd=work, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr, encoding="utf-8")
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=work, env=env, capture_output=True, text=True)
    stats_path = work / "mutants" / "mutmut-cicd-stats.json"
    if not stats_path.is_file():
        raise SystemExit(f"mutmut on {name} wrote no statistics; see {work / 'mutmut-run.log'}")
    stats = json.loads(stats_path.read_text())
    killed = int(stats.get("killed", 0)) + int(stats.get("timeout", 0))
    survived = int(stats.get("survived", 0)) + int(stats.get("no_tests", 0))
    return {"package": name, "files": files, "tests": tests, "mutants": int(stats.get("total", 0)),
            "killed": killed, "survived": survived, "other": stats,
            "score": round(killed / max(killed + survived, 1), 4), "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", help=f"some of {', '.join(PACKAGES)} (default: all)")
    parser.add_argument("--scratch", type=Path, default=ROOT / ".mutation", help="working copies (default .mutation/)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (default SCRATCH/results.json)")
    parser.add_argument("--list", action="store_true", help="print the packages, their files and tests")
    args = parser.parse_args(argv)
    unknown = [p for p in args.packages if p not in PACKAGES]
    if unknown:
        parser.error(f"unknown package(s) {unknown}; expected some of {', '.join(PACKAGES)}")
    if args.list:
        for name, (files, tests) in PACKAGES.items():
            print(f"{name}: {' '.join(files)}  <-  {' '.join(tests)}")
        return 0
    results = []
    for name in args.packages or list(PACKAGES):
        result = measure(name, args.scratch, args.max_children)
        results.append(result)
        print(f"{name}: {result['killed']}/{result['killed'] + result['survived']} mutants killed "
              f"({100 * result['score']:.1f} %), {result['survived']} survived, {result['wall_s']:.0f} s", flush=True)
    out = args.json or args.scratch / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}; surviving mutants: cd {args.scratch}/PACKAGE && python -m mutmut results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
