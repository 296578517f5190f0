import sys, json
from pathlib import Path
from ctxlm.tokenization import TextTokenizer
tok = TextTokenizer.load(sys.argv[1])
rows = [json.loads(l) for l in open("../shared/data/summarization/gigaword/valid.jsonl")][:1000]
def words(text):  # word -> piece tuple
    ids = tok.encode(text); cont = set(tok.continuation_ids()); out = []; cur = []
    for i in ids:
        if i in cont and cur: cur.append(i)
        else:
            if cur: out.append(tuple(cur))
            cur = [i]
    if cur: out.append(tuple(cur))
    return out
def novel_multi(text, src):
    s = set(words(src)); return [w for w in words(text) if len(w) > 1 and w not in s]
keys = list(rows[0].keys()); print(keys)
src_key, tgt_key = ("text", "summary") if "text" in rows[0] else (keys[0], keys[1])
refs = sum(bool(novel_multi(r[tgt_key], r[src_key])) for r in rows)
print("references with a multi-piece word not in the source:", refs)
for f in sys.argv[2:]:
    preds = open(f).read().splitlines()
    bad = [(p, [tok.decode(list(w)) for w in novel_multi(p, r[src_key])]) for p, r in zip(preds, rows)]
    print(f, sum(bool(b) for _, b in bad)); print([b for b in bad if b[1]][:8])
ex = [(r[tgt_key], [tok.decode(list(w)) for w in novel_multi(r[tgt_key], r[src_key])]) for r in rows]
print([e for e in ex if e[1]][:10])
