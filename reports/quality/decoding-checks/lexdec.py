import sys, re, json, time, dataclasses, torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
from pathlib import Path
from ctxlm.config import load_finetune_config
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.lexicon import WordLexicon
from ctxlm.tasks.seq2seq import read_pairs
from ctxlm.metrics import rouge
G = Path("../shared/data/summarization/gigaword")
valid = read_pairs("summarization", G / "valid.jsonl", limit=1000)
train = read_pairs("summarization", G / "train.jsonl")
cfg = dataclasses.replace(load_finetune_config("gigaword").decoding, max_new_tokens=20)
words = set()
for p in train: words.update(p.source.split()); words.update(p.target.split())
for d in sys.argv[1].split(","):
    pred = Seq2SeqPredictor.load(d, "cpu", max_source_tokens=64)
    t = time.time()
    pred.lexicon = WordLexicon.from_texts(pred.tokenizer, [p.source for p in train] + [p.target for p in train])
    built = time.time() - t; t = time.time()
    out = pred.generate([p.source for p in valid], cfg, batch_size=64)
    bad = sum(any(w not in words and re.search("[a-z]", w) for w in o.split()) for o in out)
    print(d, {k: round(v, 2) for k, v in rouge(out, [p.target for p in valid]).items()}, "non-words", bad, "build s", round(built), "decode s", round(time.time() - t), flush=True)
    Path(d, "preds-lex.txt").write_text("\n".join(out) + "\n")
