"""Where a masked LM's held-out loss comes from: the [M] positions, the kept ones, the random ones.

BERT's 80/10/10 leaves 10% of the masked positions holding their own token, which a model can copy
without reading any context; at these sizes that copy is most of what the held-out masked-LM loss
gains over the unigram level. This splits the held-out AE (masked-LM) loss by what the input holds at
the predicted position ([M], the kept token, a random token) and gives the PAR loss beside it, for
ctxlm model folders (UniLMv2 examples of `ctxlm pretrain`'s held-out documents: the 256 examples its
validation scores) and for bert_reference.py's checkpoints (`--bert`: its own held-out batches).

    .venv/bin/python reports/quality/unilm-defaults/masked_positions.py \
        reports/quality/unilm-defaults/work/base-lr1e-4-2000 --bert reports/quality/unilm-defaults/work/bert-lr1e-4-2000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ctxlm.checkpoint import load_model_dir
from ctxlm.families.unilm import UnilmDataConfig
from ctxlm.data.store import TokenStore
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.objectives.unilm import prepare_unilm_data, unilm_tokens
from ctxlm.tokenization import TextTokenizer
from ctxlm.training import collate, validation_sample

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import bert_reference  # noqa: E402


def split_losses(logits, inputs, labels, mask_id: int) -> dict[str, tuple[int, float]]:
    """Mean NLL (and count) of the labelled rows, by what the input holds there."""
    keep = labels != IGNORE_INDEX
    nll = F.cross_entropy(logits.float(), labels[keep], reduction="none")
    held, target = inputs[keep], labels[keep]
    kinds = {"[M]": held == mask_id, "kept": held == target, "random": (held != mask_id) & (held != target)}
    return {name: (int(sel.sum()), nll[sel].mean().item()) for name, sel in kinds.items()}


def unigram_log_probs(store, vocab: int) -> torch.Tensor:
    """What a model that ignores its input predicts for every row: log of the training documents'
    unigram distribution (add-0.5)."""
    train_docs, _ = store.split_documents(0.01, 0)
    tokens = np.concatenate([np.concatenate(store.document(int(d))) for d in train_docs])
    counts = np.bincount(tokens, minlength=vocab) + 0.5
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def ctxlm_batch(store, tokenizer, split: str = "valid") -> dict[str, torch.Tensor]:
    """The 256 held-out UniLMv2 examples `ctxlm pretrain`'s validation scores (or 256 training
    examples), as one batch."""
    data = UnilmDataConfig(max_length=128, objective="ae+par")
    train, valid, _ = prepare_unilm_data(store, unilm_tokens(tokenizer), data, 0)
    examples = valid if split == "valid" else train
    return collate([examples.example(int(i)) for i in validation_sample(len(examples), 256)], tokenizer.pad_id)


@torch.no_grad()
def ctxlm_split(directory: Path | None, batch, unigram, mask_id: int) -> dict[str, tuple[int, float]]:
    """`directory`'s model on `batch`; None: the `unigram` log-probabilities."""
    ae, par = batch["ae_labels"] != IGNORE_INDEX, batch["par_labels"] != IGNORE_INDEX
    if directory is None:
        ae_logits, par_logits = unigram.expand(int(ae.sum()), -1), unigram.expand(int(par.sum()), -1)
    else:
        model, _ = load_model_dir(directory, with_tokenizer=False)
        model.eval()
        states = model.hidden_states(batch["input_ids"], batch["position_ids"], batch["token_type_ids"],
                                     batch["attention_mask"])
        ae_logits, par_logits = model.lm_logits(states[ae]), model.lm_logits(states[par])
    out = split_losses(ae_logits, batch["input_ids"], batch["ae_labels"], mask_id)
    out["PAR"] = (int(par.sum()), F.cross_entropy(par_logits.float(), batch["par_labels"][par]).item())
    return out


@torch.no_grad()
def bert_split(directory: Path | None, store, unigram) -> dict[str, tuple[int, float]]:
    """bert_reference.py's held-out batches (its fixed masks) through its checkpoint; None: the
    `unigram` log-probabilities."""
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(bert_reference.WORK / "tok/tokenizer.json"), cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", pad_token="[PAD]", unk_token="[UNK]")
    _, valid_docs = store.split_documents(0.01, 0)
    valid = bert_reference.chunks(store, valid_docs[:50], 126)
    collator = DataCollatorForLanguageModeling(fast, mlm_probability=0.15)
    torch.manual_seed(1234)  # bert_reference.py's fixed held-out masks
    held = list(bert_reference.batches(valid, fast, collator, 16, torch.Generator().manual_seed(1)))[:16]
    config = BertConfig(vocab_size=len(fast), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=128, pad_token_id=fast.pad_token_id)
    inputs = torch.cat([b["input_ids"] for b in held])
    labels = torch.cat([b["labels"] for b in held])
    if directory is None:
        return split_losses(unigram.expand(int((labels != IGNORE_INDEX).sum()), -1), inputs, labels,
                            fast.mask_token_id)
    state = torch.load(directory / "checkpoint.pt", weights_only=False)["model"]
    ctxlm = any(key.startswith("model.") for key in state)
    model = bert_reference.CtxlmMaskedLM(config) if ctxlm else BertForMaskedLM(config)
    model.load_state_dict(state)
    model.eval()
    if ctxlm:
        logits = model.model.lm_logits(model.model.hidden_states(inputs))
    else:
        logits = model(input_ids=inputs).logits
    return split_losses(logits[labels != IGNORE_INDEX], inputs, labels, fast.mask_token_id)


KINDS = ("[M]", "kept", "random", "PAR")  # the table's columns


def under_work(directory: Path) -> Path:
    return directory.resolve().relative_to(bert_reference.WORK.resolve())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dirs", nargs="*", type=Path, help="ctxlm model folders (a run's or a checkpoint's)")
    parser.add_argument("--split", choices=("valid", "train"), default="valid",
                        help="train: 256 training examples instead of the held-out ones (ctxlm models; "
                             "the bert_reference rows stay held-out)")
    parser.add_argument("--bert", nargs="*", type=Path, default=[], help="bert_reference.py output folders")
    args = parser.parse_args()
    tokenizer = TextTokenizer.load(bert_reference.WORK / "tok")
    store = TokenStore.build(["../shared/data/pretrain"], tokenizer, cache_dir=bert_reference.WORK / "store",
                             fallback_encoding="latin-1")
    examples = "held-out" if args.split == "valid" else "training"
    print(f"Masked-LM loss in nats on {examples} examples by what the input holds at the predicted position, and the "
          "PAR loss; the number of targets in brackets. Made by `masked_positions.py` (the last lines of "
          "command.sh); folders under work/.\n")
    print("| model | [M] | kept | random | PAR |\n|---|---|---|---|---|")
    batch = ctxlm_batch(store, tokenizer, args.split)
    unigram, mask_id = unigram_log_probs(store, tokenizer.vocab_size), tokenizer.mask_id  # computed once
    rows = [("unigram (ctxlm's examples)", ctxlm_split(None, batch, unigram, mask_id))]
    rows += [(under_work(d), ctxlm_split(d, batch, unigram, mask_id)) for d in args.model_dirs]
    rows += [("unigram (bert_reference's pieces)", bert_split(None, store, unigram))]
    rows += [(under_work(d), bert_split(d, store, unigram)) for d in args.bert]
    for name, split in rows:
        cells = [f"{split[k][1]:.3f} ({split[k][0]})" if k in split else "—" for k in KINDS]
        print(f"| {name} | {' | '.join(cells)} |")

if __name__ == "__main__":
    main()
