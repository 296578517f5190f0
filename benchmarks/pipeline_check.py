"""Independent check of ctxlm's training pipeline against transformers (issue 8, point 1).

The same tiny encoder-decoder (palm-tiny's shape, copy head off) is trained from scratch on the same
Gigaword pairs two ways, with the same tokenizer, batches (in the same order), learning rate,
schedule, clipping, weight decay and label smoothing:

- **ctxlm**: `ctxlm.tasks.seq2seq.finetune` (its own model, layout, loss and training loop);
- **transformers**: `BartForConditionalGeneration` with transformers' own initialisation, a plain
  PyTorch loop, transformers' `LabelSmoother` (what `Seq2SeqTrainer` uses) and
  `get_linear_schedule_with_warmup`.

Both are then scored the same way: token-level validation NLL (no smoothing) over the validation
pairs, and ROUGE-1/2/L (rouge-score) of beam-search headlines (each library's own beam search).
Over several seeds each, the two must agree within seed noise. Prints a table and one JSON line.

    python benchmarks/pipeline_check.py --steps 1500 --seeds 0 1 --out reports/pipeline-check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GIGAWORD = ROOT.parent / "shared" / "data" / "summarization" / "gigaword"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(GIGAWORD))
    p.add_argument("--out", default=str(ROOT / "runs" / "pipeline-check"))
    p.add_argument("--config", default="palm-tiny")
    p.add_argument("--d-model", type=int, help="override the config's width (heads: d/64, FFN: 4d)")
    p.add_argument("--layers", type=int, help="override the encoder and decoder depth")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--max-source", type=int, default=64)
    p.add_argument("--max-target", type=int, default=24)
    p.add_argument("--valid-pairs", type=int, default=500)
    p.add_argument("--decode-pairs", type=int, default=200)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--same-init",
        action="store_true",
        help="start ctxlm from transformers' initial weights (converted), to set initialisation aside",
    )
    return p.parse_args(argv)


def tokenizer_for(args, out: Path):
    from ctxlm.tokenization import TextTokenizer, train_tokenizer

    path = out / "tokenizer"
    if (path / "tokenizer.json").is_file():
        return TextTokenizer.load(path)
    return train_tokenizer([Path(args.data) / "train.jsonl"], args.vocab_size, path, text_field="document")


def recipe_for(args, seed: int):
    from ctxlm.config import FinetuneConfig, TrainConfig

    train = TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        max_steps=args.steps,
        warmup_steps=args.warmup,
        label_smoothing=args.label_smoothing,
        weight_decay=0.01,
        clip_norm=1.0,
        eval_every=0,
        save_every=0,
        log_every=25,
        seed=seed,
        progress=False,
        select_metric=None,
    )
    return FinetuneConfig(
        task="summarization", max_source_tokens=args.max_source, max_target_tokens=args.max_target, train=train
    )


def model_config_for(args, tokenizer):
    from ctxlm.config_loading import named_model_config
    from ctxlm.pretraining import model_config_for_tokenizer

    overrides = {}
    if args.d_model:
        heads = max(1, args.d_model // 64)
        overrides.update(
            d_model=args.d_model,
            encoder_ffn_dim=4 * args.d_model,
            decoder_ffn_dim=4 * args.d_model,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
        )
    if args.layers:
        overrides.update(encoder_layers=args.layers, decoder_layers=args.layers)
    return model_config_for_tokenizer(named_model_config(args.config, copy=False, **overrides), tokenizer)


# ------------------------------------------------------------------------------- transformers side
def hf_batch(batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["input_ids"].ne(pad_id),
        "decoder_input_ids": batch["decoder_input_ids"],
        "labels": batch["labels"],
    }


def train_transformers(args, seed: int, tokenizer, model_config, examples, out: Path):
    """BartForConditionalGeneration trained by a plain loop over ctxlm's batch order."""
    from transformers import BartForConditionalGeneration, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import LabelSmoother

    from ctxlm.models.hf import bart_config_from_palm
    from ctxlm.training import BatchStream

    torch.manual_seed(seed)
    model = BartForConditionalGeneration(bart_config_from_palm(model_config)).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup, args.steps)
    smoother = LabelSmoother(epsilon=args.label_smoothing)
    stream = BatchStream(examples, args.batch_size, seed)
    losses = []
    for step in range(args.steps):
        _, batch = stream.batch(step, tokenizer.pad_id)
        batch = hf_batch(batch, tokenizer.pad_id)
        labels = batch.pop("labels")
        outputs = model(**batch)
        loss = smoother({"logits": outputs.logits}, labels, shift_labels=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


@torch.no_grad()
def validation_nll(forward_logits, examples, pad_id: int, batch_size: int = 64) -> float:
    """Token-level NLL (nats) over every example, no label smoothing."""
    from ctxlm.training import collate

    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate([examples.example(i) for i in range(start, min(len(examples), start + batch_size))], pad_id)
        logits = forward_logits(batch).float()
        labels = batch["labels"]
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
        )
        count += int(labels.ne(-100).sum())
    return total / count


