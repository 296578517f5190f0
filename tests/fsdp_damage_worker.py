"""Run by tests/test_integrity.py under torchrun (2 CPU processes, gloo): a 4-step FSDP run, then for
each damage to the DCP files of its newest checkpoint a copy of its checkpoints 2 and 3 resumed with
the damaged step 3; rank 0 writes what each resume warned and whether it ended as the full run."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from test_integrity import DAMAGE
from test_robustness import config, tiny_model, train_pairs

DAMAGED = {"truncate": "dcp/__0_0.distcp", "flip": "dcp/__1_0.distcp", "delete": "dcp/.metadata"}


def run(out: Path, **kwargs):
    torch.set_num_threads(1)
    model = tiny_model()
    return train_pairs(model, config(max_steps=4, fsdp=True), out, **kwargs)


def main(root: Path) -> None:
    run(root / "full")
    rank, results = dist.get_rank(), {}
    for damage, name in DAMAGED.items():
        out = root / damage
        if rank == 0:
            for step in (2, 3):
                shutil.copytree(root / f"full/checkpoints/step-{step:08d}", out / f"checkpoints/step-{step:08d}")
            DAMAGE[damage](out / "checkpoints/step-00000003" / name)
        dist.barrier()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(out, resume=True)
        dist.barrier()  # rank 0 has written the final model
        if rank == 0:
            full = load_file(str(root / "full/model.safetensors"))
            resumed = load_file(str(out / "model.safetensors"))
            results[damage] = {
                "warnings": [str(w.message) for w in caught if "manifest" in str(w.message)],
                "same": all(torch.equal(full[k], resumed[k]) for k in full),
            }
    if rank == 0:
        (root / "results.json").write_text(json.dumps(results), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
