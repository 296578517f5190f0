"""`from_pretrained` / `save_pretrained` on every ctxlm model class, as in transformers, over
ctxlm's model directories (`ctxlm.checkpoint`): config.json, model.safetensors, tokenizer.json and,
for a task-head model, head.json.

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
    """Adds `from_pretrained` and `save_pretrained` to a model class."""

    @classmethod
    def from_pretrained(cls, source: str | Path, *, device: str | torch.device = "cpu"):
        """The model saved in `source` (a ctxlm model directory, a training run's output, or a hub
        repo id), in eval mode; it must be of this class."""
        from ..checkpoint import load_model_dir
        from ..convert import hf_source_dir

        model, _ = load_model_dir(hf_source_dir(source), with_tokenizer=False, device=device)
        if not isinstance(model, cls):
            raise CtxlmError(f"{source}: holds a {type(model).__name__}, not a {cls.__name__} "
                             f"(use {type(model).__name__}.from_pretrained or ctxlm.checkpoint.load_model_dir)")
        return model.eval()

    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """Write a ctxlm model directory (with `tokenizer` when given); returns its path."""
        from ..checkpoint import save_model_dir

        return save_model_dir(directory, self, tokenizer)
