"""Does the data keep ahead of the model? Micro-batches per second from the training loop's
`DataLoader` (PALM stage-2 examples of a Wikipedia slice, corrupted and collated by its workers)
against the micro-batches per second one training step of the model consumes.

Prints both rates, their ratio (want ≥ 10: the loader alone delivers ten times what the model
needs) and one JSON line.

    python benchmarks/data.py [--model palm-base --batch 8 --workers 4 --batches 200 --steps 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from ctxlm.checkpoint import build_model
from ctxlm.config import TrainConfig
from ctxlm.families.palm import PalmDataConfig
from ctxlm.config_loading import named_model_config
from ctxlm.data.loader import default_workers, micro_batch_loader
from ctxlm.data.store import TokenStore
from ctxlm.families.palm_data import prepare_palm_data
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer
from ctxlm.training import BatchStream, build_optimizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/pretrain/wikipedia/sents_000.txt"


def loader_rate(stream: BatchStream, pad_id: int, batches: int, workers: int, device: torch.device) -> float:
    """Micro-batches per second read from the loader (after its first batch: workers started)."""
    loader = iter(micro_batch_loader(stream, pad_id, range(batches + 1), device, workers))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches / (time.perf_counter() - start)


def model_rate(model, stream: BatchStream, pad_id: int, steps: int, device: torch.device) -> float:
    """Micro-batches per second one forward, backward and AdamW update consume."""
    optimizer = build_optimizer(model, TrainConfig())
    batches = [{k: v.to(device) for k, v in stream.batch(m, pad_id)[1].items()} for m in range(steps + 1)]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED)
    parser.add_argument("--lines", type=int, default=20000, help="corpus lines to use")
    parser.add_argument("--model", default="palm-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fragment-length", type=int, default=512)
    parser.add_argument("--workers", type=int, help="loader processes (default: the training loop's)")
    parser.add_argument("--batches", type=int, default=200, help="micro-batches read from the loader")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        with open(args.corpus, encoding="utf-8") as source:
            corpus.write_text("".join(line for _, line in zip(range(args.lines), source)), encoding="utf-8")
        tokenizer = train_tokenizer(corpus, 8000, Path(tmp) / "tok")
        store = TokenStore.build([corpus], tokenizer, cache_dir=Path(tmp) / "cache", progress=False)
        data = PalmDataConfig(fragment_length=args.fragment_length)
        examples = prepare_palm_data(store, tokenizer, data, "generation", seed=0).train
        stream = BatchStream(examples, args.batch, seed=0)
        workers = default_workers(device) if args.workers is None else args.workers
        loader = loader_rate(stream, tokenizer.pad_id, args.batches, workers, device)
        torch.manual_seed(0)
        config = named_model_config(args.model, max_position_embeddings=max(512, args.fragment_length))
        model = build_model(model_config_for_tokenizer(config, tokenizer)).to(device).train()
        consumed = model_rate(model, stream, tokenizer.pad_id, args.steps, device)
    ratio = loader / consumed
    print(
        f"{args.model} on {device}, batch {args.batch}, fragments of {args.fragment_length} tokens: "
        f"loader {loader:.1f} micro-batches/s, model {consumed:.2f} micro-batches/s, ratio {ratio:.1f}x "
        f"({'enough' if ratio >= 10 else 'NOT enough'}: want >= 10x)",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "benchmark": "data",
                "model": args.model,
                "device": device.type,
                "batch": args.batch,
                "workers": workers,
                "loader_batches_per_s": loader,
                "model_batches_per_s": consumed,
                "ratio": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
