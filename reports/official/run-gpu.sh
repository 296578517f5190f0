#!/bin/sh
# Fine-tune microsoft/unilm's released unilm2-base-uncased on SQuAD question generation (Du et al. 2017
# split, ../shared/data/qg/squad_du2017) with s2s-ft's recipe settings (UniLMv2 Table 10, QG column:
# lr 2e-5, batch 48, warm-up ratio 0.1, label smoothing 0.1, source 464 / target 48, beam 8, GNMT
# length penalty 1.3), bf16, on one GPU; then generate and score ROUGE/BLEU beside a first-words
# baseline. Writes under reports/official/gpu/ (REPORTS).
#
#   sh reports/official/run-gpu.sh /path/to/unilm2-base-uncased      # the release directory (or <name>.bin)
#
# Steps: (1) `ctxlm convert --from-official DIR --family unilm --out ...` turns the release into a ctxlm model
# directory; (2) the validation file is cut into SELECTION rows (checkpoint selection, early stopping) and SCORED
# rows (generation and scores), disjoint by row and by source sentence; (3) `ctxlm finetune --init` with the
# recipe `unilm2-squad-qg` when this ctxlm has it, else the same settings written here; the run's length is
# this script's --max-steps (MAX_STEPS) and its batch BATCH x GRAD_ACCUM (48 x 1), which win over the recipe's
# `epochs: 16` and its 8 x 6 (Table 10's sizes; the recipe's other settings stay); (4) `ctxlm generate` on the
# scored rows, `ctxlm evaluate` of the predictions and of the baseline (each scored sentence's first
# BASELINE_WORDS words as the question).
#
# Sizing (an estimate, not measured: no GPU run yet): 10 minutes on one H200. unilm2-base is BERT-base
# (110M parameters); a QG example is about 40 source + 15 target + 15 pseudo tokens. At batch 48 and an
# assumed >= 6 optimizer steps/s in bf16, MAX_STEPS=1800 (about 86,000 pairs, 1.1 passes over the
# 75,722 training pairs; Table 10 trains 16) takes about 5 minutes; validation every 600 steps on 500
# rows, conversion and loading under a minute, beam-8 decoding of 1,000 rows (batch 32) 2-3 minutes.
# Every setting below can be set from the environment; tests/test_official_run_gpu.py runs the script on
# the CPU at a tiny size.
set -e
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")/../.."
RELEASE=${1:?usage: sh reports/official/run-gpu.sh RELEASE_DIR}
DATA=${CTXLM_DATA:-../shared/data}
QG=$DATA/qg/squad_du2017
REPORTS=${REPORTS:-reports/official/gpu}
WORK=${WORK:-$REPORTS/work}
CTXLM=${CTXLM:-.venv/bin/ctxlm}
PYTHON=${PYTHON:-.venv/bin/python}
MAX_STEPS=${MAX_STEPS:-1800}
BATCH=${BATCH:-48}
GRAD_ACCUM=${GRAD_ACCUM:-1}
EVAL_EVERY=${EVAL_EVERY:-600}
TRAIN_ROWS=${TRAIN_ROWS:-all}
SELECT_ROWS=${SELECT_ROWS:-500}
EVAL_ROWS=${EVAL_ROWS:-1000}
BEAM=${BEAM:-8}
MAX_NEW=${MAX_NEW:-48}
DECODE_BATCH=${DECODE_BATCH:-32}
BASELINE_WORDS=${BASELINE_WORDS:-10}
DEVICE=${DEVICE:-auto}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p $WORK $REPORTS

# (1) the release → a ctxlm model directory (conversion.json records the format and notes)
[ -f $WORK/init/config.json ] || $CTXLM convert --from-official "$RELEASE" --family unilm --out $WORK/init

