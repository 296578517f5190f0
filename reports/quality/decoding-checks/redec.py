"""python redec.py MODEL_DIR... : decode 1,000 Gigaword valid rows with the gigaword recipe's decoding (64 source tokens, 20 new tokens as the demo)."""
import sys, re, torch
torch.set_num_threads(1)
from pathlib import Path
from ctxlm.tasks.seq2seq import decode_pairs, read_pairs
from ctxlm.metrics import rouge
import dataclasses
from ctxlm.config import load_finetune_config
cfg = dataclasses.replace(load_finetune_config('gigaword').decoding, max_new_tokens=20)
valid = read_pairs("summarization", Path("../shared/data/summarization/gigaword/valid.jsonl"), limit=1000)
for d in sys.argv[1:]:
    preds = decode_pairs(Path(d), valid, cfg, max_source_tokens=64, device="cpu")
    rep = sum(any(a == b for a, b in zip(p.split(), p.split()[1:]) if re.search("[a-z]", a)) for p in preds)
    print(d, {k: round(v, 2) for k, v in rouge(preds, [p.target for p in valid]).items()}, "repeats", rep, flush=True)
    Path(d, "preds-new.txt").write_text("\n".join(preds) + "\n")
