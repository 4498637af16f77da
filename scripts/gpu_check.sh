#!/usr/bin/env bash
# The CUDA paths of avseg end to end, for the day a GPU machine is lent: one line per check.
#
#   bash scripts/gpu_check.sh [--out DIR] [--python PY] [--require-gpu] [--dry-run]
#
# Checks (about 5-8 minutes on one recent GPU; each has its own time limit):
#   cuda            torch sees a CUDA device; prints its name, driver-side CUDA version, torch version
#   train-fp16      `avseg train` steps with train.amp=fp16 (autocast + GradScaler) on CUDA
#   train-bf16      `avseg train` steps with train.amp=bf16 on CUDA
#   train-compile   `avseg train` steps with --compile (torch.compile, inductor/triton) and bf16
#   eval-bf16       `avseg eval --amp bf16` of the checkpoint train-bf16 wrote
#   ddp-nccl        two-process DDP step under torchrun (NCCL), when 2 GPUs are present
#   bench-speed     `avseg bench speed --device cuda` (R50: backbone, QSD, TPAVI)
#   bench-train     `avseg bench train --device cuda --amp bf16` (QSD-R50 S4 config)
# Output: one line per check, "PASS name (N s): detail", "FAIL name (N s): last line of its log"
# or "SKIP name: why"; logs and JSON rows under --out (default runs/gpu_check). Exit status: 0
# when nothing failed (skips included; with --require-gpu a missing GPU is a failure), else 1.
# The training checks run on a small synthetic S4 set written first (`avseg synth`, 16 clips).
set -u

OUT=runs/gpu_check
PY=${PYTHON:-python}
REQUIRE_GPU=0
DRY=0
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || { echo "gpu_check: --python needs an interpreter" >&2; exit 2; }; PY=$2; shift 2 ;;
    --require-gpu) REQUIRE_GPU=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check: python interpreter '$PY' not found (--python PY)" >&2; exit 2; }
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }

FAILED=0
DATA="$OUT/data_s4"
CFG=configs/cpu/qsd_r18_synth_s4.yaml
STEPS=(train.max_steps=6 train.eval_every=0 train.log_every=1 data.num_workers=2 train.device=cuda "data.root=$DATA")

# check NAME TIMEOUT_S CMD...: run CMD with its log in OUT/NAME.log; print one line.
check() {
  local name=$1 limit=$2; shift 2
  if [ "$DRY" = 1 ]; then echo "DRY  $name (limit ${limit} s): $*"; return 0; fi
  local start=$SECONDS
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - start)) s): $(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-160)"
  else
    local code=$?
    [ "$code" = 124 ] && why="timed out after ${limit} s" || why="exit $code"
    echo "FAIL $name ($((SECONDS - start)) s, $why): $(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-160)"
    FAILED=1
  fi
}
skip() { echo "SKIP $1: $2"; }

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
NAMES=(cuda synth-data train-fp16 train-bf16 train-compile eval-bf16 ddp-nccl bench-speed bench-train)
if [ "$GPUS" = 0 ] && [ "$DRY" = 0 ]; then
  for name in "${NAMES[@]}"; do skip "$name" "no CUDA device (torch.cuda.is_available() is False on this machine)"; done
  if [ "$REQUIRE_GPU" = 1 ]; then echo "gpu_check: --require-gpu and no GPU" >&2; exit 1; fi
  exit 0
fi

check cuda 60 "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}')"
check synth-data 120 "$PY" -m avseg.cli synth --layout s4 --out "$DATA" --clips 16 --seed 0 --image-size 128
check train-fp16 240 "$PY" -m avseg.cli train "$CFG" "${STEPS[@]}" train.amp=fp16 "output_dir=$OUT/train_fp16"
check train-bf16 240 "$PY" -m avseg.cli train "$CFG" "${STEPS[@]}" train.amp=bf16 "output_dir=$OUT/train_bf16"
check train-compile 420 "$PY" -m avseg.cli train "$CFG" "${STEPS[@]}" "output_dir=$OUT/train_compile" --amp bf16 --compile
check eval-bf16 120 "$PY" -m avseg.cli eval "$CFG" "data.root=$DATA" --device cuda --checkpoint "$OUT/train_bf16/last.pt" \
  --split train --amp bf16 --out "$OUT/eval_bf16"
if [ "$GPUS" -ge 2 ] || [ "$DRY" = 1 ]; then
  check ddp-nccl 300 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m avseg.cli train "$CFG" \
    "${STEPS[@]}" train.max_steps=3 "output_dir=$OUT/train_ddp"
else
  skip ddp-nccl "needs 2 GPUs, found $GPUS"
fi
check bench-speed 420 "$PY" -m avseg.cli bench speed --device cuda --backbones r50 --rows backbone,qsd,tpavi \
  --repeats 10 --json "$OUT/speed_cuda.json"
check bench-train 420 "$PY" -m avseg.cli bench train configs/qsd_r50_s4.yaml --device cuda --amp bf16 --steps 5 \
  --warmup 2 --json "$OUT/train_cuda_bf16.json"
[ "$DRY" = 1 ] || echo "gpu_check: logs and JSON in $OUT"
exit $FAILED
