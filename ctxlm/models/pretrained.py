"""`from_pretrained` / `save_pretrained` on every ctxlm model class, as in transformers, over
ctxlm's model directories (`ctxlm.checkpoint`): config.json, model.safetensors, tokenizer.json and,
for a task-head model, head.json.

A model's decoding settings travel with it, like transformers' `model.generation_config`: a model
from `from_pretrained` (or `ctxlm.convert.model_from_hf`) carries its directory's `generation.json`
(its recipe's settings; `ctxlm.config.load_generation_config`) as `generation_config`, which `save_pretrained` writes
back and `Seq2SeqPredictor` decodes with.

`from_pretrained` takes a local directory or a Hugging Face hub repo id holding such a directory
(downloaded with huggingface_hub, the `hf` extra). huggingface_hub's PyTorchModelHubMixin is not
used: it would make huggingface_hub a dependency of every model class, and its config handling
would duplicate ctxlm's typed configs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CtxlmError


class PretrainedMixin:
    """Adds `from_pretrained` and `save_pretrained` to a model class, and `generation_config`
    (a `GenerationConfig` or None)."""

    generation_config = None

    @classmethod
    def from_pretrained(
        cls, source: str | Path, *, device: str | torch.device = "cpu", verify: bool | str | None = None
    ):
        """The model saved in `source` (a ctxlm model directory, a training run's output, or a hub
        repo id), in eval mode; it must be of this class. Its files are checked against its
        manifest.json first (`verify`: "full", the default, "size" or "off"; `ctxlm.checkpoint.load_model_dir`)."""
        from ..checkpoint import load_model_dir, resolve_model_dir
        from ..hub import hf_source_dir
        from ..config import load_generation_config

        directory = resolve_model_dir(hf_source_dir(source), verify)
        model, _ = load_model_dir(directory, with_tokenizer=False, device=device, verify=verify)
        if not isinstance(model, cls):
            raise CtxlmError(
                f"{source}: holds a {type(model).__name__}, not a {cls.__name__} "
                f"(use {type(model).__name__}.from_pretrained or ctxlm.checkpoint.load_model_dir)"
            )
        model.generation_config = load_generation_config(directory)
        return model.eval()

    def save_pretrained(
        self, directory: str | Path, tokenizer=None, generation_config=None, max_shard_size: int | str = "5GB"
    ) -> Path:
        """Write a ctxlm model directory (with `tokenizer` when given; weights above `max_shard_size`
        as transformers' shards and index) and its decoding settings, `generation_config` or else the
        model's own (`generation.json`; none when neither is set); returns its path."""
        from ..checkpoint import save_model_dir
        from ..config import save_generation_config

        path = save_model_dir(directory, self, tokenizer, max_shard_size)
        generation = generation_config or self.generation_config
        if generation is not None:
            save_generation_config(path, generation)
        return path
