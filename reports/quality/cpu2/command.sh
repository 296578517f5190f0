# palm-tiny pre-trained vs from scratch on Gigaword after the tokenizer kept "<unk>" one token (2026-11-30).
# Two cells at a time, one thread each (pre-training beside the scratch fine-tuning); resumable.
.venv/bin/python benchmarks/quality_sweep.py --plan cpu2 --data ../shared/data --out reports/quality/cpu2 \
  --jobs 2 --threads 1 --bf16 --decodings b5-ng2-loops
# Then the two SQuAD QG cells (added to the plan later; the finished cells above are skipped), all 1,057 rows:
.venv/bin/python benchmarks/quality_sweep.py --plan cpu2 --data ../shared/data --out reports/quality/cpu2 \
  --jobs 2 --threads 1 --bf16 --eval-rows 1057 --decodings recipe greedy-loops
