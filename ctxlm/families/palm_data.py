"""PALM's pre-training data (paper §2.2) and its baselines' (MASS, BART) on the PALM
encoder-decoder: each objective's `prepare` (registered in `ctxlm.families.palm`) turns a token store
into training and held-out examples."""

from __future__ import annotations

import numpy as np

from .palm import PalmDataConfig
from ..data.store import TokenStore
from ..errors import CtxlmError
from ..objectives.chunks import skipped_sentences
from ..objectives.palm import PalmExamples, PalmTokens, fragment_budgets, palm_windows
from ..tokenization import TextTokenizer
from . import PreparedData

PALM_STAGES = ("mlm", "generation")


def palm_tokens(tokenizer: TextTokenizer) -> PalmTokens:
    return PalmTokens(
        cls=tokenizer.cls_id, sep=tokenizer.sep_id, mask=tokenizer.mask_id, decoder_start=tokenizer.cls_id
    )


def prepare_palm_data(
    store: TokenStore,
    tokenizer: TextTokenizer,
    data: PalmDataConfig,
    stage: str,
    seed: int,
    max_positions: int | None = None,
) -> PreparedData:
    """PALM examples of a store: fragments of whole sentences (paper §2.2), split by document."""
    if stage not in PALM_STAGES:
        raise CtxlmError(f"unknown PALM stage '{stage}' (choose from {', '.join(PALM_STAGES)})")
    source_max, target_max = fragment_budgets(data.fragment_length, data.source_ratio)
    if max_positions is not None and max(source_max, target_max) > max_positions:
        raise CtxlmError(
            f"data.fragment_length {data.fragment_length} gives {source_max} source tokens, "
            f"more than the model's max_position_embeddings {max_positions}; lower --fragment-length "
            f"(data.fragment_length in a YAML config)"
        )
    train_docs, valid_docs = store.split_documents(data.valid_fraction, seed)
    valid_docs = valid_docs[: data.max_valid_documents]
    lengths = store.sentence_lengths
    windows = {
        name: palm_windows(lengths, store.document_offsets, docs, source_max, target_max)
        for name, docs in (("train", train_docs), ("valid", valid_docs))
    }
    if len(windows["train"]) == 0:
        raise CtxlmError(
            f"the corpus yields no PALM fragments of ≤ {data.fragment_length} tokens "
            "(documents need at least two sentences that fit)"
        )
    objective = "generation+mlm" if stage == "generation" and data.mlm_weight > 0 else stage
    tok = palm_tokens(tokenizer)
    make = lambda w: PalmExamples(  # noqa: E731
        store,
        w,
        tok,
        objective,
        replace_pool=tokenizer.replace_pool,
        mlm_probability=data.mlm_probability,
        seed=seed,
    )
    return PreparedData(
        make(windows["train"]),
        make(windows["valid"]),
        {
            "objective": f"palm/{objective}",
            "source_max": source_max,
            "target_max": target_max,
            "train_documents": len(train_docs),
            "valid_documents": len(valid_docs),
            "train_fragments": len(windows["train"]),
            "valid_fragments": len(windows["valid"]),
            "skipped": palm_skipped(
                store,
                np.concatenate([train_docs, valid_docs]),
                np.concatenate([windows["train"], windows["valid"]]),
                source_max,
                stage,
            ),
        },
    )


def prepare_denoising_data(
    store: TokenStore,
    tokenizer: TextTokenizer,
    data: PalmDataConfig,
    objective: str,
    seed: int,
    max_positions: int | None = None,
) -> PreparedData:
    """MASS or BART examples of a store: chunks of whole sentences of at most `data.fragment_length`
    tokens with [CLS] and [SEP], split by document (as `prepare_palm_data`)."""
    from ..objectives.bart import BartExamples
    from ..objectives.chunks import sentence_chunks
    from ..objectives.mass import MassExamples

    if max_positions is not None and data.fragment_length > max_positions:
        raise CtxlmError(
            f"data.fragment_length {data.fragment_length} exceeds the model's max_position_embeddings "
            f"{max_positions}; lower --fragment-length (data.fragment_length in a YAML config)"
        )
    budget = data.fragment_length - 2
    train_docs, valid_docs = store.split_documents(data.valid_fraction, seed)
    valid_docs = valid_docs[: data.max_valid_documents]
    chunks = {
        name: sentence_chunks(store.sentence_lengths, store.document_offsets, docs, budget)
        for name, docs in (("train", train_docs), ("valid", valid_docs))
    }
    if len(chunks["train"]) == 0:
        raise CtxlmError(f"the corpus yields no {objective.upper()} segments of ≤ {budget} tokens")
    tok = palm_tokens(tokenizer)
    if objective == "mass":
        make = lambda c: MassExamples(  # noqa: E731
            store,
            c,
            tok,
            replace_pool=tokenizer.replace_pool,
            ratio=data.mass_ratio,
            seed=seed,
        )
    else:
        make = lambda c: BartExamples(  # noqa: E731
            store,
            c,
            tok,
            ratio=data.bart_mask_ratio,
            poisson_lambda=data.bart_poisson_lambda,
            permute=data.bart_permute_sentences,
            seed=seed,
        )
    return PreparedData(
        make(chunks["train"]),
        make(chunks["valid"]),
        {
            "objective": objective,
            "max_length": data.fragment_length,
            "train_documents": len(train_docs),
            "valid_documents": len(valid_docs),
            "train_segments": len(chunks["train"]),
            "valid_segments": len(chunks["valid"]),
            "skipped": skipped_sentences(
                store.sentence_lengths,
                store.document_offsets,
                np.concatenate([train_docs, valid_docs]),
                np.concatenate([chunks["train"], chunks["valid"]]),
                budget,
            ),
        },
    )


def palm_skipped(
    store: TokenStore, documents: np.ndarray, windows: np.ndarray, source_max: int, stage: str
) -> dict[str, int]:
    """What PALM's windows leave out: one-sentence documents (no target), sentences longer than the
    source budget, and all sentences in no example; stage 1 trains on sources only, so it never
    sees a document's last sentence (always a target)."""
    lengths = store.sentence_lengths
    sizes = store.document_offsets[documents + 1] - store.document_offsets[documents]
    spans = windows[:, :2] if stage == "mlm" else np.stack([windows[:, 0], windows[:, 1] + windows[:, 2]], axis=1)
    return {
        "one_sentence_documents": int((sizes == 1).sum()),
        **skipped_sentences(lengths, store.document_offsets, documents, spans, source_max - 2),
    }


def prepare_palm_objective(
    store: TokenStore, tokenizer: TextTokenizer, model_config, data: PalmDataConfig, stage: str, seed: int
) -> PreparedData:
    """The PALM objective's `prepare` (`ctxlm.families.palm`)."""
    return prepare_palm_data(store, tokenizer, data, stage, seed, model_config.max_position_embeddings)


def prepare_mass_objective(
    store: TokenStore, tokenizer: TextTokenizer, model_config, data: PalmDataConfig, stage: str, seed: int
) -> PreparedData:
    """MASS's `prepare` (`ctxlm.families.palm`): a baseline on the PALM encoder-decoder."""
    return prepare_denoising_data(store, tokenizer, data, "mass", seed, model_config.max_position_embeddings)


def prepare_bart_objective(
    store: TokenStore, tokenizer: TextTokenizer, model_config, data: PalmDataConfig, stage: str, seed: int
) -> PreparedData:
    """BART text infilling's `prepare` (`ctxlm.families.palm`): a baseline on the PALM encoder-decoder."""
    return prepare_denoising_data(store, tokenizer, data, "bart", seed, model_config.max_position_embeddings)
