#!/bin/sh
# The CPU comparison (issue 19, point 7): `ctxlm compare` of five pre-training variants x 2 seeds at
# palm-mini size (d 128, 2 + 2 layers; GLM and UniLMv2 matched to its parameter count), 4,000,000
# pre-training tokens per variant, each family at its own optimiser defaults, bf16. Each cell is
# pre-trained once (--pretrain-dir) and fine-tuned to convergence (early stopping on a held-out
# slice of the training file, a step cap) on
#   - Gigaword headlines: the first 20,000 training pairs, scored by ROUGE on all 1,000 validation
#     pairs beside the article's first 8 words;
#   - Cornell dialog: the first 1,000 training pairs (the low-resource end of PALM Table 5), scored by
#     perplexity on all 2,000 validation pairs.
# The last 1,000 pairs of each training file select checkpoints (never trained on, never scored).
# With PALM's copy head: palm, bart, glm-copy, unilm-copy (the objective is the difference); no
# pre-training: none.
# Two cells run side by side, one thread each; 84 minutes on a 2-core machine (2026-12-02):
#
#   nohup sh reports/compare/run.sh > reports/compare/run.log 2>&1 &
#
# Rerun to resume after a kill (finished cells are read back, interrupted runs resume). Every
# setting below can be set from the environment.
set -e
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/../.."
DATA=${CTXLM_DATA:-../shared/data}
WORK=${WORK:-reports/compare/work}
REPORTS=${REPORTS:-reports/compare}
CTXLM=${CTXLM:-.venv/bin/ctxlm}
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-reports/compare/palm-mini.yaml}
RECIPES=${RECIPES:-reports/compare/recipes}
TOKENS=${TOKENS:-4000000}
SEEDS=${SEEDS:-2}
PARALLEL=${PARALLEL:-2}
VOCAB=${VOCAB:-16000}
OBJECTIVES=${OBJECTIVES:-palm,bart,glm-copy,unilm-copy,none}
GIGAWORD_PAIRS=${GIGAWORD_PAIRS:-20000}
CORNELL_PAIRS=${CORNELL_PAIRS:-1000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

compare() {  # task train-limit objectives
  $CTXLM compare --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tokenizer \
    --config $CONFIG --budget-tokens $TOKENS --seeds $SEEDS --pretrain-dir $WORK/pretrain --cache-dir $WORK/store \
    --task $RECIPES/$1.yaml --train $(train_file $1) --train-limit $2 --valid $WORK/$1-select.jsonl \
    --eval $(valid_file $1) --objectives $3 --out $WORK/$1
}
train_file() { case $1 in gigaword) echo $DATA/summarization/gigaword/train.jsonl;; cornell) echo $DATA/dialog/cornell/train.jsonl;; esac; }
valid_file() { case $1 in gigaword) echo $DATA/summarization/gigaword/valid.jsonl;; cornell) echo $DATA/dialog/cornell/valid.jsonl;; esac; }

if [ "$1" = cell ]; then  # one objective's cells of both tasks: `sh run.sh cell OBJECTIVE`
  { compare gigaword $GIGAWORD_PAIRS $2 && compare cornell $CORNELL_PAIRS $2; } > $WORK/logs/$2.log 2>&1 \
    || { echo "$2 failed: $WORK/logs/$2.log"; exit 1; }
  echo "$2 done"
  exit 0
fi

mkdir -p $WORK/logs
for task in gigaword cornell; do  # the selection slice: the training file's last 1,000 pairs
  [ -f $WORK/$task-select.jsonl ] || tail -n 1000 $(train_file $task) > $WORK/$task-select.jsonl
done
if [ ! -f $WORK/tokenizer/tokenizer.json ]; then
  # the corpus and the Gigaword training articles (as the demo: news names become whole tokens)
  $PYTHON -c "
import json, sys
rows = [json.loads(line) for line in open('$(train_file gigaword)', encoding='utf-8')][:$GIGAWORD_PAIRS]
open('$WORK/gigaword-articles.txt', 'w', encoding='utf-8').writelines(r['document'] + '\n' for r in rows)"
  $CTXLM tokenizer train --corpus $DATA/pretrain $WORK/gigaword-articles.txt --vocab-size $VOCAB \
    --out $WORK/tokenizer --fallback-encoding latin-1
fi
# the token store once, before the parallel cells read it
$PYTHON -c "
from ctxlm.data.store import TokenStore
from ctxlm.tokenization import TextTokenizer
TokenStore.build(['$DATA/pretrain'], TextTokenizer.load('$WORK/tokenizer'), cache_dir='$WORK/store',
                 fallback_encoding='latin-1')"
echo $OBJECTIVES | tr , '\n' | xargs -P $PARALLEL -I{} sh "$SELF" cell {}
# each task's full command (the one its report records) finds every cell done and writes the report
compare gigaword $GIGAWORD_PAIRS $OBJECTIVES
compare cornell $CORNELL_PAIRS $OBJECTIVES
for task in gigaword cornell; do
  rm -rf $REPORTS/$task && mkdir -p $REPORTS/$task
  cp $WORK/$task/report.md $WORK/$task/report.html $WORK/$task/table.json $WORK/$task/*.png $REPORTS/$task/
done
$PYTHON reports/compare/summarize.py $WORK $REPORTS/summary.md
echo "reports in $REPORTS"
