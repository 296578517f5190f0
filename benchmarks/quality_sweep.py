"""Issue 8's quality sweep: which settings make small models good on Gigaword and SQuAD QG.

One run pre-trains a few tiny models (vocabulary size, copy head, family), fine-tunes each under a
grid of settings (learning rate, batch, label smoothing, from scratch), decodes the whole Gigaword
validation file under several decoding settings and scores ROUGE, BLEU-4, ROUGE-L; every cell is
one process, cells run `--jobs` at a time, each writes `OUT/cells/<name>.json` when done (a rerun
skips finished cells). `OUT/summary.md` is the table; predictions go to `OUT/predictions/`.

    python benchmarks/quality_sweep.py --data ../shared/data --out reports/quality/sweep --jobs 2

Steps are counted, not minutes, so a fast machine finds the settings and the 2-core machine
reproduces the winners under its time budget (`reports/quality/README.md` gives the mapping).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import os
import re
import time
import traceback
from pathlib import Path

READING = dict(fallback_encoding="latin-1")
GIGAWORD_DECODINGS = {  # name → GenerationConfig overrides of the recipe's decoding
    "b5-ng3": dict(num_beams=5, no_repeat_ngram_size=3, block_subword_loops=False),
    "b5-ng3-loops": dict(num_beams=5, no_repeat_ngram_size=3, block_subword_loops=True),
    "b5-ng2-loops": dict(num_beams=5, no_repeat_ngram_size=2, block_subword_loops=True),
    "b5-ng3-loops-lp0.6": dict(num_beams=5, no_repeat_ngram_size=3, block_subword_loops=True, length_penalty=0.6),
    "b5-ng3-loops-min6": dict(num_beams=5, no_repeat_ngram_size=3, block_subword_loops=True, min_new_tokens=6),
}
QG_DECODINGS = {
    "recipe": {},  # squad_qg.yaml's own: beam 8, GNMT length penalty 1.3, trigram + loop blocking
    "b5-ng3-loops": dict(num_beams=5, no_repeat_ngram_size=3, block_subword_loops=True),
    "greedy-loops": dict(num_beams=1, no_repeat_ngram_size=3, block_subword_loops=True),
}


def cells(plan: str, scale: float) -> list[dict]:
    """The plan's cells: pre-training cells first, then fine-tuning cells naming the one they start from."""
    s = lambda n: max(2, int(n * scale))  # noqa: E731
    if plan in CPU_PLANS:
        return CPU_PLANS[plan](s)
    pre = dict(mlm_steps=s(1000), generation_steps=s(3000), lr=1e-3, batch=16)
    out = [
        dict(name="pre-palm-8k", kind="pretrain", vocab=8000, **pre),
        dict(name="pre-palm-16k", kind="pretrain", vocab=16000, **pre),
        dict(name="pre-palm-16k-nocopy", kind="pretrain", vocab=16000, copy=False, **pre),
        dict(name="pre-glm-16k", kind="pretrain", vocab=16000, family="glm", steps=s(4000), lr=1e-3, batch=16),
        dict(name="pre-unilm-16k", kind="pretrain", vocab=16000, family="unilm", steps=s(4000), lr=1e-3, batch=16),
    ]
    ft = dict(task="gigaword", steps=s(3000), batch=16, lr=1e-3, smoothing=0.1)
    grid = [
        ("giga-16k-lr3e-4", "pre-palm-16k", dict(lr=3e-4)),
        ("giga-16k-lr1e-3", "pre-palm-16k", {}),
        ("giga-16k-lr1e-3-ls0", "pre-palm-16k", dict(smoothing=0.0)),
        ("giga-16k-lr1e-3-b32", "pre-palm-16k", dict(batch=32, steps=s(1500))),
        ("giga-16k-lr2e-3", "pre-palm-16k", dict(lr=2e-3)),
        ("giga-8k-lr1e-3", "pre-palm-8k", {}),
        ("giga-16k-nocopy-lr1e-3", "pre-palm-16k-nocopy", {}),
        ("giga-scratch-16k-lr1e-3", "scratch-16k", {}),
        ("giga-scratch-16k-lr3e-4", "scratch-16k", dict(lr=3e-4)),
        ("giga-glm-16k-lr1e-3", "pre-glm-16k", {}),
        ("giga-unilm-16k-lr1e-3", "pre-unilm-16k", {}),
        ("qg-16k-lr1e-3", "pre-palm-16k", dict(task="squad_qg")),
        ("qg-16k-lr3e-4", "pre-palm-16k", dict(task="squad_qg", lr=3e-4)),
    ]
    out += [dict(name=name, kind="finetune", start=start, **{**ft, **extra}) for name, start, extra in grid]
    return out