@torch.no_grad()
def hf_headlines(model, tokenizer, sources: list[str], args) -> list[str]:
    out = []
    for start in range(0, len(sources), 16):
        ids = [
            [tokenizer.cls_id] + tokenizer.encode(s)[: args.max_source - 2] + [tokenizer.sep_id]
            for s in sources[start : start + 16]
        ]
        width = max(map(len, ids))
        input_ids = torch.tensor([i + [tokenizer.pad_id] * (width - len(i)) for i in ids])
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=input_ids.ne(tokenizer.pad_id),
            num_beams=args.beams,
            max_new_tokens=args.max_target,
            early_stopping=True,
            decoder_start_token_id=tokenizer.cls_id,
            bos_token_id=tokenizer.cls_id,
            eos_token_id=tokenizer.sep_id,
            pad_token_id=tokenizer.pad_id,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            no_repeat_ngram_size=0,
            length_penalty=1.0,
        )
        out.extend(tokenizer.decode(row.tolist()) for row in generated)
    return out


def bart_initial_weights(seed: int, model_config, tokenizer, directory: Path) -> Path:
    """transformers' initialisation of the BART that `train_transformers` builds for this seed,
    converted to a ctxlm model directory (`--same-init`)."""
    from transformers import BartForConditionalGeneration

    from ctxlm.checkpoint import save_model_dir
    from ctxlm.models.hf import bart_config_from_palm, palm_from_bart

    torch.manual_seed(seed)
    bart = BartForConditionalGeneration(bart_config_from_palm(model_config))
    return save_model_dir(directory, palm_from_bart(bart, config=model_config), tokenizer)


