#!/usr/bin/env bash
# Real-data recipe: masked-LM pretraining on WikiText-2, then SMS Spam fine-tuning, pretrained vs from scratch
# with the same fine-tuning budget. About 30 minutes on 2 CPU cores.
#   scripts/wikitext2_sms_spam.sh [OUT_DIR]        data from $ATTNFIT_SHARED_DATA (default ../shared/data)
set -euo pipefail
out=${1:-outputs/wikitext2-sms-spam}
py=${PYTHON:-.venv/bin/python}
SECONDS=0
$py -m attnfit.train experiment=wikitext2_mlm "hydra.run.dir=$out/pretrained" callbacks.progress_bar=none
echo "pretraining: ${SECONDS}s"
$py scripts/benchmark_finetune.py --pretrained "$out/pretrained" --experiment sms_spam --seeds 2 --out "$out" \
    --json "$out/summary.json"
echo "total: ${SECONDS}s"
