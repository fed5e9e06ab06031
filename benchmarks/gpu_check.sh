#!/usr/bin/env bash
# The GPU check of issue 18, as one prepared script: on any CUDA machine with this checkout and
# a Python that has its dependencies (the repository's .venv, or $PYTHON), it builds the
# full-size random-weight models (no downloads: HF_HUB_OFFLINE=1, nothing is installed), warms
# up, renders and prints the tables docs/benchmarks.md asks for, in a few minutes on an H100:
#
#   1. benchmarks/render.py --full-size            eager, one prompt per denoising call
#   2. benchmarks/render.py --full-size --batch 2  two prompts of an arm per call
#   3. benchmarks/render.py --full-size --compile  torch.compile, its warm-up paid up front
#   4. benchmarks/pipeline.py                      serial vs overlapped encode on this machine
#
#   benchmarks/gpu_check.sh [output file]   # default: gpu-check-<date>.md in the current folder
#
# Environment: PYTHON (default .venv/bin/python, else python3), CLIPS (4), SKIP_COMPILE=1,
# STEP_TIMEOUT seconds per step (300). Each step's table goes to the terminal and the file.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CLIPS=${CLIPS:-4}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ).md}
export HF_HUB_OFFLINE=1 PIP_NO_INDEX=1 PYTHONUNBUFFERED=1

# 0. What is here: no GPU, or a missing package, ends the check with what to do.
"$PYTHON" - <<'EOF'
import importlib, sys
missing = []
for name in ("torch", "diffusers", "transformers", "accelerate", "imagequant", "sqlalchemy",
             "pydantic_settings", "celery", "skimage"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__})")
if missing:
    sys.exit("missing: " + ", ".join(missing) + "\n-> run from a checkout whose .venv has "
             "`pip install -e '.[worker,dev]'` done (nothing is downloaded here), or set PYTHON")
import torch, diffusers
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device (torch {torch.__version__}): this check needs a GPU")
props = torch.cuda.get_device_properties(0)
print(f"{torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.0f} GiB, "
      f"torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}")
EOF

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  echo
} | tee "$OUT"

step() {
  local title=$1
  shift
  echo "## $title" | tee -a "$OUT"
  echo | tee -a "$OUT"
  if ! timeout "$STEP_TIMEOUT" "$PYTHON" "$@" 2>&1 | grep -v -e torchvision -e "^Loading" | tee -a "$OUT"; then
    echo "(step failed or ran past ${STEP_TIMEOUT} s)" | tee -a "$OUT"
  fi
  echo | tee -a "$OUT"
}

step "Eager, one prompt per call" benchmarks/render.py --full-size --clips "$CLIPS"
step "Two prompts of an arm per denoising call" benchmarks/render.py --full-size --clips "$CLIPS" --batch 2
if [[ "${SKIP_COMPILE:-0}" != 1 ]]; then
  step "torch.compile (warm-up in build s)" benchmarks/render.py --full-size --clips "$CLIPS" --compile
fi
step "Encode overlapped with a timed render stand-in (this machine's CPUs)" benchmarks/pipeline.py --clips 8 --encoders 1 4

echo "tables written to $OUT"
