#!/bin/sh
# UniLMv2 (unilm-tiny, examples of 128 tokens, bf16: unilm-tiny-128.yaml) pre-trained on the shared
# corpus at its family's defaults (lr 3e-4, warm-up
# 4.8%, Adam β2 0.98, ε 1e-6; no optimiser flag given), beside the same run at the settings under
# which it collapsed (lr 1e-3, warm-up 100 steps, β2 0.999, ε 1e-8: what compare and the quality
# sweep gave every family). Resumable: rerun the same command after a kill (--resume auto).
#
#   nohup sh reports/quality/unilm-defaults/command.sh > reports/quality/unilm-defaults/work/run.log 2>&1 &
#
# Then `python reports/quality/unilm-defaults/summarize.py` writes results.md from the two runs'
# metrics.jsonl and run.json (held-out AE and PAR losses against the unigram entropy of the targets,
# and whether the not-learning check fired).
set -e
cd "$(dirname "$0")/../../.."
DATA=${CTXLM_DATA:-../shared/data}
WORK=reports/quality/unilm-defaults/work
CTXLM=${CTXLM:-.venv/bin/ctxlm}
STEPS=${STEPS:-1000}
mkdir -p $WORK
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f $WORK/tok/tokenizer.json ] || \
  $CTXLM tokenizer train --corpus $DATA/pretrain --vocab-size 8000 --out $WORK/tok --fallback-encoding latin-1
common="--objective unilm --config reports/quality/unilm-defaults/unilm-tiny-128.yaml --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tok \
  --cache-dir $WORK/store --max-steps $STEPS --batch-size 16 --eval-every 100 --save-every 100 --no-progress --resume auto"
$CTXLM pretrain $common --out $WORK/defaults > $WORK/defaults.log 2>&1 &
$CTXLM pretrain $common --out $WORK/collapsing --lr 1e-3 --warmup-steps 100 --adam-beta2 0.999 --adam-eps 1e-8 \
  > $WORK/collapsing.log 2>&1
wait
