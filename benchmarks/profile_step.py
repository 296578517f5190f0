"""Where a PALM training step spends its time (issue 20): torch.profiler over a few AdamW steps
(forward, backward, update) of PALM with the copy head off and on, fp32 and bf16 autocast, each
operator's own time attributed to a part of the model.

Attribution: the script (not the library) labels the encoder, the decoder, the embeddings, the
vocabulary projection and loss, and the copy head's pieces with `record_function` (module hooks
and wrapped functions); a backward node is charged to the label of the forward operator that made
it (matched by the autograd sequence number); casts (`aten::_to_copy` and its backward) and
the optimizer are parts of their own. The parts add up to the profiled steps' total time.

Scenarios, each in a fresh process (the copy head's choice of kernel is made once per process):
- plain:      `model(src, decoder_input_ids=dec, labels=labels).loss` + AdamW after warm-up steps;
- train_step_before_fix: the same, with the copy head's dispatch-mode check turned off (the library
              before issue 20's fix: eq. 3's compiled kernel then never compiles in the process);
- train_step: the same step as `benchmarks/train_step.py` builds it (its `stepper`), whose first
              call runs under `harness.count_flops` (a TorchDispatchMode), as train_step.py does;
- trainer:    the training loop's step for a fine-tuning recipe: label smoothing 0.1, the loss from
              `loss_sums` over `target_counts` (`batch_loss`), gradient clipping, `build_optimizer`.
Each also times transformers' BART (the train_step.py reference; in `trainer`, with torch's label-
smoothed cross-entropy on its logits) interleaved with the PALM steps.

    python benchmarks/profile_step.py [--batch 8 --source 400 --target 100] [--steps 5] [--profile-steps 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

import train_step
from harness import count_flops, machine, median, precision_context
from ctxlm.config import TrainConfig
from ctxlm.families.palm import PalmConfig
from ctxlm.models import palm, pointer_generator
from ctxlm.models.hf import bart_from_palm
from ctxlm.models.palm import PalmModel, batch_loss
from ctxlm.training import build_optimizer

LABEL = "part:"  # prefix of the script's record_function labels
FUSED = "vocab projection + loss, fused (copy off)"  # ctxlm.models.vocab_cross_entropy: one op for both
PARTS = [
    "encoder",
    "decoder",
    "embeddings",
    "vocab projection",
    "loss over V (CE, logsumexp, gathers)",
    FUSED,
    "copy: eq. 3 scores",
    "copy: softmax, masks, z, gate (eqs. 4-5, 8)",
    "copy: mixture at labels (eqs. 6-7)",
    "copy: W_m, W_v, W_s and other matmuls",
    "dtype casts",
    "optimizer",
    "grad accumulation",
    "other",
]
EQ3, MATMUL_PART = "copy: eq. 3 scores", "copy: W_m, W_v, W_s and other matmuls"
BACKWARD = "autograd::engine::evaluate_function: "
MATMULS = {"aten::linear", "aten::matmul", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
LOSS_OPS = {
    "aten::cross_entropy_loss",
    "aten::log_softmax",
    "aten::_log_softmax",
    "aten::nll_loss",
    "aten::nll_loss_nd",
    "aten::nll_loss2d",
    "aten::logsumexp",
    "aten::gather",
}


# ------------------------------------------------------------------------------------ labels
def labelled(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with record_function(LABEL + name):
            return fn(*args, **kwargs)

    return wrapper


def label_module(module: torch.nn.Module, name: str) -> None:
    """record_function around the module's forward, by hooks."""
    scopes = []

    def enter(*_):
        scope = record_function(LABEL + name)
        scope.__enter__()
        scopes.append(scope)

    def leave(*_):
        scopes.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def install_labels(model: PalmModel) -> None:
    label_module(model.encoder, "encoder")
    label_module(model.decoder, "decoder")
    model.embed = labelled("embeddings", model.embed)
    if model.pointer is None:
        return
    pointer = model.pointer
    pointer.label_log_likelihood = labelled("copy: mixture at labels (eqs. 6-7)", pointer.label_log_likelihood)
    pointer.copy_attention = labelled("copy: softmax, masks, z, gate (eqs. 4-5, 8)", pointer.copy_attention)
    pointer.project_memory = labelled(MATMUL_PART, pointer.project_memory)


def patch_library_functions() -> None:
    """Labels on module-level functions the models call through their module globals."""
    pointer_generator.additive_scores = labelled(EQ3, pointer_generator.additive_scores)
    palm.tied_logits = labelled("vocab projection", palm.tied_logits)
    palm.token_nll = labelled("loss over V (CE, logsumexp, gathers)", palm.token_nll)
    palm.linear_cross_entropy = labelled(FUSED, palm.linear_cross_entropy)