def cpu_cells(s) -> list[dict]:
    """The winners of the sweep, sized for the 2-core machine: pre-training about 45 minutes there
    (800 MLM + 3,300 continuation steps of 16 x 160 tokens), fine-tuning about 30 (3,000 steps of 16)."""
    ft = dict(batch=16, lr=1e-3, smoothing=0.1)
    return [
        dict(
            name="pre-palm-16k",
            kind="pretrain",
            vocab=16000,
            mlm_steps=s(800),
            generation_steps=s(3300),
            lr=1e-3,
            batch=16,
        ),
        dict(name="qg-scratch-16k-lr1e-3", kind="finetune", start="scratch-16k", task="squad_qg", steps=s(2500), **ft),
        dict(name="giga-16k-lr1e-3", kind="finetune", start="pre-palm-16k", task="gigaword", steps=s(3000), **ft),
        dict(
            name="giga-16k-lr3e-4",
            kind="finetune",
            start="pre-palm-16k",
            task="gigaword",
            steps=s(3000),
            **{**ft, "lr": 3e-4},
        ),
        dict(name="qg-16k-lr1e-3", kind="finetune", start="pre-palm-16k", task="squad_qg", steps=s(2500), **ft),
        # a shorter fine-tuning budget (1,000 steps): pre-trained vs from scratch
        *[
            dict(
                name=f"giga{start}-16k-lr1e-3-s1000",
                kind="finetune",
                task="gigaword",
                steps=s(1000),
                start="scratch-16k" if start else "pre-palm-16k",
                **ft,
            )
            for start in ("", "-scratch")
        ],
    ]


def cpu2_cells(s) -> list[dict]:
    """After the tokenizer kept Gigaword's "<unk>" one token: palm-tiny pre-trained mostly on stage 2
    (100 MLM + 1,500 continuation steps, about 30 minutes on one core; `compare` found stage 1 adds
    nothing at equal tokens), fine-tuned 1,500 steps beside the same model from scratch, on Gigaword
    and on SQuAD question generation (Wikipedia sentences: the pre-training corpus's domain)."""
    ft = dict(task="gigaword", steps=s(1500), batch=16, lr=1e-3, smoothing=0.1)
    qg = {**ft, "task": "squad_qg"}
    return [
        dict(
            name="pre-palm-16k",
            kind="pretrain",
            vocab=16000,
            mlm_steps=s(100),
            generation_steps=s(1500),
            lr=1e-3,
            batch=16,
        ),
        dict(name="giga-16k-lr1e-3-s1500", kind="finetune", start="pre-palm-16k", **ft),
        dict(name="giga-scratch-16k-lr1e-3-s1500", kind="finetune", start="scratch-16k", **ft),
        dict(name="qg-16k-lr1e-3-s1500", kind="finetune", start="pre-palm-16k", **qg),
        dict(name="qg-scratch-16k-lr1e-3-s1500", kind="finetune", start="scratch-16k", **qg),
    ]


CPU_PLANS = {"cpu": cpu_cells, "cpu2": cpu2_cells}


def tokenizer_for(args, vocab: int):
    from ctxlm.tokenization import TextTokenizer, train_tokenizer

    path = Path(args.out) / "work" / f"tokenizer-{vocab}"
    if (path / "tokenizer.json").is_file():
        return TextTokenizer.load(path / "tokenizer.json")
    return train_tokenizer([Path(args.data) / "pretrain"], vocab, path, **READING)


