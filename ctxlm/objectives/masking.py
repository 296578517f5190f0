"""Token corruption shared by the objectives: BERT's 80/10/10 masked-LM corruption.

Pure numpy: ids in, ids and labels out. Randomness comes only from the `numpy.random.Generator`
passed in, so an example is a deterministic function of its seed (see `example_rng`).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100  # label value that contributes no loss (the torch/transformers convention)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one example: a pure function of (seed, epoch, example index).

    Corruption drawn from it is identical whatever the worker, batch or resume point.
    """
    return np.random.default_rng([seed, epoch, index])


def bert_mask(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    replace_pool: np.ndarray,
    maskable: np.ndarray | None = None,
    prob: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking (Devlin et al., 2019, §3.1 and appendix A.1).

    Selects `round(prob * n)` of the `n` maskable positions uniformly without replacement (at least
    one when any is maskable, as BERT's `create_pretraining_data.py` does). Of the selected positions
    `mask_frac` become `mask_id`, `random_frac` a token drawn uniformly from `replace_pool` (the
    non-special vocabulary) and the rest keep their token.

    Returns `(inputs, labels)`: `labels` holds the original token at every selected position and
    `IGNORE_INDEX` elsewhere.
    """
    ids = np.asarray(ids)
    candidates = np.flatnonzero(maskable) if maskable is not None else np.arange(len(ids))
    if len(candidates) == 0:
        return ids.copy(), np.full_like(ids, IGNORE_INDEX, dtype=np.int64)
    n_select = max(1, int(round(prob * len(candidates))))
    chosen = rng.choice(candidates, size=min(n_select, len(candidates)), replace=False)
    return corrupt_positions(
        ids, chosen, rng, mask_id=mask_id, replace_pool=replace_pool, mask_frac=mask_frac, random_frac=random_frac
    )


def corrupt_positions(
    ids: np.ndarray,
    positions: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    replace_pool: np.ndarray,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 corruption at the given positions (`bert_mask`; UniLMv2 §4.1, MASS).

    Of `positions`, `mask_frac` become `mask_id`, `random_frac` a token drawn uniformly from
    `replace_pool`, the rest keep their token. Returns `(inputs, labels)`: `labels` holds the
    original token at every given position and `IGNORE_INDEX` elsewhere.
    """
    ids = np.asarray(ids, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    inputs = ids.copy()
    labels = np.full_like(ids, IGNORE_INDEX)
    labels[positions] = ids[positions]
    action = rng.random(len(positions))
    to_mask = positions[action < mask_frac]
    to_random = positions[(action >= mask_frac) & (action < mask_frac + random_frac)]
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.choice(np.asarray(replace_pool), size=len(to_random))
    return inputs, labels
