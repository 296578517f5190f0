import sys, json, re, torch, dataclasses
torch.set_num_threads(1)
from pathlib import Path
from ctxlm import generation
from ctxlm.config import load_finetune_config, GenerationConfig
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.tasks.seq2seq import read_pairs
from ctxlm.metrics import rouge
model_dir, rows = sys.argv[1], int(sys.argv[2])
recipe = load_finetune_config("gigaword")
valid = read_pairs(recipe.task, Path("../shared/data/summarization/gigaword/valid.jsonl"), limit=rows)
src, ref = [p.source for p in valid], [p.target for p in valid]
pred = Seq2SeqPredictor.load(model_dir, "cpu", max_source_tokens=recipe.max_source_tokens)
tok = pred.tokenizer
word_like = torch.tensor([bool(re.search(r"[a-z0-9]", t)) for t in [tok.id_to_token(i) or "" for i in range(len(pred.continuation))]])
orig = generation._process
def patched(log_probs, sequences, step, cfg, eos, continuation=None):
    log_probs = orig(log_probs, sequences, step, cfg, eos, continuation)
    last = sequences[:, -1]
    rows_ = (~continuation[last] & word_like[last]).nonzero(as_tuple=True)[0]
    log_probs[rows_, last[rows_]] = float("-inf")
    return log_probs
def rep(p):
    w = p.split(); return any(a == b for a, b in zip(w, w[1:]) if re.search("[a-z]", a))
for name in ["base", "ban"]:
    generation._process = orig if name == "base" else patched
    out = pred.generate(src, recipe.decoding, batch_size=64)
    r = rouge(out, ref)
    print(name, {k: round(v, 2) for k, v in r.items()}, "repeats", sum(map(rep, out)), flush=True)
    Path(model_dir, f"preds-{name}.txt").write_text("\n".join(out) + "\n")