# ------------------------------------------------------------------------------------- the check
def run_seed(args, seed: int, tokenizer, out: Path, train_path: Path, valid_pairs) -> list[dict]:
    from ctxlm.config import GenerationConfig
    from ctxlm.tasks import ScratchModel
    from ctxlm.tasks.seq2seq import decode_pairs, finetune, pair_examples, read_pairs
    from ctxlm.metrics import rouge
    from ctxlm.checkpoint import load_model_dir

    recipe = recipe_for(args, seed)
    model_config = model_config_for(args, tokenizer)
    references = [p.target for p in valid_pairs[: args.decode_pairs]]
    sources = [p.source for p in valid_pairs[: args.decode_pairs]]
    valid_examples = pair_examples(model_config, tokenizer, valid_pairs, recipe)
    rows = []

    started = time.perf_counter()
    run_dir = out / f"ctxlm-seed{seed}"
    if not (run_dir / "model.safetensors").is_file():
        start = dict(scratch=ScratchModel(model_config, tokenizer))
        if args.same_init:  # the very weights train_transformers starts from, as a ctxlm model directory
            start = dict(init=bart_initial_weights(seed, model_config, tokenizer, out / f"bart-init-seed{seed}"))
        finetune(train_path, None, run_dir, recipe, **start)
    seconds = time.perf_counter() - started
    model, _ = load_model_dir(run_dir)
    model.eval()
    nll = validation_nll(
        lambda b: (
            model(
                input_ids=b["input_ids"],
                decoder_input_ids=b["decoder_input_ids"],
                labels=b["labels"],
                return_log_probs=True,
            ).log_probs
        ),
        valid_examples,
        tokenizer.pad_id,
    )
    decoding = GenerationConfig(
        num_beams=args.beams, max_new_tokens=args.max_target, length_penalty=1.0, no_repeat_ngram_size=0
    )
    predictions = decode_pairs(run_dir, valid_pairs[: args.decode_pairs], decoding, max_source_tokens=args.max_source)
    train_loss = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows.append(
        {
            "impl": "ctxlm",
            "seed": seed,
            "valid_nll": nll,
            "seconds": seconds,
            "final_train_loss": [r["loss"] for r in train_loss if "loss" in r][-1],
            **rouge(predictions, references),
            "example": predictions[:3],
        }
    )

    train_examples = pair_examples(model_config, tokenizer, read_pairs("summarization", train_path), recipe)
    started = time.perf_counter()
    hf_model, losses = train_transformers(args, seed, tokenizer, model_config, train_examples, out)
    seconds = time.perf_counter() - started
    nll = validation_nll(
        lambda b: hf_model(**{k: v for k, v in hf_batch(b, tokenizer.pad_id).items() if k != "labels"}).logits,
        valid_examples,
        tokenizer.pad_id,
    )
    predictions = hf_headlines(hf_model, tokenizer, sources, args)
    rows.append(
        {
            "impl": "transformers",
            "seed": seed,
            "valid_nll": nll,
            "seconds": seconds,
            "final_train_loss": statistics.mean(losses[-50:]),
            **rouge(predictions, references),
            "example": predictions[:3],
        }
    )
    return rows


def main(argv=None) -> int:
    from ctxlm.tasks.seq2seq import read_pairs

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []
    tokenizer = tokenizer_for(args, out)
    data = Path(args.data)
    valid_pairs = read_pairs("summarization", data / "valid.jsonl", limit=args.valid_pairs)
    for seed in args.seeds:
        if any(r["seed"] == seed for r in done):
            continue
        rows = run_seed(args, seed, tokenizer, out, data / "train.jsonl", valid_pairs)
        with open(results_path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        done.extend(rows)
        print(
            f"seed {seed}: " + "; ".join(f"{r['impl']} nll {r['valid_nll']:.4f} R-L {r['rougeL']:.2f}" for r in rows),
            flush=True,
        )
    print(f"\n{'impl':14s} {'valid NLL':>16s} {'ROUGE-1':>14s} {'ROUGE-2':>14s} {'ROUGE-L':>14s}")
    summary = {}
    for impl in ("ctxlm", "transformers"):
        rows = [r for r in done if r["impl"] == impl]
        cells = {}
        for key in ("valid_nll", "rouge1", "rouge2", "rougeL"):
            values = [r[key] for r in rows]
            cells[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        summary[impl] = {k: {"mean": m, "std": s} for k, (m, s) in cells.items()}
        print(f"{impl:14s} " + " ".join(f"{m:8.3f} ± {s:5.3f}" for m, s in cells.values()))
    gap = summary["ctxlm"]["valid_nll"]["mean"] - summary["transformers"]["valid_nll"]["mean"]
    noise = max(summary["ctxlm"]["valid_nll"]["std"], summary["transformers"]["valid_nll"]["std"], 1e-3)
    print(
        json.dumps(
            {
                "benchmark": "pipeline_check",
                "steps": args.steps,
                "seeds": args.seeds,
                "nll_gap": gap,
                "seed_std": noise,
                "summary": summary,
                "command": " ".join(sys.argv),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
