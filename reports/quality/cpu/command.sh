# The 2-core machine's runs of issue 8, as they were made (2026-11-30). Resumable: finished cells are skipped.
# 1. The plan's cells, two at a time, one thread each:
.venv/bin/python benchmarks/quality_sweep.py --plan cpu --data ../shared/data --out reports/quality/cpu \
  --jobs 2 --threads 1 --bf16 --decodings b5-ng3 b5-ng2-loops b5-ng3-loops greedy-loops &
# 2. To fit the session, two cells were stopped early with SIGTERM (the loop writes a checkpoint and the
#    cell goes on from it): pre-training stage 2 at step 1200 of 3300, the QG cell at step 1500 of 2500.
#    The pool worker of the last cell (qg-16k-lr1e-3) was paused and never ran.
# 3. The lr 3e-4 cell, beside the others once a demo run had ended:
.venv/bin/python benchmarks/quality_sweep.py --plan cpu --data ../shared/data --out reports/quality/cpu \
  --jobs 1 --threads 1 --bf16 --decodings b5-ng3 b5-ng2-loops --only giga-16k-lr3e-4
# Note: the workers of step 1 had loaded the script before "b5-ng3" set block_subword_loops=False, and
# the gigaword recipe had turned loop blocking on by then, so in giga-16k-lr1e-3 "b5-ng3" equals
# "b5-ng3-loops" (same scores). The GPU sweep's "b5-ng3" is plain trigram blocking.
