"""Training-step throughput of ctxlm's models against transformers on identical shapes and masks.

- palm:  PALM (copy head off, then on) vs transformers' BART with the same config (converted
         weights), batch × (source + target) tokens;
- glm:   GLM vs a transformers BERT of the same size given GLM's attention mask (Figure 2(d)) as a
         4-D boolean mask through SDPA, loss at the Part B labels;
- unilm: UniLMv2 (relative position bias on, its default; and off, like for like with BERT) vs
         transformers BERT given the same 2-D (per example) seq2seq mask, loss at the target labels.

One AdamW step each (forward, backward, update), fp32 and bf16 autocast, contenders interleaved
(A B A B ...), medians of `--steps` timed steps after one warm-up. Prints a table and one JSON line:
tokens/s, ratio to transformers, and model-FLOPs utilisation: the matmul and attention FLOPs that
the leanest contender of the family computes (counted by torch's formulas), per second, over a
big torch.matmul's FLOP/s measured at the start.

    python benchmarks/train_step.py [--family palm|glm|unilm|all] [--steps 5] [--device auto] [--ctxlm-optimizer]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from harness import Contender, count_flops, interleaved_medians, machine, matmul_peak, median, precision_context, report
from ctxlm.config import TrainConfig
from ctxlm.families.glm import GlmConfig
from ctxlm.families.palm import PalmConfig
from ctxlm.families.unilm import UnilmConfig
from ctxlm.device import resolve_device
from ctxlm.models.glm import GlmModel, glm_attention_mask
from ctxlm.models.hf import bart_from_palm
from ctxlm.models.palm import PalmModel
from ctxlm.models.unilm import UnilmModel
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.training import build_optimizer


def stepper(model, loss_fn, ctxlm_optimizer: bool = False):
    """One optimizer step of `model` on the loss `loss_fn(model)`: torch's AdamW, or (`ctxlm_optimizer`)
    the AdamW of ctxlm's training loop (`build_optimizer`: fused where torch has it, no decay on 1-D)."""
    optimizer = (
        build_optimizer(model, TrainConfig(lr=1e-4))
        if ctxlm_optimizer
        else torch.optim.AdamW(model.parameters(), lr=1e-4)
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        optimizer.step()

    return step


def bert_like(args, vocab: int, length: int, device) -> BertForMaskedLM:
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=args.d_model // 64,
        intermediate_size=4 * args.d_model,
        max_position_embeddings=max(512, length),
        attn_implementation="sdpa",
    )
    return BertForMaskedLM(cfg).to(device).train()


def palm_config(args, copy: bool = False) -> PalmConfig:
    """The benchmark's PALM: `--layers` per stack, heads of 64, FFN 4 × d."""
    return PalmConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        encoder_attention_heads=args.d_model // 64,
        decoder_attention_heads=args.d_model // 64,
        encoder_ffn_dim=4 * args.d_model,
        decoder_ffn_dim=4 * args.d_model,
        copy=copy,
        max_position_embeddings=max(1024, args.source, args.target),
    )


def palm_contenders(args, device):
    cfg = palm_config(args)
    src = torch.randint(10, args.vocab, (args.batch, args.source), device=device)
    dec = torch.randint(10, args.vocab, (args.batch, args.target), device=device)
    labels = torch.randint(10, args.vocab, (args.batch, args.target), device=device)
    ours = PalmModel(cfg).to(device).train()
    bart = bart_from_palm(ours).to(device).train()
    with_copy = PalmModel(PalmConfig(**{**cfg.__dict__, "copy": True})).to(device).train()

    smoothing = args.label_smoothing

    def ctxlm_loss(m):
        return m(src, decoder_input_ids=dec, labels=labels, label_smoothing=smoothing).loss

    def bart_loss(m):  # transformers' own loss without smoothing; with it, torch's (as the HF Trainer's)
        if not smoothing:
            return m(input_ids=src, decoder_input_ids=dec, labels=labels).loss
        logits = m(input_ids=src, decoder_input_ids=dec).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), label_smoothing=smoothing)

    return [
        Contender("transformers BART", stepper(bart, bart_loss)),
        Contender("ctxlm PALM (copy off)", stepper(ours, ctxlm_loss, args.ctxlm_optimizer)),
        Contender("ctxlm PALM (copy on)", stepper(with_copy, ctxlm_loss, args.ctxlm_optimizer)),
    ], src.numel() + dec.numel()


def glm_contenders(args, device):
    """A GLM pre-training batch: Part A of `source` tokens, Part B of `target` (labels there)."""
    length = args.source + args.target
    cfg = GlmConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.d_model // 64,
        ffn_dim=4 * args.d_model,
        max_position_embeddings=max(512, length),
    )
    ids = torch.randint(10, args.vocab, (args.batch, length), device=device)
    part_a = torch.full((args.batch,), args.source, device=device)
    positions = torch.arange(length, device=device).clamp_max(args.source - 1).expand(args.batch, -1)
    blocks = (torch.arange(length, device=device) - args.source + 1).clamp_min(0).expand(args.batch, -1)
    labels = torch.randint(10, args.vocab, (args.batch, length), device=device)
    labels[:, : args.source] = IGNORE_INDEX
    mask = glm_attention_mask(part_a, length)  # (B, 1, T, T) bool
    ours = GlmModel(cfg).to(device).train()
    bert = bert_like(args, args.vocab, length, device)
    return [
        Contender(
            "transformers BERT (GLM mask)",
            stepper(bert, lambda m: m(input_ids=ids, attention_mask=mask, labels=labels).loss),
        ),
        Contender(
            "ctxlm GLM", stepper(ours, lambda m: m(ids, positions, blocks, part_a, labels).loss, args.ctxlm_optimizer)
        ),
    ], ids.numel()