def run_pretrain(args, cell: dict) -> dict:
    from ctxlm.config import PretrainConfig, TrainConfig
    from ctxlm.families.glm import GlmDataConfig
    from ctxlm.families.palm import PalmDataConfig
    from ctxlm.families.unilm import UnilmDataConfig
    from ctxlm.config_loading import named_model_config
    from ctxlm.pretraining import pretrain
    from ctxlm.run_options import CorpusSpec, RunOptions

    work = Path(args.out) / "work" / cell["name"]
    tokenizer = tokenizer_for(args, cell["vocab"])
    family = cell.get("family", "palm")
    model = named_model_config(f"{family}-tiny")
    if not cell.get("copy", True):
        model = dataclasses.replace(model, copy=False)
    train = TrainConfig(
        batch_size=cell["batch"],
        lr=cell["lr"],
        warmup_steps=100,
        bf16=args.bf16,
        log_every=50,
        eval_every=0,
        eval_batches=8,
        save_every=0,
        seed=args.seed,
        progress=False,
    )
    common = dict(tokenizer=tokenizer, run=RunOptions(overwrite=True, device=args.device))
    corpus = CorpusSpec((Path(args.data) / "pretrain",), **READING)
    if family == "palm":
        data = PalmDataConfig(fragment_length=160)
        config = PretrainConfig(model=model, train=dataclasses.replace(train, max_steps=cell["mlm_steps"]), data=data)
        pretrain(corpus, work / "mlm", config, stage="mlm", **common)
        config.train = dataclasses.replace(train, max_steps=cell["generation_steps"])
        result = pretrain(corpus, work / "final", config, stage="generation", init=work / "mlm", **common)
    else:
        data = GlmDataConfig(max_length=160) if family == "glm" else UnilmDataConfig(max_length=160)
        config = PretrainConfig(model=model, train=dataclasses.replace(train, max_steps=cell["steps"]), data=data)
        result = pretrain(corpus, work / "final", config, objective=family, **common)
    return {"final": {k: v for k, v in result.final_metrics.items() if isinstance(v, (int, float))}}


