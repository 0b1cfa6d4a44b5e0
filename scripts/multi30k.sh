#!/usr/bin/env bash
# Multi30k German→English: the GRU + Bahdanau-attention baseline and a small transformer, trained side by side
# (one thread each, at most MINUTES minutes each), then validation BLEU with beam search for both.
#   scripts/multi30k.sh [OUT_DIR] [MINUTES]      data from $ATTNFIT_SHARED_DATA (default ../shared/data)
set -euo pipefail
out=${1:-outputs/multi30k}
minutes=${2:-55}
py=${PYTHON:-.venv/bin/python}
limit=$(printf '00:00:%02d:00' "$minutes")
SECONDS=0
for model in gru transformer; do
    mkdir -p "$out"
    OMP_NUM_THREADS=1 $py -m attnfit.train "experiment=multi30k_$model" "hydra.run.dir=$out/$model" \
        callbacks.progress_bar=none "+trainer.max_time=$limit" > "$out-$model.log" 2>&1 &
done
wait
echo "training: ${SECONDS}s"
for model in gru transformer; do
    $py -m attnfit.eval "checkpoint=$out/$model" split=validation "hydra.run.dir=$out/$model/eval"
done
echo "total: ${SECONDS}s"
