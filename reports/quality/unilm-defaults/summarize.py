"""results.md of reports/quality/unilm-defaults/command.sh: for each run (the family's defaults, the
collapsing settings) its held-out AE and PAR losses at every validation, the unigram entropy of its
targets (`valid/unigram_entropy`, logged from the first checked validation on), the optimiser
settings it ran with, and what the not-learning check said.

    python reports/quality/unilm-defaults/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {"defaults": "the family's defaults (no optimiser flag)",
        "collapsing": "--lr 1e-3 --warmup-steps 100 --adam-beta2 0.999 --adam-eps 1e-8"}


def validations(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [row for row in rows if "valid/ae_loss" in row]


def main() -> None:
    lines = ["# UniLMv2 (unilm-tiny) on the shared corpus: its defaults against the collapsing settings", "",
             "Made by `sh reports/quality/unilm-defaults/command.sh` (batches of 16, 1,000 steps, one thread "
             "each), summarised by `python reports/quality/unilm-defaults/summarize.py`. Held-out losses in nats; "
             "H is the unigram entropy of the training targets (what a model that ignores its input scores).", ""]
    for name, settings in RUNS.items():
        run = HERE / "work" / name
        if not (run / "metrics.jsonl").is_file():
            lines += [f"## {name}: not run yet", ""]
            continue
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        train = info["train"]
        lines += [f"## {name}: {settings}", "",
                  f"lr {train['lr']:g}, warm-up {train.get('warmup_ratio') or train['warmup_steps']}, "
                  f"β2 {train['adam_beta2']:g}, ε {train['adam_eps']:g}; not-learning check: "
                  + (info["not_learning"]["reason"] if info.get("not_learning") else "did not fire")
                  + f"; validated up to step {max((r['step'] for r in validations(run)), default=0)} of "
                    f"{train['max_steps']} (rerun command.sh to continue)", "",
                  "| step | AE | PAR | H | AE − PAR |", "|---|---|---|---|---|"]
        for row in validations(run):
            entropy = row.get("valid/unigram_entropy")
            lines.append(f"| {row['step']} | {row['valid/ae_loss']:.4f} | {row['valid/par_loss']:.4f} | "
                         f"{'—' if entropy is None else f'{entropy:.4f}'} | "
                         f"{row['valid/ae_loss'] - row['valid/par_loss']:+.4f} |")
        lines.append("")
    (HERE / "results.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
