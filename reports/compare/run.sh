#!/bin/sh
# The CPU comparison of issue 33 (the design: reports/compare/PLAN.md): `ctxlm compare` of six
# variants x 3 seeds at palm-mini size (d 128, 2 + 2 layers; GLM and UniLMv2 matched to its parameter
# count), each family at its own optimiser defaults, bf16; with PALM's copy head: palm, mass, bart,
# glm-copy, unilm-copy (the objective is the difference); no pre-training: none.
#   - Matched FLOPs: F = the training FLOPs (matmuls and attention, forward and backward,
#     ctxlm/flop_count.py) of PALM's two stages on 4,000,000 tokens, counted and recorded in
#     WORK/pretrain/budget/flops.json before the first cell; every variant pre-trains for the fewest
#     steps whose FLOPs reach F (split equally between a variant's stages).
#   - Equal tuning: each variant's fine-tuning peak lr is chosen from 3e-4, 1e-3, 3e-3 by the lowest
#     held-out loss on the selection slice (the training file's last 1,000 pairs, never trained on
#     nor scored), once per variant and task (seed 0, the largest size), kept in WORK/lr/<task>/ and
#     used by every seed and size. Decoding as recipes/*.yaml commit it.
#   - The low-resource grid: Gigaword 1,000 / 4,000 / 20,000 pairs scored by ROUGE on all validation
#     pairs beside the article's first 8 words; Cornell 1,000 / 4,000 / 10,000 pairs scored by
#     perplexity on all validation pairs beside the unigram of the training targets. Every size
#     fine-tunes the same pre-trained cells (WORK/<task>/train-<N>/, compare_train_sizes' layout).
#   - The tokens-matched second view: T = the fewest tokens any pre-trained cell reached at F; the
#     pre-trained variants pre-train again to T tokens (WORK/pretrain-tokens/), fine-tuned at each
#     task's largest size only (WORK/<task>-tokens/train-<largest>/).
#
# Measured at palm-mini before the run (2026-12-06, seed 0's data, the 16,000-token vocabulary this
# script trains; budget arithmetic only, nothing trained): F = 2.152e13 FLOPs. Training FLOPs per
# counted token (input plus decoder tokens): PALM MLM 4.21M, PALM generation 6.55M, MASS 8.50M,
# BART 11.79M, GLM-copy 11.68M, UniLM-copy 10.48M; so at F: PALM 4.20M tokens (1,750 + 922 steps),
# MASS 2.53M (999), BART 1.83M (597), GLM-copy 1.84M (1,307), UniLM-copy 2.05M (914) and
# T = 1.83M tokens (BART's; the seeds' data differ a little).
#
# In phases, each one background process resumable by running it again; two cells side by side,
# one thread each. Measured in the registered run (2026-12-06/07 on this 2-core machine; run-log.md):
# the wall time where a phase ran on its own, else the cells' recorded seconds (fine-tuning, decoding
# and scoring; pre-training for the pretrain phases) halved for two side by side. That run ran
# cornell-large and cornell-small as one phase, `cornell` (212 min: over the 150 minutes PLAN.md
# allows a phase; split since). Where both are known the wall time ran about a quarter over the cells'
# halved sum (gigaword-large 92 min of cells, 115 of wall with a stop and a resume; gigaword-small 96
# and 128 with four cells rerun); tokens-gigaword is the tightest fit (its glm-copy and bart cells
# ran three processes to two cores, which inflates their seconds):
#
#   phase            what                                                       measured
#   pretrain         F, then 5 variants x 3 seeds pre-trained at F               ~58 min (cells)
#   lr-gigaword      6 variants x 3 lrs at 20K pairs (seed 0), seed 0 scored     127 min
#   lr-cornell       6 variants x 3 lrs at 10K pairs (seed 0), seed 0 scored     135 min
#   gigaword-large   seeds 1, 2 at 20K pairs                                     115 min
#   gigaword-small   3 seeds at 1K and 4K pairs                                  128 min
#   cornell-large    seeds 1, 2 at 10K pairs                                     ~73 min (cells)
#   cornell-small    3 seeds at 1K and 4K pairs                                  ~92 min (cells)
#   tokens-pretrain  T, then 5 variants x 3 seeds pre-trained to T tokens         ~38 min (cells)
#   tokens-gigaword  those cells fine-tuned at 20K pairs (3 seeds)               ~122 min (cells)
#   tokens-cornell   those cells fine-tuned at 10K pairs (3 seeds)               ~103 min (cells)
#   report           every report from the finished cells, then summarize.py    under 1 min
#
#   nohup sh reports/compare/run.sh pretrain > reports/compare/work/pretrain.log 2>&1 &
#
# `sh run.sh all` runs every phase in order. Every setting below can be set from the environment.
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
FLOPS=${FLOPS:-palm:4000000}
SEEDS=${SEEDS:-3}
PARALLEL=${PARALLEL:-2}
VOCAB=${VOCAB:-16000}
LR_GRID=${LR_GRID:-3e-4,1e-3,3e-3}
SELECTION=${SELECTION:-1000}
OBJECTIVES=${OBJECTIVES:-palm,mass,bart,glm-copy,unilm-copy,none}
GIGAWORD_SIZES=${GIGAWORD_SIZES:-1000,4000,20000}  # the largest last: it chooses the lrs
CORNELL_SIZES=${CORNELL_SIZES:-1000,4000,10000}
SUMMARIZE=${SUMMARIZE:-"$PYTHON reports/compare/summarize.py export $WORK --data $REPORTS/data && $PYTHON reports/compare/summarize.py --data $REPORTS/data --out $REPORTS"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

train_file() { case $1 in gigaword) echo $DATA/summarization/gigaword/train.jsonl;; cornell) echo $DATA/dialog/cornell/train.jsonl;; esac; }
valid_file() { case $1 in gigaword) echo $DATA/summarization/gigaword/valid.jsonl;; cornell) echo $DATA/dialog/cornell/valid.jsonl;; esac; }
sizes() { case $1 in gigaword) echo $GIGAWORD_SIZES;; cornell) echo $CORNELL_SIZES;; esac; }
largest() { sizes $1 | tr , '\n' | tail -n 1; }
smaller() { sizes $1 | tr , '\n' | sed '$d'; }  # every size but the largest
pretrained() { echo $OBJECTIVES | tr , '\n' | grep -vx none | paste -sd, -; }

