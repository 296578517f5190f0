#!/bin/sh
# UniLMv2 (unilm-tiny: d 256, 4 layers; examples of 128 tokens, bf16: unilm-tiny-128.yaml) pre-trained
# on the shared corpus in batches of 16, one thread a run:
#   defaults          the family's defaults until 2026-12-02 (lr 3e-4, warm-up 4.8%, Adam β2 0.98, ε 1e-6;
#                     the lr now a flag, the default being 6e-4)
#   collapsing        --lr 1e-3 --warmup-steps 100 --adam-beta2 0.999 --adam-eps 1e-8 (what compare and
#                     the quality sweep once gave every family)
#   lr1e-3            the defaults but --lr 1e-3
#   lr1e-3-warmup10   the defaults but --lr 1e-3 --warmup-ratio 0.1
#   lr6e-4            the defaults but --lr 6e-4 (the paper's peak rate, for base at batches of 7,680)
# each for 1,000 steps, two at a time; and
#   defaults-2000     the defaults for 2,000 steps (4M tokens; the default command, 1,000 steps of 512
#                     tokens, sees 8M: 8 s a step on one thread here, not run)
#   lr6e-4-3000       --lr 6e-4 for 3,000 steps (does the paper's rate collapse later?)
# and compare's UniLMv2 cell (unilm-compare-cell.yaml; the 16k tokenizer and store that
# reports/compare/run.sh makes; 1,336 steps, its 3M tokens) at --lr 6e-4 (cell-lr6e-4; at the
# defaults it is reports/compare's own unilm-copy cells), and the same cell without dropout
# (unilm-compare-cell-nodropout.yaml) at 6e-4 and 1e-3. Resumable: rerun the same command after a
# kill (the session that made results.md stopped lr1e-3 and lr1e-3-warmup10 early, after their check
# had spoken, to free the CPU).
#
#   nohup sh reports/quality/unilm-defaults/command.sh > reports/quality/unilm-defaults/work/run.log 2>&1 &
#
# Then `python reports/quality/unilm-defaults/summarize.py` writes results.md and losses.png.
set -e
cd "$(dirname "$0")/../../.."
DATA=${CTXLM_DATA:-../shared/data}
HERE=reports/quality/unilm-defaults
WORK=$HERE/work
CTXLM=${CTXLM:-.venv/bin/ctxlm}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p $WORK
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f $WORK/tok/tokenizer.json ] || \
  $CTXLM tokenizer train --corpus $DATA/pretrain --vocab-size 8000 --out $WORK/tok --fallback-encoding latin-1
run() {  # name [optimiser flags]
  name=$1
  shift
  $CTXLM pretrain --objective unilm --config $HERE/unilm-tiny-128.yaml --corpus $DATA/pretrain \
    --fallback-encoding latin-1 --tokenizer $WORK/tok --cache-dir $WORK/store --batch-size 16 \
    --eval-every 100 --save-every 100 --no-progress --resume auto --max-steps 1000 --out $WORK/$name "$@" \
    >> $WORK/$name.log 2>&1
}
run defaults --lr 3e-4 &
run collapsing --lr 1e-3 --warmup-steps 100 --adam-beta2 0.999 --adam-eps 1e-8 &
wait
run lr1e-3 --lr 1e-3 &
run lr1e-3-warmup10 --lr 1e-3 --warmup-ratio 0.1 &
wait
run defaults-2000 --max-steps 2000 --lr 3e-4 &
run lr6e-4 --lr 6e-4 &
wait
run lr6e-4-3000 --lr 6e-4 --max-steps 3000 &
cell() {  # name config [optimiser flags]: compare's cell, its tokenizer, store and 3M tokens
  name=$1
  config=$2
  shift 2
  $CTXLM pretrain --objective unilm --config $HERE/$config --corpus $DATA/pretrain \
    --fallback-encoding latin-1 --tokenizer reports/compare/work/tokenizer --cache-dir reports/compare/work/store \
    --batch-size 16 --eval-every 167 --save-every 167 --no-progress --resume auto --max-steps 1336 \
    --out $WORK/$name "$@" >> $WORK/$name.log 2>&1
}
cell cell-lr6e-4 unilm-compare-cell.yaml --lr 6e-4 &
wait
cell cell-nodropout unilm-compare-cell-nodropout.yaml --lr 6e-4 &
cell cell-nodropout-lr1e-3 unilm-compare-cell-nodropout.yaml --lr 1e-3 &
wait
# unilm-base (unilm-base-128.yaml) at the family's peak lr 6e-4 and at BERT's 1e-4, on both threads
# (the session that made results.md stopped them after the check had spoken, to free the CPU)
base() {  # threads steps config name [optimiser flags]
  threads=$1
  steps=$2
  config=$3
  name=$4
  shift 4
  OMP_NUM_THREADS=$threads $CTXLM pretrain --objective unilm --config $HERE/$config --corpus $DATA/pretrain \
    --fallback-encoding latin-1 --tokenizer $WORK/tok --cache-dir $WORK/store --batch-size 16 --eval-every 100 \
    --save-every 100 --no-progress --resume auto --max-steps $steps --out $WORK/$name "$@" >> $WORK/$name.log 2>&1
}
base 2 1000 unilm-base-128.yaml base-lr6e-4 --lr 6e-4  # the family default then (3e-5 for base since)
base 2 1000 unilm-base-128.yaml base-lr1e-4 --lr 1e-4
# the default command itself (batches of 8 examples of 512 tokens, fp32), on both threads; validated
# every 100 steps
OMP_NUM_THREADS=2 $CTXLM pretrain --objective unilm --config unilm-tiny --corpus $DATA/pretrain \
  --fallback-encoding latin-1 --tokenizer $WORK/tok --cache-dir $WORK/store --eval-every 100 --save-every 100 \
  --no-progress --resume auto --out $WORK/default-command >> $WORK/default-command.log 2>&1
