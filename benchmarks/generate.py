"""Beam-search speed: ctxlm against transformers' `generate` on the same converted weights.

Batch 4, beam 5, source 400 tokens, exactly 64 new tokens (min = max), no-repeat-3-gram blocking,
float32. The contenders run interleaved (transformers, ctxlm, ctxlm with PALM's copy head, again
...), `--repeats` times after a warm-up; medians are reported with the ratio to transformers (the
target: ctxlm ≥ 2×), model-FLOPs utilisation (the FLOPs the leanest contender computes, per
second, over a big torch.matmul's measured FLOP/s) and whether both produced the same token ids.
A table, then one JSON line.

    python benchmarks/generate.py [--d-model 256 --layers 4 --vocab 30522 --repeats 3] [--no-copy]
"""

from __future__ import annotations

import argparse

import torch

from harness import Contender, count_flops, interleaved_medians, machine, matmul_peak, median, report
from ctxlm.config import GenerationConfig
from ctxlm.families.palm import PalmConfig
from ctxlm.device import resolve_device
from ctxlm.generation import generate
from ctxlm.models.hf import bart_from_palm
from ctxlm.models.palm import PalmModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--source", type=int, default=400)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-copy", action="store_true", help="skip ctxlm with PALM's copy head")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)

    torch.manual_seed(0)
    heads = max(1, args.d_model // 64)
    cfg = PalmConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * args.d_model,
        decoder_ffn_dim=4 * args.d_model,
        copy=False,
        max_position_embeddings=max(1024, args.source, args.new_tokens + 1),
    )
    ours = PalmModel(cfg).to(device).eval()
    bart = bart_from_palm(ours).to(device).eval()
    source = torch.randint(10, args.vocab, (args.batch, args.source), device=device)
    mask = torch.ones_like(source)
    n = args.new_tokens
    settings = dict(num_beams=args.beam, min_new_tokens=n, max_new_tokens=n, no_repeat_ngram_size=3)
    outputs = {}

    def run_hf():
        with torch.no_grad():
            outputs["hf"] = bart.generate(input_ids=source, attention_mask=mask, do_sample=False, **settings)

    def runner(model, key):
        def run():
            outputs[key] = generate(model, source, mask, GenerationConfig(**settings))

        return run

    contenders = [Contender("transformers generate", run_hf), Contender("ctxlm beam_search", runner(ours, "ours"))]
    if not args.no_copy:
        with_copy = PalmModel(PalmConfig(**{**cfg.__dict__, "copy": True})).to(device).eval()
        contenders.append(Contender("ctxlm beam_search, copy head", runner(with_copy, "copy")))
    peak = matmul_peak(device, torch.float32)
    for contender in contenders:
        contender.flops = count_flops(contender.run)
    interleaved_medians(contenders, args.repeats, device)
    same = [row[1:] for row in outputs["hf"].tolist()] == outputs["ours"].tokens
    tokens = args.batch * n
    base = median(contenders[0].times)
    work = min(c.flops for c in contenders)  # the model FLOPs: what the leanest implementation computes
    rows = [
        {
            "name": c.name,
            "tokens_per_s": tokens / median(c.times),
            "ms_per_step": median(c.times) / n * 1000,
            "ratio": base / median(c.times),
            "mfu": work / median(c.times) / peak,
        }
        for c in contenders
    ]
    info = {
        "benchmark": "generate",
        "machine": machine(device),
        "repeats": args.repeats,
        "same_token_ids": same,
        "shape": {
            "batch": args.batch,
            "beam": args.beam,
            "source": args.source,
            "new_tokens": n,
            "d_model": args.d_model,
            "layers": args.layers,
            "vocab": args.vocab,
        },
        "matmul_peak_tflops": {"fp32": peak / 1e12},
    }
    title = (
        f"beam search: batch {args.batch}, beam {args.beam}, source {args.source}, {n} new tokens; "
        f"d{args.d_model}, {args.layers}+{args.layers} layers, vocab {args.vocab}; {info['machine']['name']}; "
        f"medians of {args.repeats} interleaved runs; fp32 matmul peak {peak / 1e12:.2f} TFLOP/s; "
        f"ctxlm and transformers produced the same token ids: {same}"
    )
    report(
        title,
        rows,
        [
            ("name", "decoder", "s"),
            ("tokens_per_s", "tokens/s", ".1f"),
            ("ms_per_step", "ms/step", ".1f"),
            ("ratio", "x transformers", ".2f"),
            ("mfu", "MFU", ".1%"),
        ],
        info,
    )


if __name__ == "__main__":
    main()
