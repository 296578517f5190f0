#!/bin/sh
# The full `ctxlm compare` grid on one GPU (issue 19): every pre-training variant of
# ctxlm/objectives/variants.py at palm-tiny size (GLM and UniLMv2 matched to its parameter count),
# 3 seeds, 30,000,000 pre-training tokens per variant (10x reports/compare/run.sh's CPU run), bf16;
# each cell fine-tuned to convergence (early stopping on the held-out loss of the training file's
# last 1,000 pairs, never trained on nor scored; a step cap) on
# Gigaword at 1,000 / 4,000 / 10,000 / all training pairs (PALM Table 5's question), SQuAD question
# generation, and Cornell dialog at the same sizes (perplexity). Cells run as parallel processes
# on the one GPU (PARALLEL of them); each is pre-trained once (--pretrain-dir, shared by the tasks).
#
#   nohup sh reports/compare/run-gpu.sh > reports/compare/gpu/run.log 2>&1 &
#
# Rerun to resume after a kill (finished cells are read back, interrupted runs resume). Every
# setting below can be set from the environment; the test suite runs this script on the CPU at a
# tiny size (tests/test_run_gpu_script.py). Not yet run on a GPU: the sizes are an estimate for
# about 10 minutes on one H200, see reports/compare/gpu/README.md.
set -e
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/../.."
DATA=${CTXLM_DATA:-../shared/data}
GPU=reports/compare/gpu
WORK=${WORK:-$GPU/work}
REPORTS=${REPORTS:-$GPU}
CTXLM=${CTXLM:-.venv/bin/ctxlm}
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-$GPU/palm-tiny.yaml}
RECIPES=${RECIPES:-$GPU/recipes}
TOKENS=${TOKENS:-30000000}
SEEDS=${SEEDS:-3}
PARALLEL=${PARALLEL:-18}
VOCAB=${VOCAB:-16000}
SIZES=${SIZES:-1000,4000,10000,all}
SELECTION=${SELECTION:-1000}
GIGAWORD_EVAL=${GIGAWORD_EVAL:-1000}
QG_EVAL=${QG_EVAL:-500}
CORNELL_EVAL=${CORNELL_EVAL:-1000}
OBJECTIVES=${OBJECTIVES:-$($PYTHON -c 'from ctxlm.objectives.variants import PRETRAIN_VARIANTS; print(",".join(PRETRAIN_VARIANTS))')}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Checkpoints are selected on the training file's last SELECTION pairs (WORK/<task>-select.jsonl),
# trained on from the pairs before them only (WORK/<task>-train.jsonl) and scored on the validation
# file: the selection rows are neither trained on nor scored. `all` is the number of pairs before the
# selection slice (not compare's default for the task: dialog's is 10,000), and each size is run once.
split_train() {  # task train: WORK/<task>-train.jsonl and WORK/<task>-select.jsonl, once
  [ -f $WORK/$1-select.jsonl ] && return
  total=$(wc -l < $DATA/$2)
  [ $total -gt $SELECTION ] || { echo "$2: $total pairs, not more than SELECTION=$SELECTION"; exit 1; }
  head -n $((total - SELECTION)) $DATA/$2 > $WORK/$1-train.jsonl
  tail -n $SELECTION $DATA/$2 > $WORK/$1-select.jsonl
}
task_sizes() {  # task: SIZES with all = the pairs before the selection slice, none above it, each once
  kept=$(wc -l < $WORK/$1-train.jsonl)
  echo $SIZES | tr , '\n' | sed "s/^all$/$kept/" | awk -v kept=$kept '{ print ($1 > kept ? kept : $1) }' \
    | awk '!seen[$0]++' | paste -sd, -
}
compare() {  # task eval eval-limit objectives [sizes]
  $CTXLM compare --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tokenizer \
    --config $CONFIG --budget-tokens $TOKENS --seeds $SEEDS --pretrain-dir $WORK/pretrain --cache-dir $WORK/store \
    --task $RECIPES/$1.yaml --train $WORK/$1-train.jsonl --valid $WORK/$1-select.jsonl --eval $DATA/$2 \
    --eval-limit $3 --objectives $4 ${5:+--train-limit $5} --out $WORK/$1
}
gigaword() { compare gigaword summarization/gigaword/valid.jsonl $GIGAWORD_EVAL $1 ${2:+$(task_sizes gigaword)}; }
squad_qg() { compare squad_qg qg/squad_du2017/valid.jsonl $QG_EVAL $1; }
cornell() { compare cornell dialog/cornell/valid.jsonl $CORNELL_EVAL $1 ${2:+$(task_sizes cornell)}; }

if [ "$1" = cell ]; then  # one objective's cells of one task: `sh run-gpu.sh cell TASK OBJECTIVE [SIZES]`
  $2 $3 $4 > $WORK/logs/$2-$3.log 2>&1 || { echo "$2 $3 failed: $WORK/logs/$2-$3.log"; exit 1; }
  exit 0
fi
cells() {  # task [sizes]: every objective's cells, PARALLEL processes at a time
  echo $OBJECTIVES | tr , '\n' | xargs -P $PARALLEL -I{} sh "$SELF" cell $1 {} $2
}

mkdir -p $WORK/logs
split_train gigaword summarization/gigaword/train.jsonl
split_train squad_qg qg/squad_du2017/train.jsonl
split_train cornell dialog/cornell/train.jsonl
[ -f $WORK/tokenizer/tokenizer.json ] || \
  $CTXLM tokenizer train --corpus $DATA/pretrain --vocab-size $VOCAB --out $WORK/tokenizer --fallback-encoding latin-1
# the token store once, before the parallel cells read it
$PYTHON -c "
from ctxlm.data.store import TokenStore
from ctxlm.tokenization import TextTokenizer
TokenStore.build(['$DATA/pretrain'], TextTokenizer.load('$WORK/tokenizer'), cache_dir='$WORK/store',
                 fallback_encoding='latin-1')"
# Gigaword pre-trains every cell; the other tasks fine-tune the same pre-trained cells
cells gigaword $SIZES
cells squad_qg
cells cornell $SIZES
# each task's full command (the one its report records) finds every cell done and writes the reports
gigaword $OBJECTIVES $SIZES
squad_qg $OBJECTIVES
cornell $OBJECTIVES $SIZES
for task in gigaword squad_qg cornell; do
  mkdir -p $REPORTS/$task
  cp $WORK/$task/*.md $WORK/$task/*.html $WORK/$task/*.png $REPORTS/$task/ 2>/dev/null || true
  for size in $WORK/$task/train-*; do
    [ -d "$size" ] || continue
    mkdir -p $REPORTS/$task/$(basename $size)
    cp $size/report.md $size/report.html $size/table.json $size/*.png $REPORTS/$task/$(basename $size)/
  done
  [ -f $WORK/$task/table.json ] && cp $WORK/$task/table.json $REPORTS/$task/
done
echo "reports in $REPORTS"
