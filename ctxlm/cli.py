"""The `ctxlm` command line. Each verb parses its flags and calls one public function.

ctxlm tokenizer train --corpus PATH... --vocab-size N --out DIR
ctxlm pretrain --objective palm --stage {mlm,generation} --corpus PATH... --config palm-tiny --out DIR
ctxlm pretrain --objective {mass,bart,glm,unilm} ...   (MASS and BART run on a PALM config)
ctxlm generate --model DIR (--text "..." | --input FILE.jsonl [--output FILE.jsonl])
ctxlm convert (--from-hf HF_DIR_OR_HUB_ID [--family F] | --to-hf DIR) --out DIR
ctxlm convert (--from-official PATH [--family F] [--format NAME] | --to-official DIR [--format NAME]) --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

from .cli_parser import _check_inputs, _command_line, _generation_config, _generation_flags, _other_rank
from .cli_parser import _train_overrides, _verification
from .cli_parser import build_parser as _build_parser
from .cli_flags import bundle_from_args, flag_values
from .errors import CtxlmError, plain_warnings


def cmd_tokenizer_train(args) -> None:
    _check_inputs(args)
    from .tokenization import train_tokenizer

    options = flag_values(args, "min_frequency", "format", "text_field", "fallback_encoding", given=False)
    tok = train_tokenizer(args.corpus, args.vocab_size, args.out, **options)
    short = "" if tok.vocab_size >= args.vocab_size else f" of {args.vocab_size:,} asked: the corpus has no more pieces"
    print(f"wrote {Path(args.out) / 'tokenizer.json'} ({tok.vocab_size:,} tokens{short})")


def cmd_pretrain(args) -> None:
    _check_inputs(args)
    from .config_loading import load_pretrain_config, set_copy, train_keys_given
    from .families import apply_family_flags, default_objective, objective_options
    from .pretraining import HfInit, pretrain
    from .run_options import CorpusSpec

    config = load_pretrain_config(args.config)
    overrides = _train_overrides(args)
    config.train = dataclasses.replace(config.train, **overrides)
    config.data = apply_family_flags(config.model, config.data, vars(args))
    if args.no_copy or args.copy:
        if args.no_copy and args.copy:
            raise CtxlmError("--copy and --no-copy exclude each other")
        config.model = set_copy(config.model, args.copy)
    if args.init is not None and args.init_from_hf is not None:
        raise CtxlmError("give at most one of --init and --init-from-hf")
    objective = args.objective or default_objective(config.model.family).name
    corpus = bundle_from_args(CorpusSpec, args, paths=tuple(args.corpus))
    result = pretrain(
        corpus,
        args.out,
        config,
        objective=objective,
        stage=args.stage,
        objective_options=objective_options(vars(args), objective),
        tokenizer=args.tokenizer,
        init=args.init if args.init_from_hf is None else HfInit(args.init_from_hf, args.decoder),
        run=_run_options(args),
        train_given=set(overrides) | train_keys_given(args.config),
    )
    _print_result(result, args.out)


def cmd_generate(args) -> None:
    _check_inputs(args)
    from .predict import Seq2SeqPredictor, model_source_field, read_sources
    from .prediction_file import SORT_WINDOW

    if (args.text is None) == (args.input is None):
        raise CtxlmError("give exactly one of --text and --input")
    _generation_flags(args)  # ranges checked before the model is read
    predictor = Seq2SeqPredictor.load(args.model, args.device, bf16=args.bf16, max_source_tokens=args.max_source_tokens)
    cfg = _generation_config(args, predictor.default_generation)
    if args.text is not None:
        print(predictor.generate([args.text], cfg)[0])
        return
    if args.resume and args.output is None:
        raise CtxlmError("--resume needs --output (the file to continue)")
    field = args.source_field or model_source_field(args.model, args.input)
    rows = read_sources(Path(args.input), field)[: args.limit]
    window = SORT_WINDOW if args.sort_window is None else args.sort_window
    options = dict(batch_size=args.batch_size, sort_window=window, resume=args.resume, progress=args.output is not None)
    predictor.generate_to_file(rows, args.output or sys.stdout, cfg, source_field=field, **options)


def _scratch_model_config(args):
    from .config_loading import load_pretrain_config, set_copy

    if args.init is not None:
        if getattr(args, "copy", False):
            raise CtxlmError("--copy applies to a model trained from scratch (--config), not to --init")
        return None
    if args.config is None or args.tokenizer is None:
        raise CtxlmError("give --init MODEL_DIR (or --config and --tokenizer to train from scratch)")
    model = load_pretrain_config(args.config).model
    return set_copy(model, True) if getattr(args, "copy", False) else model


def _print_result(result, out) -> None:
    if _other_rank():
        return
    if result.interrupted:
        print(
            f"stopped by a signal at step {result.step}; checkpoint written; continue with --resume (or --resume auto)"
        )
        return
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if v is not None)
    print(f"done: {result.step} steps → {out}" + (f" ({summary})" if summary else ""))


def cmd_finetune(args) -> None:
    _check_inputs(args)
    from .tasks import ScratchModel, finetune

    overrides = _train_overrides(args)
    model = ScratchModel(_scratch_model_config(args), args.tokenizer)
    result = finetune(args.task, args.init, _task_data(args), args.out, overrides, _run_options(args), model)
    _print_result(result, args.out)


def _task_data(args):
    """`TaskData` of a verb's flags: its fields, and the other flags (a task's own options)."""
    from .tasks import TaskData

    fields = {f.name for f in dataclasses.fields(TaskData)} | {"func", "verb"}
    return bundle_from_args(TaskData, args, options=flag_values(args, *(vars(args).keys() - fields)))


def _run_options(args):
    from .tasks import RunOptions

    return bundle_from_args(RunOptions, args, out=None, seed=None)


def cmd_evaluate(args) -> None:
    _check_inputs(args)
    from .metrics import evaluate_files, format_markdown_table
    from .tasks import evaluate, get_task

    if args.model is None and (args.task is None or get_task(args.task).scores_files):
        if args.pred is None or args.ref is None:
            raise CtxlmError("give --pred (predictions) and --ref, or --model --task --ref for perplexity")
        results = evaluate_files(
            args.pred, args.ref, args.metrics, pred_field=args.pred_field, ref_field=args.ref_field, limit=args.limit
        )
    else:
        results = evaluate(args.task, args.model, _task_data(args), _run_options(args))
    print(json.dumps(results, indent=2))
    print(format_markdown_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def cmd_infill(args) -> None:
    _check_inputs(args)
    from .tasks.infilling import evaluate_infilling, infill_texts
    from .config import load_generation_config
    from .data.corpus import read_text_lines

    cfg = _generation_config(args, load_generation_config(args.model))
    if args.eval is not None:
        options = flag_values(args, "mask_ratio", "limit", "output", "device", "bf16", given=False)
        results = evaluate_infilling(
            args.model, args.eval, seed=args.seed or 0, generation_config=cfg, progress=True, **options
        )
        print(json.dumps(results, indent=2))
        return
    if (args.text is None) == (args.input is None):
        raise CtxlmError("give --text (one or more), --input FILE (one text a line) or --eval FILE")
    texts = args.text if args.text is not None else read_text_lines(Path(args.input))
    for filled in infill_texts(args.model, texts, cfg, device=args.device, bf16=args.bf16):
        print(filled)


def cmd_convert(args) -> None:
    _check_inputs(args)
    if (args.from_official, args.to_official) != (None, None):
        return _convert_official(args)
    from .convert import export_to_hf, import_from_hf

    if (args.from_hf is None) == (args.to_hf is None):
        raise CtxlmError("give exactly one of --from-hf and --to-hf (or --from-official / --to-official)")
    if args.format is not None:
        raise CtxlmError("--format names an official format: give it with --from-official or --to-official")
    if args.from_hf:
        print(import_from_hf(args.from_hf, args.out, family=args.family, decoder=args.decoder).summary())
    else:
        for note in export_to_hf(args.to_hf, args.out, drop_copy_head=args.drop_copy_head):
            print(note)
    print(f"wrote {args.out}")


def _convert_official(args) -> None:
    """`convert --from-official / --to-official`: thin over `ctxlm.official`."""
    from .official import convert_from_official, convert_to_official

    if args.from_official:
        report = convert_from_official(
            args.from_official, args.out, family=args.family, format=args.format, max_shard_size=args.max_shard_size
        )
        print(report.summary())
    else:
        if args.family is not None:
            raise CtxlmError(
                "--family applies to --from-hf and --from-official; --to-official writes the family "
                "of the model directory"
            )
        for note in convert_to_official(args.to_official, args.out, format=args.format):
            print(note)
    print(f"wrote {args.out}")


def cmd_compare(args) -> None:
    _check_inputs(args)
    from .compare import Budget, ComparisonSpec, compare_task
    from .run_options import CorpusSpec
    from .tasks import TaskData

    objectives = tuple(o.strip() for o in (args.objectives or "").split(",") if o.strip()) or None
    budget = Budget(minutes=args.budget_minutes, tokens=args.budget_tokens, flops=args.budget_flops)
    spec = bundle_from_args(
        ComparisonSpec,
        args,
        budget=budget,
        objectives=objectives,
        lr_grid=tuple(args.lr_grid or ()),
        plots=not args.no_plots,
        command=_command_line(args),
    )
    corpus = bundle_from_args(CorpusSpec, args, paths=tuple(args.corpus), cache_dir=None)
    data = TaskData(
        args.train, args.valid, args.eval, limit=args.eval_limit, options={"train_limits": args.train_limit}
    )
    print(compare_task(corpus, args.tokenizer, vars(args), data, args.out, spec, config=args.config))


COMMANDS = {
    "tokenizer train": cmd_tokenizer_train,
    "pretrain": cmd_pretrain,
    "generate": cmd_generate,
    "finetune": cmd_finetune,
    "evaluate": cmd_evaluate,
    "infill": cmd_infill,
    "compare": cmd_compare,
    "convert": cmd_convert,
}  # verb → its function


def build_parser() -> argparse.ArgumentParser:
    """Every verb's parser (`ctxlm.cli_parser`), each calling its function in `COMMANDS` (read from
    this module by name now, so that a replaced `cmd_*` is the one called)."""
    return _build_parser({verb: globals()[command.__name__] for verb, command in COMMANDS.items()})


TRAINING_VERBS = ("pretrain", "finetune", "compare")  # the verbs that write checkpoints


def _stopped_after_checkpoint(interrupt: KeyboardInterrupt) -> bool:
    """True for `training.RunStopped` (a pipeline's run stopped by a signal after its checkpoint),
    without importing torch for the other verbs."""
    training = sys.modules.get("ctxlm.training")
    return training is not None and isinstance(interrupt, training.RunStopped)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plain_warnings()
    if _other_rank():
        warnings.simplefilter("ignore")
    try:
        with _verification(getattr(args, "verify", "full")):
            args.func(args)
    except CtxlmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if _stopped_after_checkpoint(interrupt):  # compare: exit 0, as a training run stopped by a signal
            print(f"{interrupt}; checkpoint written; rerun the same command to continue")
            return 0
        kept = " (finished checkpoints are kept)" if args.verb in TRAINING_VERBS else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
