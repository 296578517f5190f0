#!/bin/sh
# The papers' NLU claims on their own kind of task (issue 19, point 4), at the CPU run's size:
# GLM's span shuffling (glm vs glm-noshuffle) on cloze FewGLUE RTE, UniLMv2's Table 6 (unilm vs
# unilm-ae, unilm vs unilm-par) on RTE classification; each with `none` and the majority-class
# baseline; palm-mini-sized models (reports/compare/palm-mini.yaml), 500,000 pre-training tokens a
# variant at each family's defaults, 2 seeds. FewGLUE has 32 training and 32 dev rows, so only a
# large effect could show. Run after reports/compare/run.sh (it reuses its tokenizer and store);
# about 25 minutes on one core:
#
#   nohup sh reports/compare/nlu/run.sh > reports/compare/nlu/run.log 2>&1 &
set -e
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/../../.."
DATA=${CTXLM_DATA:-../shared/data}
WORK=${WORK:-reports/compare/work}
REPORTS=${REPORTS:-reports/compare/nlu}
CTXLM=${CTXLM:-.venv/bin/ctxlm}
TOKENS=${TOKENS:-500000}
SEEDS=${SEEDS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
nlu() {  # name objectives
  $CTXLM compare --corpus $DATA/pretrain --fallback-encoding latin-1 --tokenizer $WORK/tokenizer \
    --config reports/compare/palm-mini.yaml --budget-tokens $TOKENS --seeds $SEEDS --pretrain-dir $WORK/nlu-pretrain \
    --cache-dir $WORK/store --task reports/compare/nlu/$1.yaml --data-dir $DATA/nlu --objectives $2 --out $WORK/nlu-$1
  rm -rf $REPORTS/$1 && mkdir -p $REPORTS/$1
  cp $WORK/nlu-$1/report.md $WORK/nlu-$1/report.html $WORK/nlu-$1/table.json $WORK/nlu-$1/*.png $REPORTS/$1/
}
nlu cloze-rte glm,glm-noshuffle,none
nlu classify-rte unilm,unilm-ae,unilm-par,none