# ------------------------------------------------------------------------------------ attribution
def forward_part(event, vocab: int) -> str:
    """The part of a forward-pass event: its innermost label, refined by the operator right below
    that label (the vocabulary matmul and the loss over V inside the copy head's label)."""
    top, node = event, event
    while node is not None and not node.name.startswith(LABEL):
        if node.name.startswith("Optimizer."):
            return "optimizer"
        top, node = node, node.cpu_parent
    if node is None:
        return "other"
    part = node.name[len(LABEL) :]
    over_vocab = any(vocab in shape for shape in top.input_shapes if isinstance(shape, (list, tuple)))
    if part.startswith("copy: mixture") and (top.name in LOSS_OPS or over_vocab and top.name not in MATMULS):
        return "loss over V (CE, logsumexp, gathers)"
    if (part.startswith("copy:") or part == "vocab projection") and part != EQ3 and top.name in MATMULS:
        return "vocab projection" if over_vocab else MATMUL_PART
    return part


def is_cast(event) -> bool:
    node = event
    while node is not None and not node.name.startswith(LABEL):
        if node.name == "aten::_to_copy" or node.name.startswith(BACKWARD + "ToCopyBackward"):
            return True
        node = node.cpu_parent
    return False


def attribute(events, vocab: int) -> dict[str, float]:
    """Self CPU time (µs) per part over all events."""
    forward_by_seq = {}  # sequence number -> the part of the last forward operator that had it
    for event in sorted(events, key=lambda e: e.time_range.start):
        if event.sequence_nr >= 0 and not _in_backward(event):
            forward_by_seq[event.sequence_nr] = forward_part(event, vocab)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name.startswith(LABEL):
            part = event.name[len(LABEL) :]  # the label's own time: Python between its operators
        elif is_cast(event):
            part = "dtype casts"
        else:
            node = _in_backward(event)
            if node is None:
                part = forward_part(event, vocab)
            elif "AccumulateGrad" in node.name:
                part = "grad accumulation"
            elif "_FusedScores" in node.name or "_AdditiveScores" in node.name:
                part = EQ3
            else:
                part = forward_by_seq.get(node.sequence_nr, "other")
        totals[part] += event.self_cpu_time_total
    return totals


def _in_backward(event):
    """The backward node (evaluate_function event) above `event`, if any."""
    node = event
    while node is not None:
        if node.name.startswith(BACKWARD):
            return node
        node = node.cpu_parent
    return None


def eq3_path(events) -> str:
    names = {e.name for e in events}
    fused = any("_FusedScores" in n for n in names)
    direct = any("_AdditiveScores" in n for n in names)
    return {
        (True, False): "compiled exp-form kernel",
        (False, True): "direct tanh (chunked)",
        (True, True): "both",
        (False, False): "none",
    }[(fused, direct)]


# ------------------------------------------------------------------------------------ models and steps
def palm_config(args, copy: bool) -> PalmConfig:
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


def batch(args):
    src = torch.randint(10, args.vocab, (args.batch, args.source))
    dec = torch.randint(10, args.vocab, (args.batch, args.target))
    labels = torch.randint(10, args.vocab, (args.batch, args.target))
    labels[:, : args.target // 4] = src[:, : args.target // 4]  # some labels can be copied
    return src, dec, labels


def trainer_stepper(model, src, dec, labels):
    """The training loop's `optimizer_step` for one micro-batch (`ctxlm.training`), less its host syncs."""
    cfg = TrainConfig(label_smoothing=0.1)
    optimizer = build_optimizer(model, cfg)
    batch_fields = {"input_ids": src, "decoder_input_ids": dec, "labels": labels}

    def step():
        counts = {k: v.float() for k, v in model.target_counts(batch_fields).items()}
        optimizer.zero_grad(set_to_none=True)
        out = model(**batch_fields, label_smoothing=cfg.label_smoothing)
        batch_loss(out.loss_sums, counts).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()

    return step


def run_scenario(args) -> dict:
    torch.manual_seed(0)
    patch_library_functions()
    src, dec, labels = batch(args)
    off = PalmModel(palm_config(args, copy=False)).train()
    on = PalmModel(palm_config(args, copy=True)).train()
    bart = bart_from_palm(off).train()
    install_labels(off)
    install_labels(on)

    def plain_loss(m):
        return m(src, decoder_input_ids=dec, labels=labels).loss

    smoothing = 0.1 if args.scenario == "trainer" else 0.0

    def bart_loss(m):  # as train_step.py's: torch's label-smoothed cross-entropy for the trainer scenario
        if not smoothing:
            return m(input_ids=src, decoder_input_ids=dec, labels=labels).loss
        logits = m(input_ids=src, decoder_input_ids=dec).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), label_smoothing=smoothing)

    steps = {"transformers BART": train_step.stepper(bart, bart_loss)}
    if args.scenario == "trainer":
        steps["PALM copy off"] = trainer_stepper(off, src, dec, labels)
        steps["PALM copy on"] = trainer_stepper(on, src, dec, labels)
    else:
        steps["PALM copy off"] = train_step.stepper(off, plain_loss)
        steps["PALM copy on"] = train_step.stepper(on, plain_loss)
    if args.scenario == "train_step_before_fix":  # the library as it was: no dispatch-mode check
        pointer_generator._dispatch_mode_active = lambda: False
    if args.scenario.startswith("train_step"):
        for step in steps.values():
            count_flops(step)  # train_step.py's first call of every contender
    device = torch.device("cpu")
    results = {"scenario": args.scenario, "fused_kernel_usable": None, "runs": []}
    for bf16 in args.precisions:
        with precision_context(device, bf16):
            for step in steps.values():
                for _ in range(args.warmup):
                    step()
            times = defaultdict(list)
            for _ in range(args.steps):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - start)
            for name in ["PALM copy off", "PALM copy on"]:
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    for _ in range(args.profile_steps):
                        steps[name]()
                events = prof.events()
                parts = attribute(events, args.vocab)
                table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
                results["runs"].append(
                    {
                        "precision": "bf16" if bf16 else "fp32",
                        "model": name,
                        "step_s": median(times[name]),
                        "bart_step_s": median(times["transformers BART"]),
                        "profiled_step_s": sum(parts.values()) / 1e6 / args.profile_steps,
                        "parts_s": {k: v / 1e6 / args.profile_steps for k, v in parts.items()},
                        "eq3_path": eq3_path(events) if "on" in name else None,
                        "op_table": table,
                    }
                )
    results["fused_kernel_usable"] = pointer_generator._fused_usable
    return results