def run_finetune(args, cell: dict) -> dict:
    from ctxlm.config import GenerationConfig, load_finetune_config
    from ctxlm.config_loading import named_model_config
    from ctxlm.metrics import rouge, sacre_bleu
    from ctxlm.predict import Seq2SeqPredictor
    from ctxlm.run_options import RunOptions
    from ctxlm.tasks import ScratchModel
    from ctxlm.tasks.seq2seq import finetune, read_pairs

    data = Path(args.data)
    files = {"gigaword": data / "summarization" / "gigaword", "squad_qg": data / "qg" / "squad_du2017"}[cell["task"]]
    recipe = load_finetune_config(cell["task"])
    recipe.max_valid_examples = 500
    recipe.train = dataclasses.replace(
        recipe.train,
        max_steps=cell["steps"],
        batch_size=cell["batch"],
        lr=cell["lr"],
        label_smoothing=cell["smoothing"],
        warmup_steps=max(1, cell["steps"] // 20),
        eval_every=max(1, cell["steps"] // 6),
        save_every=0,
        bf16=args.bf16,
        early_stopping_patience=0,
        seed=args.seed,
        progress=False,
    )
    work = Path(args.out) / "work" / cell["name"]
    if cell["start"].startswith("scratch-"):
        vocab = int(cell["start"].split("-")[1].rstrip("k")) * 1000
        start = dict(scratch=ScratchModel(named_model_config("palm-tiny"), tokenizer_for(args, vocab)))
    else:
        start = dict(init=Path(args.out) / "work" / cell["start"] / "final")
    began = time.time()
    result = finetune(
        files / "train.jsonl",
        files / "valid.jsonl",
        work,
        recipe,
        run=RunOptions(overwrite=True, device=args.device),
        **start,
    )
    trained = time.time() - began
    valid = read_pairs(recipe.task, files / "valid.jsonl", limit=args.eval_rows)
    references, sources = [p.target for p in valid], [p.source for p in valid]
    predictor = Seq2SeqPredictor.load(work, args.device, max_source_tokens=recipe.max_source_tokens)  # once per cell
    decodings = GIGAWORD_DECODINGS if cell["task"] == "gigaword" else QG_DECODINGS
    if args.decodings:
        decodings = {name: value for name, value in decodings.items() if name in args.decodings}
    scores = {}
    for name, overrides in decodings.items():
        cfg = GenerationConfig(**{**dataclasses.asdict(recipe.decoding), **overrides})
        began = time.time()
        predictions = predictor.generate(sources, cfg, batch_size=64)
        scores[name] = {
            **rouge(predictions, references),
            "bleu4": sacre_bleu(predictions, references),
            "decode_s": round(time.time() - began, 1),
            "loops": sum(map(has_piece_loop, predictions)),
        }
        out = Path(args.out) / "predictions" / f"{cell['name']}.{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(p.replace("\n", " ") for p in predictions) + "\n")
    final = {k: v for k, v in result.final_metrics.items() if isinstance(v, (int, float))}
    return {"train_s": round(trained, 1), "final": final, "scores": scores}


def has_piece_loop(text: str) -> bool:
    """A word said three times in a row, or a word holding one piece of 2+ letters three times in a
    row ("mspspsps"); only words with a letter count (Gigaword writes digits as "#", "# # #")."""
    words = [w for w in text.split() if re.search(r"[a-z]", w)]
    if any(a == b == c for a, b, c in zip(words, words[1:], words[2:])):
        return True
    return any(re.search(r"([a-z]{2,})\1\1", w) for w in words)


def run_cell(args, cell: dict) -> str:
    import torch

    torch.set_num_threads(args.threads)
    path = Path(args.out) / "cells" / f"{cell['name']}.json"
    began = time.time()
    try:
        result = (run_pretrain if cell["kind"] == "pretrain" else run_finetune)(args, cell)
        result.update(cell=cell, wall_s=round(time.time() - began, 1), device=str(args.device))
    except Exception:  # a failed cell is reported, the sweep goes on
        result = dict(cell=cell, error=traceback.format_exc()[-3000:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return cell["name"]


def summarize(out: Path) -> str:
    lines = ["| cell | decoding | R-1 | R-2 | R-L | BLEU-4 | loops | train s |", "|---|---|---|---|---|---|---|---|"]
    for path in sorted((out / "cells").glob("*.json")):
        result = json.loads(path.read_text())
        if "error" in result:
            lines.append(f"| {path.stem} | error: {result['error'].strip().splitlines()[-1][:80]} |||||||")
        for name, s in result.get("scores", {}).items():
            lines.append(
                f"| {path.stem} | {name} | {s['rouge1']:.2f} | {s['rouge2']:.2f} | {s['rougeL']:.2f} | "
                f"{s['bleu4']:.2f} | {s['loops']} | {result['train_s']:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="reports/quality/sweep")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    p.add_argument("--eval-rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument(
        "--plan",
        choices=["sweep", *CPU_PLANS],
        default="sweep",
        help="sweep: the grid (run on a GPU); cpu: the winners at the 2-core machine's budget; "
        "cpu2: pre-trained vs scratch after the <unk> fix",
    )
    p.add_argument("--decodings", nargs="*", help="decoding settings to score (default: all of the task's)")
    p.add_argument("--only", nargs="*", help="cell names (their pre-training cells are run too)")
    args = p.parse_args()
    out = Path(args.out)
    todo = cells(args.plan, args.scale)
    if args.only:
        wanted = set(args.only) | {c["start"] for c in todo if c["name"] in args.only and "start" in c}
        todo = [c for c in todo if c["name"] in wanted]
    for vocab in sorted({c.get("vocab", 16000) for c in todo} | {16000}):
        tokenizer = tokenizer_for(args, vocab)  # before the pool: one process trains each
        from ctxlm.data.store import TokenStore

        TokenStore.build([Path(args.data) / "pretrain"], tokenizer, **READING)
    done = {path.stem for path in (out / "cells").glob("*.json") if "error" not in json.loads(path.read_text())}
    waiting = [c for c in todo if c["name"] not in done]
    print(f"{len(waiting)} cells to run ({len(todo) - len(waiting)} done)", flush=True)
    pending: dict = {}
    with futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while waiting or pending:
            ready = [c for c in waiting if c.get("start", "scratch").startswith("scratch") or c["start"] in done]
            for cell in ready:
                waiting.remove(cell)
                pending[pool.submit(run_cell, args, cell)] = cell
            if not pending:
                print("cells left whose pre-training failed:", [c["name"] for c in waiting])
                break
            finished, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                name = pending.pop(future)["name"]
                result = json.loads((out / "cells" / f"{name}.json").read_text())
                if "error" not in result:
                    done.add(name)
                print(
                    f"[{time.strftime('%H:%M:%S')}] {name}: {'error' if 'error' in result else 'done'} "
                    f"({result.get('wall_s', '?')} s)",
                    flush=True,
                )
    print(summarize(out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