# compare TASK SIZE(S) OBJECTIVES OUT PRETRAIN-DIR BUDGET-FLAG [flags]: one comparison (several sizes: train-<N>/ each)
compare() {
  task=$1 size=$2 objectives=$3 out=$4 pretrain=$5 budget=$6
  shift 6
  $CTXLM compare --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tokenizer \
    --config $CONFIG $budget --seeds $SEEDS --pretrain-dir $WORK/$pretrain --cache-dir $WORK/store \
    --task $RECIPES/$task.yaml --train $(train_file $task) --valid $WORK/$task-select.jsonl \
    --eval $(valid_file $task) --lr-grid $LR_GRID --lr-dir $WORK/lr/$task --lr-pairs $(largest $task) \
    --train-limit $size --objectives $objectives --out $out "$@"
}
flop_view() {  # TASK SIZE OBJECTIVES [flags]
  compare $1 $2 $3 $WORK/$1/train-$2 pretrain "--budget-flops $FLOPS" --no-plots ${4:-}
}
token_view() {  # TASK OBJECTIVES [flags]
  compare $1 $(largest $1) $2 $WORK/$1-tokens/train-$(largest $1) pretrain-tokens "--budget-tokens $(cat $WORK/T)" \
    --no-plots ${3:-}
}

if [ "$1" = cell ]; then  # one objective's part of a phase: `sh run.sh cell PHASE OBJECTIVE`
  phase=$2 objective=$3
  {
    case $phase in
      pretrain) flop_view gigaword $(largest gigaword) $objective --pretrain-only;;
      lr-*) flop_view ${phase#lr-} $(largest ${phase#lr-}) $objective --seeds=1;;
      *-large) flop_view ${phase%-large} $(largest ${phase%-large}) $objective;;
      *-small) for size in $(smaller ${phase%-small}); do flop_view ${phase%-small} $size $objective; done;;
      tokens-pretrain) token_view gigaword $objective --pretrain-only;;
      tokens-*) token_view ${phase#tokens-} $objective;;
    esac
  } > $WORK/logs/$phase-$objective.log 2>&1 || { echo "$phase $objective failed: $WORK/logs/$phase-$objective.log"; exit 1; }
  echo "$phase $objective done"
  exit 0
fi