# (2) selection rows and scored rows, disjoint (no scored row shares a sentence with a selection row)
$PYTHON - "$QG/valid.jsonl" $WORK $SELECT_ROWS $EVAL_ROWS <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(line) for line in Path(sys.argv[1]).read_text(encoding="utf-8").splitlines() if line.strip()]
work, n_select, n_eval = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
select = rows[:n_select]
seen = {row["sentence"] for row in select}
scored = [row for row in rows[n_select:] if row["sentence"] not in seen][:n_eval]
for name, part in (("select", select), ("scored", scored)):
    (work / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
print(f"selection rows {len(select)}, scored rows {len(scored)} (of {len(rows)} validation rows)")
EOF

# (3) fine-tune: the recipe when this ctxlm has it, else its settings (Table 10, QG) as a YAML here
RECIPE=unilm2-squad-qg
if [ ! -f ctxlm/recipes/$RECIPE.yaml ]; then
  RECIPE=$WORK/$RECIPE.yaml
  cat > $RECIPE <<'EOF'
task: qg
max_source_tokens: 464
max_target_tokens: 48
train:
  lr: 2.0e-5
  batch_size: 48
  warmup_ratio: 0.1
  label_smoothing: 0.1
  weight_decay: 0.01
  adam_eps: 1.0e-8
decoding:
  num_beams: 8
  max_new_tokens: 48
  min_new_tokens: 1
  length_penalty: 1.3
  length_penalty_type: gnmt
EOF
fi
LIMIT=""
[ "$TRAIN_ROWS" = all ] || LIMIT="--train-limit $TRAIN_ROWS"
[ -f $WORK/ft/model.safetensors ] || $CTXLM finetune --init $WORK/init --recipe $RECIPE --train $QG/train.jsonl \
  --valid $WORK/select.jsonl $LIMIT --out $WORK/ft --max-steps $MAX_STEPS --batch-size $BATCH \
  --grad-accum $GRAD_ACCUM --eval-every $EVAL_EVERY --select-metric valid/lm_loss --bf16 --no-progress \
  --device $DEVICE

# (4) generate on the scored rows; score it and the first-words baseline
$CTXLM generate --model $WORK/ft --input $WORK/scored.jsonl --source-field sentence --output $WORK/predictions.jsonl \
  --beam $BEAM --max-length $MAX_NEW --batch-size $DECODE_BATCH --bf16 --device $DEVICE
$PYTHON - $WORK/scored.jsonl $WORK/baseline.jsonl $BASELINE_WORDS <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(line) for line in Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()]
words = int(sys.argv[3])
Path(sys.argv[2]).write_text("".join(json.dumps({**row, "prediction": " ".join(row["sentence"].split()[:words])})
                                     + "\n" for row in rows), encoding="utf-8")
EOF
for name in predictions baseline; do
  $CTXLM evaluate --pred $WORK/$name.jsonl --ref $WORK/$name.jsonl --ref-field question \
    --metrics rouge1 rougeL bleu4 --output $WORK/$name-scores.json > /dev/null
done
cp $WORK/predictions.jsonl $WORK/init/conversion.json $REPORTS/
$PYTHON - $WORK $REPORTS <<EOF
import json, sys
from pathlib import Path
work, reports = Path(sys.argv[1]), Path(sys.argv[2])
scores = {name: json.loads((work / f"{name}-scores.json").read_text()) for name in ("predictions", "baseline")}
run = json.loads((work / "ft/run.json").read_text()) if (work / "ft/run.json").is_file() else {}
result = {"release": "$RELEASE", "recipe": "$RECIPE", "scored_rows": sum(1 for _ in open(work / "scored.jsonl")),
          "selection_rows": sum(1 for _ in open(work / "select.jsonl")), "max_steps": $MAX_STEPS, "batch": $BATCH,
          "grad_accum": $GRAD_ACCUM, "beam": $BEAM, "baseline": "first $BASELINE_WORDS words of the sentence",
          "unilm2": scores["predictions"], "first_words": scores["baseline"], "train": run.get("train", {})}
(reports / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
lines = ["| | " + " | ".join(scores["baseline"]) + " |", "|---" * (len(scores["baseline"]) + 1) + "|"]
for label, name in (("unilm2 (fine-tuned)", "predictions"), ("first words", "baseline")):
    lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in scores[name].values()) + " |")
(reports / "scores.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
