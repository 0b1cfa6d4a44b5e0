#!/usr/bin/env bash
# The GPU figures of the README's "Large models" section in one call (≤ 8 minutes on one H200), printed as JSON:
# bf16 tokens/s and MFU of gpt2-small with and without torch.compile, flash SDPA in use, local attention
# (blocked, FlexAttention, dense) at 16k and 64k tokens, peak memory with and without activation checkpointing.
#   scripts/gpu_check.sh                 # on a CUDA machine; JSON on stdout
#   scripts/gpu_check.sh --tiny          # the same code on the CPU at toy sizes (figures meaningless)
#   scripts/gpu_check.sh --no-compile    # skip the torch.compile measurement (the slowest part)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ " $* " != *" --tiny "* ]]; then
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is not available to $PYTHON (torch.cuda.is_available() is False); this check needs" \
      "a GPU. 'scripts/gpu_check.sh --tiny' runs its code on the CPU at toy sizes." >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PYTHON" scripts/gpu_check.py "$@"