def unilm_contenders(args, device):
    """A seq2seq batch in one stream: `source` tokens bidirectional, `target` causal (labels there)."""
    length = args.source + args.target
    cfg = UnilmConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.d_model // 64,
        ffn_dim=4 * args.d_model,
        max_position_embeddings=max(512, length),
    )
    ids = torch.randint(10, args.vocab, (args.batch, length), device=device)
    index = torch.arange(length, device=device)
    allowed = (index[None, :] < args.source) | (index[None, :] <= index[:, None])  # (T, T)
    mask = allowed.expand(args.batch, -1, -1)
    labels = torch.randint(10, args.vocab, (args.batch, length), device=device)
    labels[:, : args.source] = IGNORE_INDEX
    segments = (index >= args.source).long().expand(args.batch, -1)
    bert = bert_like(args, args.vocab, length, device)

    def ctxlm_loss(m):
        return m(ids, token_type_ids=segments, attention_mask=mask, labels=labels).loss

    return [
        Contender(
            "transformers BERT (2-D mask)",
            stepper(
                bert,
                lambda m: m(input_ids=ids, token_type_ids=segments, attention_mask=mask[:, None], labels=labels).loss,
            ),
        ),
        Contender("ctxlm UniLMv2", stepper(UnilmModel(cfg).to(device).train(), ctxlm_loss, args.ctxlm_optimizer)),
        Contender(
            "ctxlm UniLMv2 (no rel. pos.)",
            stepper(
                UnilmModel(dataclasses.replace(cfg, relative_position_bias=False)).to(device).train(),
                ctxlm_loss,
                args.ctxlm_optimizer,
            ),
        ),
    ], ids.numel()


FAMILIES = {"palm": palm_contenders, "glm": glm_contenders, "unilm": unilm_contenders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="all", choices=[*FAMILIES, "all"])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4, help="per stack (PALM: encoder and decoder each)")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=400, help="source / Part A tokens")
    parser.add_argument("--target", type=int, default=100, help="target / Part B tokens")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender and precision")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="both", choices=["fp32", "bf16", "both"])
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="PALM family only (the recipes: 0.1)")
    parser.add_argument(
        "--ctxlm-optimizer",
        action="store_true",
        help="ctxlm's contenders step with the training loop's optimizer (build_optimizer) "
        "instead of torch.optim.AdamW with its defaults, as transformers' contenders",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    precisions = {"fp32": [False], "bf16": [True], "both": [False, True]}[args.precision]
    peaks = {bf16: matmul_peak(device, torch.bfloat16 if bf16 else torch.float32) for bf16 in precisions}
    rows = []
    for family in FAMILIES if args.family == "all" else [args.family]:
        contenders, tokens = FAMILIES[family](args, device)
        for contender in contenders:
            contender.flops = count_flops(contender.run)  # also the first warm-up step
        for bf16 in precisions:
            for contender in contenders:
                contender.times = []
            with precision_context(device, bf16):
                interleaved_medians(contenders, args.steps, device)
            base = median(contenders[0].times)
            work = min(c.flops for c in contenders)  # the model FLOPs: what the leanest implementation computes
            for contender in contenders:
                seconds = median(contender.times)
                rows.append(
                    {
                        "family": family,
                        "name": contender.name,
                        "precision": "bf16" if bf16 else "fp32",
                        "tokens_per_s": tokens / seconds,
                        "ratio": base / seconds,
                        "mfu": work / seconds / peaks[bf16],
                        "step_s": seconds,
                    }
                )
    info = {
        "benchmark": "train_step",
        "machine": machine(device),
        "steps": args.steps,
        "ctxlm_optimizer": "build_optimizer" if args.ctxlm_optimizer else "torch.optim.AdamW",
        "label_smoothing": args.label_smoothing,
        "shape": {
            "batch": args.batch,
            "source": args.source,
            "target": args.target,
            "d_model": args.d_model,
            "layers": args.layers,
            "vocab": args.vocab,
        },
        "matmul_peak_tflops": {("bf16" if k else "fp32"): v / 1e12 for k, v in peaks.items()},
    }
    title = (
        f"training step: batch {args.batch} x ({args.source}+{args.target}) tokens, d{args.d_model}, "
        f"{args.layers} layers per stack, vocab {args.vocab}; {info['machine']['name']}; medians of "
        f"{args.steps} interleaved steps; ctxlm's optimizer {info['ctxlm_optimizer']}; PALM label smoothing "
        f"{args.label_smoothing}; matmul peak "
        + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in info["matmul_peak_tflops"].items())
    )
    for row in rows:
        row["label"] = f"{row['precision']}  {row['name']}"
    report(
        title,
        rows,
        [
            ("label", "precision / model", "s"),
            ("tokens_per_s", "tokens/s", ".0f"),
            ("ratio", "x transformers", ".2f"),
            ("mfu", "MFU", ".1%"),
        ],
        info,
    )


if __name__ == "__main__":
    main()
