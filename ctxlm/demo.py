"""`make demo`: PALM end to end on the built-in corpus, small enough for a laptop CPU.

1. trains a WordPiece tokenizer on the corpus (../shared/data/pretrain; WikiText-2 downloaded
   with `datasets` when that folder is missing and the network is up) and the Gigaword training
   articles;
2. pre-trains `palm-mini` (d 128, 2 + 2 layers; no dropout: every model here sees its data twice at
   most, and underfits) in PALM's two stages: briefly the encoder as a
   masked LM, then mostly encoder and decoder on generating the next 20% of each fragment from the
   first 80% (`ctxlm compare` found stage 2 carries the gain at equal tokens);
3. prints held-out perplexity of the continuation objective before and after pre-training, and
   beam-search continuations of the two input paragraphs of the paper's Table 1;
4. fine-tunes the pre-trained model on the Gigaword training pairs, and the same architecture
   from scratch (the paper's Table 6 "− pre-training" row), decodes 1,000 validation articles with
   beam search (a word of several WordPiece pieces only as the training pairs or the article write
   it: `ctxlm.lexicon`) and prints ROUGE-1/2/L of both beside the article's first 8 words, and
   three example headlines.

Everything it writes goes to demo-out/ (tokenizer, both stages' model directories with metrics
and TensorBoard logs). Run `python -m ctxlm.demo --help` for the knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .config import PretrainConfig, TrainConfig
from .families.palm import PalmDataConfig
from .config_loading import load_pretrain_config
from .errors import CtxlmError, plain_warnings
from .extras import require
from .run_options import CorpusSpec, RunOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "pretrain"

# The inputs of PALM's Table 1 (CNN articles, not in the pre-training corpus).
TABLE1_INPUTS = [
    "A classic Aston Martin once owned by Spartacus star Peter Ustinov is set to fetch more than £1 million at "
    "auction - twice what it fetched four years ago. The actor bought the Aston Martin DB4 Cabriolet in 1962, "
    "shortly after winning a Best Supporting Actor Oscar for his role as Batiatus in Spartacus. It was one of the "
    "most luxurious cars of its day, costing £4,000 and was delivered to him at a Swiss hotel at a time when the "
    "average house price in Britain was just £2,500.",
    "Cape Verde's 2-0 win over Portugal was the most eye-catching international result of the week. So, who are "
    "Cape Verde and why has this tiny island off the west coast of Africa suddenly become an international "
    "football force? Where are the Cape Verde Islands? Cape Verde is a group of islands 400 miles from Senegal off "
    "the west coast of Africa. Its population is around 500,000 and boasts both beautiful beaches and striking "
    "volcanic landscapes, making it a haven for tourism.",
]


def default_corpus(out: Path) -> list[Path]:
    """The shared pre-training folder, else WikiText-2 fetched with `datasets`."""
    if DEFAULT_CORPUS.is_dir():
        return [DEFAULT_CORPUS]
    print(f"{DEFAULT_CORPUS} not found: downloading WikiText-2 with `datasets`")
    load_dataset = require("datasets", extra="data", purpose="the demo's WikiText-2 fallback").load_dataset
    try:
        rows = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")
    except Exception as error:  # no network, no hub
        raise CtxlmError(
            f"no default corpus at {DEFAULT_CORPUS} and WikiText could not be downloaded "
            f"({str(error).splitlines()[0]}); pass --corpus"
        ) from None
    path = out / "wikitext-2.txt"
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            line = row["text"].strip()
            if line.startswith("= ") and line.endswith(" ="):
                handle.write("\n")  # a heading starts a new paragraph block
            elif line:
                handle.write(line + "\n\n")
    return [path]


def gigaword_articles(args, out: Path) -> list[Path]:
    """The Gigaword training articles as a text file, for the tokenizer: news names and words become
    whole tokens, which the copy head then copies whole (unlabelled text of the task, as a
    tokenizer for news would see; the models are pre-trained on the corpus only)."""
    train = Path(args.gigaword) / "train.jsonl"
    if not train.is_file():
        return []
    from .tasks.seq2seq import read_pairs

    path = out / "gigaword-articles.txt"
    path.write_text("".join(p.source + "\n" for p in read_pairs("summarization", train)), encoding="utf-8")
    return [path]


def summarize_gigaword(args, out: Path, model_config, tokenizer) -> None:
    """Step 5: Gigaword fine-tuning of the pre-trained model and of a model trained from scratch."""
    from .config import load_finetune_config
    from .lexicon import WordLexicon
    from .metrics import lead_words, rouge
    from .predict import Seq2SeqPredictor
    from .tasks import ScratchModel
    from .tasks.seq2seq import finetune, read_pairs

    gigaword = Path(args.gigaword)
    if not (gigaword / "train.jsonl").is_file():
        print(f"[5/5] skipped: no Gigaword files in {gigaword}")
        return
    recipe = load_finetune_config("gigaword")
    recipe.max_source_tokens, recipe.max_target_tokens, recipe.max_valid_examples = 64, 24, 200
    recipe.train = dataclasses.replace(
        recipe.train,
        max_steps=args.finetune_steps,
        batch_size=args.batch_size,
        warmup_steps=30,
        eval_every=100,
        save_every=0,
        bf16=True,
        seed=args.seed,
        lr=args.finetune_lr,
    )
    recipe.decoding = dataclasses.replace(recipe.decoding, max_new_tokens=20)
    valid = read_pairs("summarization", gigaword / "valid.jsonl", limit=args.eval_pairs)
    known = [text for p in read_pairs("summarization", gigaword / "train.jsonl") for text in (p.source, p.target)]
    lexicon = WordLexicon.from_texts(tokenizer, known)  # both runs decode the same articles
    scores, predictions = {}, {}
    runs = (
        ("pre-trained (PALM)", "gigaword-pretrained", dict(init=out / "stage2-generation")),
        ("from scratch", "gigaword-scratch", dict(scratch=ScratchModel(model_config, tokenizer))),
    )
    for i, (name, folder, start) in enumerate(runs):
        print(
            f"[5/5] Gigaword headlines, {name}: fine-tune {args.finetune_steps} steps of {args.batch_size} "
            f"pairs, decode {len(valid)} (beam {recipe.decoding.num_beams}; a word of several pieces only as the "
            f"training pairs or the article write it)"
        )
        finetune(
            gigaword / "train.jsonl",
            gigaword / "valid.jsonl",
            out / folder,
            recipe,
            train_limit=args.finetune_pairs,
            run=RunOptions(overwrite=True, device=args.device),
            **start,
        ).stop_if_interrupted()
        predictor = Seq2SeqPredictor.load(
            out / folder, args.device, max_source_tokens=recipe.max_source_tokens, lexicon=lexicon
        )
        predictions[name] = predictor.generate([p.source for p in valid], batch_size=64, progress=True)
        scores[name] = rouge(predictions[name], [p.target for p in valid])
    scores["the article's first 8 words"] = rouge(
        list(map(lead_words(8), [p.source for p in valid])), [p.target for p in valid]
    )
    print(f"\n      Gigaword validation ({len(valid)} pairs)   ROUGE-1  ROUGE-2  ROUGE-L")
    for name, values in scores.items():
        print(f"      {name:30s} {values['rouge1']:8.2f} {values['rouge2']:8.2f} {values['rougeL']:8.2f}")
    for pair, ours, scratch in list(zip(valid, *predictions.values()))[:3]:
        print(
            f"\n      article:   {pair.source}\n      reference: {pair.target}\n"
            f"      PALM:      {ours}\n      scratch:   {scratch}"
        )


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m ctxlm.demo", description="PALM pre-training demo")
    p.add_argument("--corpus", nargs="+", help=f"default: {DEFAULT_CORPUS}")
    p.add_argument("--out", default=str(ROOT / "demo-out"))
    p.add_argument("--model", default="palm-mini", help="a named config or a YAML file's model section")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--fragment-length", type=int, default=160, help="L (the paper: 500)")
    p.add_argument("--mlm-steps", type=int, default=100)
    p.add_argument("--generation-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--finetune-steps", type=int, default=2400)
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="of every model (the named config's: 0.1); each sees its data about twice at most, too "
        "little to overfit (docs/quality.md)",
    )
    p.add_argument("--finetune-lr", type=float, default=2e-3, help="peak rate (2e-3 > 1e-3 by 0.8 ROUGE-2 here)")
    p.add_argument("--finetune-pairs", type=int, help="Gigaword training pairs used (default: all)")
    p.add_argument("--eval-pairs", type=int, default=1000, help="Gigaword validation pairs decoded")
    p.add_argument("--gigaword", default=str(ROOT.parent / "shared" / "data" / "summarization" / "gigaword"))
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order of every run")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from .checkpoint import load_model_dir
    from .device import resolve_device
    from .data.store import TokenStore
    from .generation import GenerationConfig
    from .predict import Seq2SeqPredictor
    from .families.palm_data import prepare_palm_data
    from .pretraining import model_config_for_tokenizer, pretrain
    from .tokenization import train_tokenizer
    from .training import evaluate
    from .checkpoint import build_model

    args = parse_args(argv)
    plain_warnings()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        device = resolve_device(args.device)
        corpus = [Path(c) for c in args.corpus] if args.corpus else default_corpus(out)
        reading = dict(fallback_encoding="latin-1")  # two of the Gutenberg books are Latin-1

        texts = corpus + gigaword_articles(args, out)
        print(f"[1/5] tokenizer: WordPiece, {args.vocab_size} tokens, on {', '.join(map(str, texts))}")
        tokenizer = train_tokenizer(texts, args.vocab_size, out / "tokenizer", **reading)

        model_config = dataclasses.replace(
            load_pretrain_config(args.model).model, dropout=args.dropout, attention_dropout=args.dropout
        )
        train = TrainConfig(
            batch_size=args.batch_size,
            lr=1e-3,
            warmup_steps=50,
            bf16=True,
            log_every=10,
            eval_every=0,
            eval_batches=8,
            save_every=200,
            seed=args.seed,
        )
        data = PalmDataConfig(fragment_length=args.fragment_length, valid_fraction=0.02, max_valid_documents=40)
        store = TokenStore.build(corpus, tokenizer, **reading)
        print(
            f"      corpus: {store.num_documents} documents, {store.num_sentences} sentences, "
            f"{store.num_tokens} tokens (cached in {store.directory})"
        )

        heldout = prepare_palm_data(store, tokenizer, data, "generation", train.seed).valid
        untrained = build_model(model_config_for_tokenizer(model_config, tokenizer)).to(device)
        before = evaluate(untrained, heldout, train.batch_size, tokenizer.pad_id, max_batches=train.eval_batches)

        print(f"[2/5] stage 1: encoder masked LM, {args.mlm_steps} steps")
        config = PretrainConfig(
            model=model_config, train=dataclasses.replace(train, max_steps=args.mlm_steps), data=data
        )
        corpus_spec, run = CorpusSpec(tuple(corpus), **reading), RunOptions(overwrite=True, device=device)
        pretrain(
            corpus_spec, out / "stage1-mlm", config, stage="mlm", tokenizer=tokenizer, run=run
        ).stop_if_interrupted()

        print(f"[3/5] stage 2: continuation generation from stage 1, {args.generation_steps} steps")
        config.train = dataclasses.replace(train, max_steps=args.generation_steps)
        pretrain(
            corpus_spec, out / "stage2-generation", config, stage="generation", init=out / "stage1-mlm", run=run
        ).stop_if_interrupted()

        model, _ = load_model_dir(out / "stage2-generation", device=device)
        after = evaluate(model, heldout, train.batch_size, tokenizer.pad_id, max_batches=train.eval_batches)
        print("[4/5] pre-training results")
        print(
            f"      held-out continuation perplexity ({len(heldout)} fragments of held-out documents, "
            f"a fixed sample of {train.eval_batches * train.batch_size}):"
        )
        print(f"        before pre-training: {before['lm_ppl']:10.1f}")
        print(f"        after  pre-training: {after['lm_ppl']:10.1f}")
        predictor = Seq2SeqPredictor(model, tokenizer, device)
        generation = GenerationConfig(
            num_beams=5, max_new_tokens=48, no_repeat_ngram_size=3, block_subword_loops=True, block_word_repeats=True
        )
        for i, (text, continuation) in enumerate(zip(TABLE1_INPUTS, predictor.generate(TABLE1_INPUTS, generation)), 1):
            print(f"\n      Table 1, example {i}\n      input:    {text}\n      continuation (beam 5): {continuation}")
        summarize_gigaword(args, out, model_config, tokenizer)
    except CtxlmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # SIGTERM/SIGINT: the interrupted run kept a checkpoint
        print(f"stopped: {stop}; what was trained so far is in {out}", file=sys.stderr)
        return 130
    print(f"\ndone in {time.time() - started:.0f} s; models, metrics.jsonl and TensorBoard logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
