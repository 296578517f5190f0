"""Does a run learn? A model that predicts every target with the targets' unigram frequencies,
whatever its input, scores the unigram entropy H = −Σ p log p of the target tokens as its loss;
a run whose held-out loss still sits there well into its schedule has learnt nothing from the
context (UniLMv2, post-LN, at too high a peak lr: every [M] and [P] converges to one output
distribution, its AE and PAR losses equal).

`LearningCheck` (one per training run) estimates H once from the training examples' label ids
(`grassberger_entropy`: the plug-in −Σ p̂ log p̂ of a sample reads low where many tokens are rare) and
looks at each validation from `CHECK_FROM` of the run (and step `MIN_STEPS`) on; the first time the held-out loss is
within `margin(H)` of H (or above it), it says so once: a one-line warning, a
`{"step": N, "warning": "not_learning", ...}` row in metrics.jsonl and `"not_learning"` in run.json.
A run that leaves the level after the warning (a slow start) says that once as well, and the record
gets the step (`left_at_step`): such a run learned. Early stopping asks `at_unigram_level` of each
validation and does not count one that did not improve while the run has never been below the level.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .objectives.masking import IGNORE_INDEX

CHECK_FROM = 0.3  # validations at or after this fraction of max_steps are checked,
MIN_STEPS = 50  # and at or after this step (a smoke run of a few steps has learnt nothing yet, by design)
MARGIN_NATS, MARGIN_RATIO = 0.1, 0.03  # "at the unigram level": loss > H − max(0.1 nats, 3% of H)
SAME_LOSS = 1e-3  # UniLMv2's AE and PAR held-out losses this close: one output distribution for both
ENTROPY_EXAMPLES = 1000  # training examples H is counted over (spread over all of them),
ENTROPY_TARGETS = 100_000  # or as many more as give this many targets
MIN_TARGETS = 200  # fewer targets than this in those examples: no check (H is not known well enough)
CAUSES = (
    "likely causes: peak lr too high (--lr), warm-up too short (--warmup-ratio / --warmup-steps), "
    "Adam β2 (--adam-beta2)"
)
SLOW_CAUSES = (
    "likely causes: too few steps for the objective (masked-LM losses leave the unigram level "
    "later than left-to-right ones: --max-steps), peak lr too low or too high (--lr), warm-up "
    "(--warmup-ratio / --warmup-steps), Adam β2 (--adam-beta2)"
)


def likely_causes(reason: str) -> str:
    """What to try: the optimiser settings for a collapse (AE and PAR equal), else also the length of
    the run (a loss still at the unigram level may only be slow)."""
    return CAUSES if "equal" in reason else SLOW_CAUSES


def grassberger_entropy(counts: np.ndarray) -> float:
    """The entropy (nats) of the distribution a sample was drawn from, given its token counts c_i
    (n in all): Grassberger's estimator, H = log n − Σ c_i G(c_i) / n with
    G(c) = ψ(c) + (−1)^c (ψ((c + 1) / 2) − ψ(c / 2)) / 2 (P. Grassberger, "Entropy estimates from
    insufficient samplings", 2003, arXiv:physics/0307138). The plug-in −Σ p̂ log p̂ is biased low
    where many tokens are rare: on compare's UniLMv2 cell (16k vocabulary) 17k targets read 6.86
    nats and 680k read 7.21, so the check asked a model to beat a level 0.35 nats below what
    ignoring the input scores; this estimator reads 7.11 and 7.22."""
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    c = c[c > 0]
    g = torch.digamma(c) + 0.5 * (-1.0) ** c * (torch.digamma((c + 1) / 2) - torch.digamma(c / 2))
    return float(torch.log(c.sum()) - (c * g).sum() / c.sum())


def target_counts(examples, count: int) -> list[np.ndarray]:
    """Each `*labels` stream's token counts (IGNORE_INDEX left out) over `count` examples of epoch 0
    spread evenly over the set, the first and last included."""
    n = len(examples)
    chosen = np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64)) if n and count else []
    streams: dict[str, list[np.ndarray]] = {}
    for i in chosen:
        for key, value in examples.example(int(i), 0).items():
            if key.endswith("labels"):
                streams.setdefault(key, []).append(np.asarray(value).ravel())
    targets = [np.concatenate(arrays) for arrays in streams.values()]
    return [np.unique(t[t != IGNORE_INDEX], return_counts=True)[1] for t in targets]


def unigram_entropy(
    examples, max_examples: int = ENTROPY_EXAMPLES, min_targets: int = ENTROPY_TARGETS
) -> tuple[float, int]:
    """(H in nats, number of targets): the entropy of the target token distribution, by
    `grassberger_entropy`, from the label ids of `max_examples` training examples, or of as many
    more as give `min_targets` targets (the set has them: the estimate's bias falls with the sample,
    to 0.01 nats at 200k targets of a 16k vocabulary). Each `*labels` key is one stream of targets
    (UniLMv2's AE and PAR label the same tokens twice; pooled, every token would look seen twice):
    H is the streams' mean, weighted by their numbers of targets."""
    counts = target_counts(examples, max_examples)
    seen = sum(int(c.sum()) for c in counts)
    if 0 < seen < min_targets and len(examples) > max_examples:
        counts = target_counts(examples, math.ceil(max_examples * min_targets / seen))
    sizes = np.array([c.sum() for c in counts], dtype=np.float64)
    if sizes.sum() == 0:
        return math.nan, 0
    entropies = [grassberger_entropy(c) if c.size else 0.0 for c in counts]
    return float(np.dot(entropies, sizes) / sizes.sum()), int(sizes.sum())


def margin(entropy: float) -> float:
    return max(MARGIN_NATS, MARGIN_RATIO * entropy)


def not_learning_reason(losses: dict[str, float], entropy: float) -> str | None:
    """Why held-out `losses` (objective → mean loss) say the model has not learnt, or None: the best
    of them within `margin` of the unigram entropy (or above it); said as UniLMv2's collapse when
    its AE and PAR losses are equal there."""
    losses = {k: v for k, v in losses.items() if math.isfinite(v)}
    if not losses or not math.isfinite(entropy) or min(losses.values()) <= entropy - margin(entropy):
        return None
    if "ae" in losses and "par" in losses and abs(losses["ae"] - losses["par"]) <= SAME_LOSS:
        return (
            f"held-out AE and PAR losses equal ({losses['ae']:.4f}, {losses['par']:.4f}) at the unigram "
            f"entropy of the targets {entropy:.4f}: every [M] and [P] gets one output distribution"
        )
    shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(losses.items()))
    return f"held-out loss ({shown}) at the unigram entropy of the targets {entropy:.4f} (loss at unigram level)"


def held_out_losses(values: dict[str, Any], prefix: str = "valid/") -> dict[str, float]:
    """Objective → loss of a validation's `<prefix><name>_loss` values."""
    return {
        key[len(prefix) : -len("_loss")]: float(value)
        for key, value in values.items()
        if key.startswith(prefix) and key.endswith("_loss") and isinstance(value, (int, float))
    }


class LearningCheck:
    """The check of one run (see the module docstring); `check` after each validation."""

    def __init__(self, train_examples, max_steps: int, out_dir: str | Path):
        self.examples, self.max_steps, self.out_dir = train_examples, max_steps, Path(out_dir)
        self.entropy: float | None = None  # counted at the first validation checked
        self.targets = 0
        self.record: dict[str, Any] | None = None  # the warning, once given

    def at_unigram_level(self, values: dict[str, Any]) -> bool:
        """Whether a validation's held-out losses (`valid/<name>_loss`) are still within `margin(H)`
        of the unigram entropy H (counted now if not yet; False where too few targets tell H): early
        stopping does not count such a validation. UniLMv2 fine-tuned on Cornell dialog sits at H for
        about 300 steps and then learns; a patience of 3 validations of 50 steps ended it inside."""
        entropy = self.known_entropy()
        return entropy is not None and not_learning_reason(held_out_losses(values), entropy) is not None

    def known_entropy(self) -> float | None:
        """H, counted once (at the first call) from the training targets; None where fewer than
        `MIN_TARGETS` targets tell it."""
        if self.entropy is None:
            self.entropy, self.targets = unigram_entropy(self.examples)
        return self.entropy if self.targets >= MIN_TARGETS else None

    def resume(self, record: dict[str, Any] | None) -> None:
        """A resumed run continues from its run.json's record: it warns once in all."""
        self.record = record

    def check(self, step: int, values: dict[str, Any], writer=None) -> dict[str, Any] | None:
        """After a validation at `step` with `values` (`valid/<name>_loss`, ...; checked ones get
        `valid/unigram_entropy`): the warning's record the first time the run is not learning (then
        a warning, a row through `writer`, a `MetricsWriter`, and run.json's `not_learning`), else None.
        A warned run that later leaves the unigram level (a slow start: masked-LM losses leave it late)
        says so once too, and its record gets `left_at_step`: it learned after all."""
        if (self.record or {}).get("left_at_step") is not None or step < max(CHECK_FROM * self.max_steps, MIN_STEPS):
            return None
        entropy = self.known_entropy()
        if entropy is None:
            return None
        values["valid/unigram_entropy"] = entropy  # the reference, beside the losses it is checked against
        reason = not_learning_reason(held_out_losses(values), entropy)
        if self.record is None and reason is not None:
            self.record = {"step": step, "reason": reason, "unigram_entropy": entropy, "causes": likely_causes(reason)}
            self.report(self.record, writer)
            return self.record
        if self.record is not None and reason is None:
            self.record["left_at_step"] = step
            self.report_left(step, held_out_losses(values), writer)
        return None

    def report(self, record: dict[str, Any], writer=None) -> None:
        warnings.warn(f"step {record['step']}: not learning: {record['reason']}; {record['causes']}", stacklevel=3)
        if writer is not None:
            writer.write(
                record["step"],
                {"warning": "not_learning", "reason": record["reason"], "unigram_entropy": record["unigram_entropy"]},
            )
        self.write_record()

    def report_left(self, step: int, losses: dict[str, float], writer=None) -> None:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(losses.items()))
        print(
            f"step {step}: learning after all: held-out loss ({shown}) below the unigram level "
            f"{self.entropy - margin(self.entropy):.4f} (the warning of step {self.record['step']} was a slow start)",
            file=sys.stderr,
            flush=True,
        )
        if writer is not None:
            writer.write(step, {"note": "left_unigram_level", "warned_at_step": self.record["step"]})
        self.write_record()

    def write_record(self) -> None:
        run_json = self.out_dir / "run.json"
        if run_json.is_file():
            values = json.loads(run_json.read_text(encoding="utf-8"))
            values["not_learning"] = self.record
            run_json.write_text(json.dumps(values, indent=2, default=str) + "\n", encoding="utf-8")


def not_learning_in(run_dir: str | Path) -> dict[str, Any] | None:
    """A finished run's `not_learning` record (run.json), or None; see `still_not_learning`."""
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text(encoding="utf-8")).get("not_learning") if path.is_file() else None


def still_not_learning(record: dict[str, Any] | None) -> bool:
    """Whether a run's `not_learning` record stands: it warned and never left the unigram level."""
    return record is not None and record.get("left_at_step") is None
