#!/bin/sh
# Regenerates reports/compare/: `ctxlm compare` of 12 pre-training variants × 3 seeds on the shared
# pre-training corpus, fine-tuned and scored on Gigaword, SQuAD question generation and Cornell
# dialog (perplexity, 10K training pairs). About 100 minutes on a 2-core machine:
#
#   nohup sh reports/compare/run.sh > reports/compare/work/run.log 2>&1 &
#
# Each cell is pre-trained once (--pretrain-dir, shared by the three tasks). Two halves of the
# objectives run side by side, one thread each; then the full command of each task (the one its
# report records) finds every cell done and writes the report. Rerun to resume after a kill.
set -e
cd "$(dirname "$0")/../.."
DATA=${CTXLM_DATA:-../shared/data}
WORK=reports/compare/work
CTXLM=${CTXLM:-.venv/bin/ctxlm}
ALL=palm,palm-nocopy,palm-noae,palm-noar,mass,bart,glm,glm-noshuffle,unilm,unilm-ae,unilm-par,none
HALF1=palm,palm-noae,mass,glm,unilm,unilm-par
HALF2=palm-nocopy,palm-noar,bart,glm-noshuffle,unilm-ae,none
export OMP_NUM_THREADS=1

[ -f $WORK/tokenizer/tokenizer.json ] || \
  $CTXLM tokenizer train --corpus $DATA/pretrain --vocab-size 8000 --out $WORK/tokenizer --fallback-encoding latin-1

compare() {  # task recipe train valid eval-limit objectives
  $CTXLM compare --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tokenizer \
    --config reports/compare/palm-mini.yaml --budget-tokens 700000 --seeds 3 \
    --pretrain-dir $WORK/pretrain --cache-dir $WORK/store \
    --task reports/compare/recipes/$1.yaml --train $DATA/$2 --valid $DATA/$3 --eval-limit $4 \
    --objectives $5 --out $WORK/$1
}
tasks() {  # objectives
  compare gigaword summarization/gigaword/train.jsonl summarization/gigaword/valid.jsonl 1000 $1
  compare squad_qg qg/squad_du2017/train.jsonl qg/squad_du2017/valid.jsonl 500 $1
  compare cornell dialog/cornell/train.jsonl dialog/cornell/valid.jsonl 1000 $1
}

tasks $HALF1 > $WORK/half1.log 2>&1 &
sleep 30  # the first writes the shared folders' settings
tasks $HALF2 > $WORK/half2.log 2>&1
wait
tasks $ALL
for task in gigaword squad_qg cornell; do
  mkdir -p reports/compare/$task
  cp $WORK/$task/report.md $WORK/$task/report.html $WORK/$task/table.json $WORK/$task/*.png reports/compare/$task/
done
.venv/bin/python reports/compare/summarize.py $WORK reports/compare/summary.md
