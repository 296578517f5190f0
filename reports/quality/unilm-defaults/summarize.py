"""results.md and losses.png of reports/quality/unilm-defaults/command.sh: for each run (the family's
defaults at 1,000 and 2,000 steps, the default command itself, the settings under which it once collapsed, lr 1e-3 with the
defaults' warm-up and with a 10% one, lr 6e-4 at 1,000 and 3,000 steps; and compare's UniLMv2 cell
at lr 6e-4, and without dropout at 6e-4 and 1e-3) its held-out AE and PAR losses
at every validation, the unigram entropy of its targets (`valid/unigram_entropy`, logged from the
first checked validation on) and the level the check calls "not learning" (H − margin), the
optimiser settings it ran with, and what the not-learning check said.

    python reports/quality/unilm-defaults/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {"defaults": "the family's defaults until 2026-12-02 (lr 3e-4, now given as --lr 3e-4)",
        "collapsing": "--lr 1e-3 --warmup-steps 100 --adam-beta2 0.999 --adam-eps 1e-8",
        "lr1e-3": "the defaults but --lr 1e-3",
        "lr1e-3-warmup10": "the defaults but --lr 1e-3 --warmup-ratio 0.1",
        "defaults-2000": "those defaults for 2,000 steps (--max-steps 2000 --lr 3e-4)",
        "lr6e-4": "the defaults but --lr 6e-4 (the paper's peak rate)",
        "lr6e-4-3000": "--lr 6e-4 for 3,000 steps (--max-steps 3000)"}
# compare's UniLMv2 cell (unilm-compare-cell.yaml: d 128, 5 layers, copy head; compare's 16k tokenizer)
CELL_RUNS = {"cell-lr6e-4": "compare's cell, 1,336 steps (its 3M tokens), --lr 6e-4",
             "cell-nodropout": "the same cell without dropout (unilm-compare-cell-nodropout.yaml), --lr 6e-4",
             "cell-nodropout-lr1e-3": "the same cell without dropout, --lr 1e-3"}
DEFAULT_RUNS = {"default-command": "the default command itself: `ctxlm pretrain --objective unilm --config "
                                   "unilm-tiny` (1,000 steps of 8 × 512 tokens, fp32, two threads)"}
BASE_RUNS = {"base-lr6e-4": "unilm-base (unilm-base-128.yaml), the family's defaults (lr 6e-4)",
             "base-lr1e-4": "unilm-base, --lr 1e-4 (BERT's)"}
# (title, runs) of each panel; each has its own targets and so its own H
GROUPS = [("unilm-tiny (d 256, 4 layers), 8k vocabulary, 16 × 128 tokens", RUNS),
          ("unilm-tiny, the default command: 8 × 512 tokens", DEFAULT_RUNS),
          ("unilm-base (d 768, 12 layers), 8k vocabulary, 16 × 128 tokens", BASE_RUNS),
          ("compare's cell (d 128, 5 layers), 16k vocabulary", CELL_RUNS)]


def check_said(record: dict | None) -> str:
    """What the not-learning check said of a run (its run.json record)."""
    if not record:
        return "did not fire"
    left = record.get("left_at_step")
    return f"at step {record['step']}, {record['reason']}" + (f"; left the level at step {left}" if left else "")


def validations(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [row for row in rows if "valid/ae_loss" in row]


def main() -> None:
    from ctxlm.learning_check import margin

    lines = ["# UniLMv2 on the shared corpus: its defaults against higher peak rates", "",
             "Made by `sh reports/quality/unilm-defaults/command.sh` (but for the default command: examples of 128 tokens, batches of 16, "
             "bf16, one thread a run), summarised by `python reports/quality/unilm-defaults/summarize.py`. "
             "Held-out losses in nats; H is the unigram entropy of the training targets (what a model that "
             "ignores its input scores); the check calls a loss above H − margin(H) \"at the unigram level\".",
             "", "![held-out losses](losses.png)", ""]
    curves = {title: {} for title, _ in GROUPS}
    group_of = {name: title for title, runs in GROUPS for name in runs}
    for name, settings in {name: text for _, runs in GROUPS for name, text in runs.items()}.items():
        run = HERE / "work" / name
        if not (run / "metrics.jsonl").is_file():
            lines += [f"## {name}: not run yet", ""]
            continue
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        train = info["train"]
        lines += [f"## {name}: {settings}", "",
                  f"lr {train['lr']:g}, warm-up {train.get('warmup_ratio') or train['warmup_steps']}, "
                  f"β2 {train['adam_beta2']:g}, ε {train['adam_eps']:g}; not-learning check: "
                  + check_said(info.get("not_learning"))
                  + f"; validated up to step {max((r['step'] for r in validations(run)), default=0)} of "
                    f"{train['max_steps']}", "",
                  "| step | AE | PAR | H | AE − PAR |", "|---|---|---|---|---|"]
        curves[group_of[name]][name] = validations(run)
        for row in validations(run):
            entropy = row.get("valid/unigram_entropy")
            lines.append(f"| {row['step']} | {row['valid/ae_loss']:.4f} | {row['valid/par_loss']:.4f} | "
                         f"{'—' if entropy is None else f'{entropy:.4f}'} | "
                         f"{row['valid/ae_loss'] - row['valid/par_loss']:+.4f} |")
        lines.append("")
    panels = []
    for title, group in curves.items():
        entropy = next((r["valid/unigram_entropy"] for rows in group.values() for r in rows
                        if "valid/unigram_entropy" in r), None)
        panels.append((title, group, entropy))
        if entropy is not None:
            lines.insert(4 + len(panels) - 1, f"- {title}: H = {entropy:.4f}; the level the check looks for is "
                                              f"below {entropy - margin(entropy):.4f}.")
    lines.insert(4 + len(panels), "")
    plot(panels, HERE / "losses.png")
    (HERE / "results.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {HERE / 'results.md'}")


def plot(panels: list[tuple[str, dict[str, list[dict]], float | None]], path: Path) -> None:
    """One panel per model: held-out AE (solid) and PAR (dashed) loss of each run against the step,
    H and H − margin."""
    from ctxlm.learning_check import margin
    from ctxlm.report_plots import pyplot

    plt = pyplot()
    panels = [panel for panel in panels if panel[1]]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for axis, (title, curves, entropy) in zip(axes[0], panels):
        for index, (name, rows) in enumerate(curves.items()):
            colour = f"C{index}"
            steps = [r["step"] for r in rows]
            axis.plot(steps, [r["valid/ae_loss"] for r in rows], color=colour, label=f"{name} AE")
            axis.plot(steps, [r["valid/par_loss"] for r in rows], color=colour, linestyle="--", label=f"{name} PAR")
        if entropy is not None:
            axis.axhline(entropy, color="black", linewidth=0.8, label="H (unigram)")
            axis.axhline(entropy - margin(entropy), color="grey", linestyle=":", label="H − margin")
        axis.set(xlabel="step", ylabel="held-out loss (nats)", title=f"UniLMv2 {title}")
        axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