# ------------------------------------------------------------------------------------ report
def print_scenario(result: dict, out) -> None:
    print(
        f"\n=== scenario: {result['scenario']}  (compiled eq. 3 kernel usable in this process: "
        f"{result['fused_kernel_usable']})",
        file=out,
    )
    for run in result["runs"]:
        ratio = run["bart_step_s"] / run["step_s"]
        print(
            f"\n--- {run['precision']}  {run['model']}: step {run['step_s']:.3f} s (median, unprofiled), "
            f"BART {run['bart_step_s']:.3f} s -> {ratio:.2f}x BART; profiled {run['profiled_step_s']:.3f} s/step"
            + (f"; eq. 3 ran as: {run['eq3_path']}" if run["eq3_path"] else ""),
            file=out,
        )
        total = sum(run["parts_s"].values())
        for part in PARTS:
            seconds = run["parts_s"].get(part, 0.0)
            if seconds:
                print(f"    {part:46s} {seconds * 1e3:9.1f} ms  {seconds / total:6.1%}", file=out)
        for part in sorted(set(run["parts_s"]) - set(PARTS)):
            print(f"    {part:46s} {run['parts_s'][part] * 1e3:9.1f} ms  {run['parts_s'][part] / total:6.1%}", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source", type=int, default=400)
    parser.add_argument("--target", type=int, default=100)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender and precision")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--precision", default="both", choices=["fp32", "bf16", "both"])
    parser.add_argument("--scenarios", default="plain,train_step_before_fix,train_step,trainer")
    parser.add_argument("--top", type=int, default=15, help="rows of each operator table")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # one scenario, in this process (a child)
    args = parser.parse_args()
    args.precisions = {"fp32": [False], "bf16": [True], "both": [False, True]}[args.precision]
    if args.scenario:
        print(json.dumps(run_scenario(args)))
        return
    out = sys.stdout
    print(
        f"PALM training-step profile: batch {args.batch} x ({args.source}+{args.target}) tokens, d{args.d_model}, "
        f"{args.layers}+{args.layers} layers, vocab {args.vocab}; {machine(torch.device('cpu'))['name']}, "
        f"torch {torch.__version__}; {args.warmup} warm-up, {args.steps} timed (interleaved with BART), "
        f"{args.profile_steps} profiled steps per model and precision",
        file=out,
    )
    results = []
    for scenario in args.scenarios.split(","):
        child = subprocess.run([sys.executable, *sys.argv, "--scenario", scenario], capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"scenario {scenario} failed:\n{child.stderr}")
        warnings = [line for line in child.stderr.splitlines() if "warn" in line.lower()]
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["warnings"] = warnings
        results.append(result)
        print_scenario(result, out)
        for line in warnings:
            print(f"    stderr: {line}", file=out)
        out.flush()
    print("\n=== operator tables (self CPU time, first profiled run of each)", file=out)
    for result in results:
        for run in result["runs"]:
            print(f"\n--- {result['scenario']}  {run['precision']}  {run['model']}", file=out)
            print(run["op_table"], file=out)


if __name__ == "__main__":
    main()
