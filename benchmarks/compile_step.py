"""Does `torch.compile` of the model pay back within a run? (issue 20)

Times PALM's training step (forward, backward, fused AdamW) eagerly and through `torch.compile(model)`
(what `--compile` / `TrainConfig.compile` does), at `train_step.py`'s shape, fp32 then bf16 autocast:
the first compiled call (compilation plus one step), then medians of `--steps` interleaved steps.
The pay-back point is the compile time over the time a compiled step saves; a run shorter than that
is faster without compiling (and "never" when compiled steps are not faster).

    python benchmarks/compile_step.py [--copy] [--steps 5] [--batch 8 --source 400 --target 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from harness import Contender, interleaved_medians, machine, median, precision_context, report
from train_step import palm_config, stepper
from ctxlm.device import resolve_device
from ctxlm.models.palm import PalmModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=400)
    parser.add_argument("--target", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--copy", action="store_true", help="PALM's copy head on (default: off)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    cfg = palm_config(args, args.copy)
    src = torch.randint(10, args.vocab, (args.batch, args.source), device=device)
    dec = torch.randint(10, args.vocab, (args.batch, args.target), device=device)
    labels = torch.randint(10, args.vocab, (args.batch, args.target), device=device)
    rows = []
    for bf16 in (False, True):
        eager = PalmModel(cfg).to(device).train()
        compiled_model = PalmModel(cfg).to(device).train()
        compiled_model.load_state_dict(eager.state_dict())
        compiled = torch.compile(compiled_model)

        def loss(model):
            return model(src, decoder_input_ids=dec, labels=labels).loss

        contenders = [
            Contender("eager", stepper(eager, loss, ctxlm_optimizer=True)),
            Contender("torch.compile", stepper(compiled, loss, ctxlm_optimizer=True)),
        ]
        with precision_context(device, bf16):
            start = time.perf_counter()
            contenders[1].run()  # compiles
            first = time.perf_counter() - start
            interleaved_medians(contenders, args.steps, device)
        eager_s, compiled_s = (median(c.times) for c in contenders)
        saved = eager_s - compiled_s
        rows.append(
            {
                "precision": "bf16" if bf16 else "fp32",
                "eager_step_s": eager_s,
                "compiled_step_s": compiled_s,
                "speedup": eager_s / compiled_s,
                "first_compiled_call_s": first,
                "compile_s": first - compiled_s,
                "pays_back_after_steps": (first - compiled_s) / saved if saved > 0 else None,
            }
        )
    info = {
        "benchmark": "compile_step",
        "machine": machine(device),
        "steps": args.steps,
        "copy": args.copy,
        "shape": {
            "batch": args.batch,
            "source": args.source,
            "target": args.target,
            "d_model": args.d_model,
            "layers": args.layers,
            "vocab": args.vocab,
        },
    }
    title = (
        f"torch.compile of PALM (copy {'on' if args.copy else 'off'}): batch {args.batch} x "
        f"({args.source}+{args.target}), d{args.d_model}, {info['machine']['name']}; medians of {args.steps} "
        "interleaved steps; pays back after: steps until the compile time is saved (— never)"
    )
    report(
        title,
        rows,
        [
            ("precision", "precision", "s"),
            ("eager_step_s", "eager s", ".3f"),
            ("compiled_step_s", "compiled s", ".3f"),
            ("speedup", "speed-up", ".2f"),
            ("compile_s", "compile s", ".0f"),
            ("pays_back_after_steps", "pays back after", ".0f"),
        ],
        info,
    )


if __name__ == "__main__":
    main()
