"""Bisecting unilm-base's stay at the unigram level (issue 19): ctxlm's examples, or the rest?

bert_reference.py showed that ctxlm's UnilmModel of base shape leaves the level at lr 1e-4 in a plain
loop over contiguous 126-token pieces masked by transformers' collator. This trains the same model
(relative position bias off) in a like plain loop (per-tensor AdamW β2 0.98, ε 1e-6, weight decay
0.01, transformers' linear schedule with 4.8% warm-up, clipping at 1.0, bf16 autocast,
F.cross_entropy over the logits) on `ctxlm pretrain`'s own UniLMv2 examples instead: `[SOS] S1 [EOS]
S2 [EOS]` from whole sentences with segment ids and its own masking, the AE loss alone with
single-token masks (unilm-base-128-bertlike.yaml's data). It is scored like `ctxlm pretrain`:
`ctxlm.training.evaluate`'s held-out AE loss on the same 256 held-out examples.

    OMP_NUM_THREADS=2 .venv/bin/python reports/quality/unilm-defaults/swap.py --stop 500 \
        --out reports/quality/unilm-defaults/work/swap-unilm-plain
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ctxlm.families.unilm import UnilmConfig, UnilmDataConfig
from ctxlm.data.store import TokenStore
from ctxlm.models.unilm import UnilmModel
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.objectives.unilm import prepare_unilm_data, unilm_tokens
from ctxlm.tokenization import TextTokenizer
from ctxlm.training import collate, evaluate

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bert_reference import WORK, optimiser, update  # noqa: E402  (the reference's optimiser and step)


def plain_loop(model, train_examples, valid, args, pad_id: int, log) -> None:
    """bert_reference.py's optimiser and step (per-tensor AdamW, transformers' linear schedule),
    F.cross_entropy over the AE logits."""
    optimizer, schedule = optimiser(model, args.lr, args.steps)
    step, epoch, started = 0, 0, time.time()
    while step < args.stop:
        order = np.random.default_rng([0, epoch]).permutation(len(train_examples))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = collate([train_examples.example(int(i), epoch) for i in order[start: start + args.batch_size]],
                            pad_id)
            labels = batch.pop("ae_labels")
            batch.pop("par_labels", None)  # all IGNORE for the AE objective
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                states = model.hidden_states(**batch)
                keep = labels != IGNORE_INDEX
                logits = model.lm_logits(states[keep])
            loss = F.cross_entropy(logits.float(), labels[keep])
            update(model, loss, optimizer, schedule)
            step += 1
            if step % args.eval_every == 0:
                values = evaluate(model, valid, args.batch_size, pad_id, max_batches=16, bf16=True)
                record = {"step": step, "train_loss": round(loss.item(), 4),
                          "valid/ae_loss": round(values["ae_loss"], 4),
                          "s_per_step": round((time.time() - started) / args.eval_every, 3)}
                print(json.dumps(record), file=log, flush=True)
                print(json.dumps(record), flush=True)
                started = time.time()
            if step >= args.stop:
                return
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=2000, help="the schedule's length")
    parser.add_argument("--stop", type=int, default=500, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = TextTokenizer.load(WORK / "tok")
    store = TokenStore.build(["../shared/data/pretrain"], tokenizer, cache_dir=WORK / "store",
                             fallback_encoding="latin-1")
    data = UnilmDataConfig(max_length=128, objective="ae", block_prob=0.0)
    train_examples, valid, _ = prepare_unilm_data(store, unilm_tokens(tokenizer), data, 0, 128)
    torch.manual_seed(0)
    model = UnilmModel(UnilmConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128,
                                   relative_position_bias=False, pad_token_id=tokenizer.pad_id))
    print(f"{len(train_examples)} training and {len(valid)} held-out examples", flush=True)
    with open(args.out / "metrics.jsonl", "a") as log:
        plain_loop(model, train_examples, valid, args, tokenizer.pad_id, log)


if __name__ == "__main__":
    main()
