# issue 8, point 1, at a rate and length where the models leave the unigram plateau (2026-11-30).
# One process per seed, one thread each, side by side (and beside the test suite): wall times are not comparable.
python benchmarks/pipeline_check.py --steps 2000 --batch-size 16 --lr 1e-3 --warmup 100 --d-model 128 --layers 2 \
    --seeds 0 --threads 1 --out runs/pipeline-check-2000-s0
python benchmarks/pipeline_check.py --steps 2000 --batch-size 16 --lr 1e-3 --warmup 100 --d-model 128 --layers 2 \
    --seeds 1 --threads 1 --out runs/pipeline-check-2000-s1
# ctxlm started from transformers' initial weights (converted), seed 0:
python benchmarks/pipeline_check.py --steps 2000 --batch-size 16 --lr 1e-3 --warmup 100 --d-model 128 --layers 2 \
    --seeds 0 --threads 1 --same-init --out runs/pipeline-check-2000-same
# results.jsonl = the first two runs' results.jsonl; results-same-init.jsonl = the third's.