# unilm-base for 2,000 steps at 3e-4 and 1e-4, one thread each, side by side (no rate takes it
# off the unigram level; README.md)
base 1 2000 unilm-base-128.yaml base-lr3e-4-2000 --lr 3e-4 &
base 1 2000 unilm-base-128.yaml base-lr1e-4-2000 --lr 1e-4 &
wait
# the same at 1e-4 on the AE loss alone, and BERT-like (the session that made README.md stopped both
# after step 300)
base 1 2000 unilm-base-128-ae.yaml base-ae-lr1e-4 --lr 1e-4 &
base 1 2000 unilm-base-128-bertlike.yaml base-bertlike-lr1e-4 --lr 1e-4 &
wait
# the independent reference: transformers' BertForMaskedLM of the same shape, then ctxlm's model, in
# one plain loop over the same store (the session that made README.md stopped the first at step 1,200)
OMP_NUM_THREADS=2 $PYTHON $HERE/bert_reference.py --lr 1e-4 --steps 2000 --out $WORK/bert-lr1e-4-2000 \
  >> $WORK/bert-lr1e-4-2000.log 2>&1
OMP_NUM_THREADS=2 $PYTHON $HERE/bert_reference.py --model ctxlm --lr 1e-4 --steps 2000 \
  --out $WORK/ctxlm-in-bert-loop-lr1e-4-2000 >> $WORK/ctxlm-in-bert-loop-lr1e-4-2000.log 2>&1
# Bisecting unilm-base's stay at the level (README.md, "Where the held-out loss comes from"): ctxlm's
# own examples (AE alone, single-token masks) in a plain loop, 500 steps; base-ae-lr1e-4 above resumed
# by its own command on both threads (stopped after step 500); unilm-tiny at the defaults on AE+PAR,
# on AE alone and on PAR alone (`run`, above)
OMP_NUM_THREADS=2 $PYTHON $HERE/swap.py --stop 500 --out $WORK/swap-unilm-plain \
  >> $WORK/swap-unilm-plain.log 2>&1
base 2 2000 unilm-base-128-ae.yaml base-ae-lr1e-4 --lr 1e-4
base 2 1000 unilm-base-128.yaml base-lr3e-5-1000 --lr 3e-5  # AE+PAR at a lower rate than any above
# (since 2026-12-03 unilm-base's default, so --lr 3e-5 repeats it; the session that made README.md
# stopped it at step 948 to free the CPU)
run tiny-ae+par &  # unilm-tiny-128.yaml at the defaults, 1,000 steps, one thread
run tiny-ae --unilm-objective ae &
wait
run tiny-par --unilm-objective par
# then each model's held-out loss by what the input holds at the predicted position
$PYTHON $HERE/masked_positions.py $WORK/base-lr1e-4-2000 $WORK/base-lr3e-4-2000 \
  $WORK/base-lr3e-5-1000/checkpoints/step-00000900 \
  $WORK/base-ae-lr1e-4/checkpoints/step-00000500 $WORK/tiny-ae+par $WORK/tiny-ae $WORK/tiny-par \
  --bert $WORK/bert-lr1e-4-2000 $WORK/ctxlm-in-bert-loop-lr1e-4-2000 > $HERE/masked_positions.md \
  && $PYTHON $HERE/masked_positions.py --split train $WORK/base-lr1e-4-2000 $WORK/base-lr3e-4-2000 \
  $WORK/base-lr3e-5-1000/checkpoints/step-00000900 $WORK/base-ae-lr1e-4/checkpoints/step-00000500 \
  $WORK/tiny-ae+par $WORK/tiny-ae $WORK/tiny-par > $HERE/masked_positions-train.md