setup() {  # the selection slices, the tokenizer, the token store: once, before the parallel cells
  mkdir -p $WORK/logs
  for task in gigaword cornell; do  # the training file's last pairs: never trained on (the sizes are its first)
    [ -f $WORK/$task-select.jsonl ] || tail -n $SELECTION $(train_file $task) > $WORK/$task-select.jsonl
    total=$(wc -l < $(train_file $task))
    [ $(($(largest $task) + SELECTION)) -le $total ] || { echo "$task: $(largest $task) + $SELECTION pairs > $total"; exit 1; }
  done
  if [ ! -f $WORK/tokenizer/tokenizer.json ]; then
    # the corpus and the Gigaword training articles (as the demo: news names become whole tokens)
    $PYTHON -c "
import json
rows = [json.loads(line) for line in open('$(train_file gigaword)', encoding='utf-8')][:$(largest gigaword)]
open('$WORK/gigaword-articles.txt', 'w', encoding='utf-8').writelines(r['document'] + '\n' for r in rows)"
    $CTXLM tokenizer train --corpus $DATA/pretrain $WORK/gigaword-articles.txt --vocab-size $VOCAB \
      --out $WORK/tokenizer --fallback-encoding latin-1
  fi
  [ -f $WORK/store/built ] || $PYTHON -c "
from ctxlm.data.store import TokenStore
from ctxlm.tokenization import TextTokenizer
TokenStore.build(['$DATA/pretrain'], TextTokenizer.load('$WORK/tokenizer'), cache_dir='$WORK/store',
                 fallback_encoding='latin-1')" && touch $WORK/store/built
}
cells() {  # PHASE OBJECTIVES: each objective's part, PARALLEL processes at a time
  echo $2 | tr , '\n' | xargs -P $PARALLEL -I{} sh "$SELF" cell $1 {}
}
tokens_T() {  # T: the fewest pre-training tokens of any pre-trained cell at F (its stages' records)
  $PYTHON -c "
import json, pathlib, sys
cells = {}
for done in pathlib.Path('$WORK/pretrain').glob('*-seed*/*/compare-done.json'):
    cells[done.parent.parent.name] = cells.get(done.parent.parent.name, 0) + json.loads(done.read_text())['tokens']
if not cells:
    sys.exit('no cell pre-trained at F yet: run the pretrain phase first')
print(min(cells.values()))" > $WORK/T.tmp
  mv $WORK/T.tmp $WORK/T
  echo "T = $(cat $WORK/T) tokens"
}
report() {  # every task's reports from the finished cells, then the summary
  for task in gigaword cornell; do
    compare $task $(sizes $task) $OBJECTIVES $WORK/$task pretrain "--budget-flops $FLOPS" --no-plots \
      > $WORK/logs/report-$task.log
    token_view $task $(pretrained) >> $WORK/logs/report-$task.log
    rm -rf $REPORTS/$task $REPORTS/$task-tokens && mkdir -p $REPORTS/$task $REPORTS/$task-tokens
    cp $WORK/$task/train_sizes.md $REPORTS/$task/
    for size in $(sizes $task | tr , ' '); do
      mkdir -p $REPORTS/$task/train-$size
      cp $WORK/$task/train-$size/report.md $WORK/$task/train-$size/table.json $REPORTS/$task/train-$size/
    done
    cp $WORK/$task-tokens/train-$(largest $task)/report.md $WORK/$task-tokens/train-$(largest $task)/table.json \
      $REPORTS/$task-tokens/
  done
  sh -c "$SUMMARIZE"
}

phase=${1:-all}
case $phase in
  pretrain)
    setup
    flop_view gigaword $(largest gigaword) none --pretrain-only > $WORK/logs/flops.log  # F, before any cell
    cells pretrain $(pretrained);;
  lr-gigaword|lr-cornell|gigaword-large|gigaword-small|cornell-large|cornell-small) setup; cells $phase $OBJECTIVES;;
  tokens-pretrain) setup; tokens_T; cells tokens-pretrain $(pretrained);;
  tokens-gigaword|tokens-cornell) setup; cells $phase $(pretrained);;
  report) setup; report;;
  all) for p in pretrain lr-gigaword lr-cornell gigaword-large gigaword-small cornell-large cornell-small \
                tokens-pretrain tokens-gigaword tokens-cornell report; do sh "$SELF" $p; done;;
  *) echo "usage: sh run.sh pretrain|lr-gigaword|lr-cornell|gigaword-large|gigaword-small|cornell-large|"\
"cornell-small|tokens-pretrain|tokens-gigaword|tokens-cornell|report|all"; exit 2;;
esac
echo "$phase done"
