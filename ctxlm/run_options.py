"""The settings bundles passed instead of threaded keywords: how a run starts and where it runs
(`RunOptions`), which corpus it reads and how (`CorpusSpec`), and a transformers model a pre-training
run starts from (`HfInit`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class RunOptions:
    """How a run starts and where it runs (the same for every task and for pre-training)."""

    out: str | Path | None = None  # the run's folder, where the caller does not give it separately
    # continue from the newest checkpoint in the run's folder (one must exist); auto: continue if there is
    # one, else start a new run (the same command restarts a preempted job)
    resume: bool | str = False
    overwrite: bool = False  # start over in a folder that holds a run (clears it)
    allow_config_change: bool = False  # with resume: allow another lr or max_steps than the run was saved with
    device: Any = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N; in Python also a torch.device
    bf16: bool = False  # inference: run the model with bfloat16 weights
    seed: int | None = None  # replaces the training config's seed when given


@dataclass(frozen=True)
class CorpusSpec:
    """A pre-training corpus and how to read it (as `ctxlm.data.corpus` does)."""

    paths: tuple[str | Path, ...] = ()  # files or directories
    # the corpus file format: auto, sentences, paragraphs, jsonl or dataset (auto: .parquet/.arrow, save_to_disk
    # directories and hub:NAME → dataset; .jsonl → jsonl; text with one sentence a line → sentences; else paragraphs)
    format: str = "auto"
    text_field: str | None = None  # the JSONL / dataset field holding the text
    fallback_encoding: str | None = None  # decode lines that are not UTF-8 with this encoding
    # token store cache (default, None: `TokenStore.build`'s, $CTXLM_CACHE or ~/.cache/ctxlm)
    cache_dir: str | Path | None = None

    def reading(self) -> dict:
        """How the corpus is read, as `compare` records it (`corpus_format`, `text_field`, `fallback_encoding`)."""
        return dict(corpus_format=self.format, text_field=self.text_field, fallback_encoding=self.fallback_encoding)

    def store_options(self) -> dict:
        """The keyword arguments `TokenStore.build` and `train_tokenizer` take."""
        return dict(format=self.format, text_field=self.text_field, fallback_encoding=self.fallback_encoding)

    @classmethod
    def of(cls, corpus: CorpusSpec | Sequence[str | Path]) -> CorpusSpec:
        """`corpus` itself, or the spec of a list of files and directories read with the defaults."""
        return corpus if isinstance(corpus, CorpusSpec) else cls(tuple(corpus))


@dataclass(frozen=True)
class HfInit:
    """A transformers model a run starts from, converted into the objective's family on the fly (as
    `ctxlm convert --from-hf` converts it; `pretrain --init-from-hf`)."""

    # a transformers directory or hub id, converted on the fly (see `ctxlm convert`; the objective's family is
    # the target)
    source: str | Path
    decoder: str = "fresh"  # PALM from BERT/RoBERTa: a fresh decoder, or one from the encoder's layers ("encoder")
