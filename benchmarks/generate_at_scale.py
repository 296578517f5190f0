"""Generation at scale: 10,000 mixed-length inputs through `Seq2SeqPredictor.generate_to_file` (what
`ctxlm generate --input --output` runs) on a tiny random PALM model.

Sources are a mix of empty strings, single words, sentences, paragraphs and ~5,000-token documents
(cut to the model's 128 positions). Prints the wall time and rows/s with length-sorted windows of
batches (the default) and, with --compare, in input order (--sort-window 1); checks that every
row comes back once, in input order, and that both orders give the same predictions.

    python benchmarks/generate_at_scale.py [--rows 10000 --batch-size 32 --max-length 8 --compare]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from ctxlm.checkpoint import build_model
from ctxlm.config import GenerationConfig
from ctxlm.config_loading import named_model_config
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer

WORDS = (
    "the history of the city began when a small group of farmers settled near the river and built "
    "houses , roads and a market that grew over the next hundred years into a busy town ."
).split()


def mixed_sources(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    makers = [
        lambda: "",
        lambda: words(1),
        lambda: words(rng.randint(5, 30)),
        lambda: words(rng.randint(50, 200)),
        lambda: words(5000),
    ]
    weights = [1, 2, 4, 2, 1]
    return [rng.choices(makers, weights)[0]() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=8)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 suits a tiny model)")
    parser.add_argument("--compare", action="store_true", help="also run in input order (--sort-window 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="ctxlm-scale-"))
    (root / "text.txt").write_text(" ".join(WORDS) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer(root / "text.txt", 200, min_frequency=1)
    torch.manual_seed(0)
    config = named_model_config(
        "palm-tiny",
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
    )
    predictor = Seq2SeqPredictor(build_model(model_config_for_tokenizer(config, tokenizer)), tokenizer)
    rows = [{"id": i, "source": s} for i, s in enumerate(mixed_sources(args.rows))]
    cfg = GenerationConfig(num_beams=args.beam, max_new_tokens=args.max_length)
    print(
        f"{len(rows):,} rows: {sum(not r['source'] for r in rows):,} empty, "
        f"{sum(len(r['source'].split()) >= 5000 for r in rows):,} of 5,000 words"
    )

    outputs = {}
    for window in (8, 1) if args.compare else (8,):
        out = root / f"window{window}.jsonl"
        start = time.perf_counter()
        predictor.generate_to_file(rows, out, cfg, batch_size=args.batch_size, sort_window=window)
        seconds = time.perf_counter() - start
        written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [w["id"] for w in written] == list(range(len(rows))), "rows missing or out of order"
        outputs[window] = [w["prediction"] for w in written]
        print(f"sort window {window}: {seconds:.1f} s, {len(rows) / seconds:.0f} rows/s")
    if args.compare:
        same = sum(a == b for a, b in zip(outputs[8], outputs[1]))
        print(f"predictions equal in both orders: {same:,} of {len(rows):,}")


if __name__ == "__main__":
    main()
