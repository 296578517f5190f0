"""An independent reference for unilm-base at batches of 16 × 128: transformers' BertForMaskedLM.

Is unilm-base's stay at the unigram level (issue 19) ctxlm's, or this scale's? This trains the same
shape (d 768, 12 layers, 12 heads, FFN 3,072; the 8k vocabulary) with transformers' own model and
masking collator (15% of tokens, 80/10/10) on the same store and the same held-out documents, with
the optimiser ctxlm gives UniLMv2 (AdamW, β2 0.98, ε 1e-6, weight decay 0.01, linear warm-up over
4.8% of the run then linear decay, clipping at 1.0, bf16 autocast), and logs the held-out masked-LM
loss beside what a model that ignores its input scores: the cross-entropy of the training set's
unigram distribution on the same held-out targets. `--model ctxlm` trains ctxlm's `UnilmModel` of the
same shape (relative position bias off: BERT's computation) in the same loop, on the same data.

    OMP_NUM_THREADS=2 .venv/bin/python reports/quality/unilm-defaults/bert_reference.py --lr 1e-4 \
        --steps 2000 --out reports/quality/unilm-defaults/work/bert-lr1e-4-2000

Resumable: it saves every --eval-every steps and resumes from the last save when rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast,
                          get_linear_schedule_with_warmup)

from transformers.utils import ModelOutput

from ctxlm.families.unilm import UnilmConfig
from ctxlm.data.store import TokenStore
from ctxlm.models.unilm import UnilmModel
from ctxlm.tokenization import TextTokenizer

HERE = Path(__file__).parent
WORK = HERE / "work"


def chunks(store: TokenStore, documents, length: int) -> list[list[int]]:
    """Each document's tokens back to back, cut into pieces of `length` (the last, shorter one dropped)."""
    out = []
    for document in documents:
        tokens = np.concatenate(store.document(int(document))).tolist()
        out += [tokens[i: i + length] for i in range(0, len(tokens) - length + 1, length)]
    return out


class CtxlmMaskedLM(torch.nn.Module):
    """ctxlm's UniLMv2 model (relative position bias off: BERT's computation) behind BertForMaskedLM's call."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.model = UnilmModel(UnilmConfig(vocab_size=config.vocab_size, max_position_embeddings=128,
                                            relative_position_bias=False, pad_token_id=config.pad_token_id))

    def forward(self, input_ids, labels, **_):
        states = self.model.hidden_states(input_ids)  # bidirectional over non-pad tokens
        logits = self.model.mlm_head(states, self.model.embeddings.word_embeddings.weight)
        return ModelOutput(loss=torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten()))


def optimiser(model: torch.nn.Module, lr: float, steps: int):
    """AdamW as ctxlm gives UniLMv2 (β2 0.98, ε 1e-6, weight decay 0.01 on matrices and embeddings, none
    on biases and LayerNorms) and a linear warm-up over 4.8% of `steps`, then linear decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98), eps=1e-6)
    return optimizer, get_linear_schedule_with_warmup(optimizer, round(0.048 * steps), steps)


def update(model: torch.nn.Module, loss: torch.Tensor, optimizer, schedule) -> None:
    """One step: backward, clipping at 1.0, AdamW, the schedule."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def batches(examples, tokenizer, collator, size: int, generator: torch.Generator):
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    order = torch.randperm(len(examples), generator=generator).tolist()
    for i in range(0, len(order) - size + 1, size):
        yield collator([{"input_ids": [cls, *examples[j], sep]} for j in order[i: i + size]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--model", choices=("transformers", "ctxlm"), default="transformers",
                        help="ctxlm: ctxlm's UnilmModel of the same shape (absolute positions only) in this loop")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(WORK / "tok/tokenizer.json"), cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", pad_token="[PAD]", unk_token="[UNK]")
    store = TokenStore.build(["../shared/data/pretrain"], TextTokenizer.load(WORK / "tok"), cache_dir=WORK / "store",
                             fallback_encoding="latin-1")  # command.sh's store (cached)
    train_docs, valid_docs = store.split_documents(0.01, 0)  # ctxlm's split for seed 0: the same held-out documents
    train, valid = chunks(store, train_docs, 126), chunks(store, valid_docs[:50], 126)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    # what a model that ignores its input scores: the training unigram distribution (add-0.5) on held-out targets
    counts = np.bincount(np.concatenate([np.asarray(c) for c in train]), minlength=len(tokenizer)) + 0.5
    log_unigram = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    torch.manual_seed(1234)  # fixed held-out masks
    held_out = list(batches(valid, tokenizer, collator, args.batch_size, torch.Generator().manual_seed(1)))
    held_out = held_out[: args.eval_batches]
    targets = torch.cat([b["labels"][b["labels"] != -100] for b in held_out])
    unigram_loss = -log_unigram[targets].mean().item()

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = BertForMaskedLM(config) if args.model == "transformers" else CtxlmMaskedLM(config)
    optimizer, schedule = optimiser(model, args.lr, args.steps)
    step, checkpoint = 0, args.out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    log = open(args.out / "metrics.jsonl", "a")
    print(f"{len(train)} training and {len(valid)} held-out pieces; {sum(p.numel() for p in model.parameters()):,} "
          f"parameters; unigram loss on the held-out targets {unigram_loss:.4f}; from step {step}", flush=True)
    epoch, started = step // max(1, len(train) // args.batch_size), time.time()
    while step < args.steps:
        skip = step - epoch * (len(train) // args.batch_size)
        for i, batch in enumerate(batches(train, tokenizer, collator, args.batch_size,
                                          torch.Generator().manual_seed(100 + epoch))):
            if i < skip:
                continue
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**batch).loss
            update(model, loss, optimizer, schedule)
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                model.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    total = sum(model(**b).loss.item() * (b["labels"] != -100).sum().item() for b in held_out)
                valid_loss = total / len(targets)
                record = {"step": step, "train_loss": round(loss.item(), 4), "valid/mlm_loss": round(valid_loss, 4),
                          "valid/unigram_loss": round(unigram_loss, 4), "lr": args.lr,
                          "s_per_step": round((time.time() - started) / args.eval_every, 3)}
                print(json.dumps(record), file=log, flush=True)
                print(json.dumps(record), flush=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "rng": torch.get_rng_state(), "step": step}, checkpoint)
                started = time.time()
            if step >= args.steps:
                break
        epoch += 1
    if not math.isfinite(loss.item()):
        raise SystemExit("loss not finite")


if __name__ == "__main__":
    main()
