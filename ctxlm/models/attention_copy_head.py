"""The copy head of AliceMind's PALM release (`PalmConfig.copy_head = "attention"`).

`PALM/models/model_builder.py CopyGenerator` (used when the official code runs with `-p_gen true`)
is not the paper's pointer-generator (eqs. 2-8, `pointer_generator.py`): it has no attention of its
own but reads the decoder's, and mixes in a softmax over the scattered attention mass:

    a       = mean over heads of the LAST decoder layer's cross-attention        (B, T, S)
    copy    = zeros(V).scatter_add(source ids, a)                                (B, T, V)
    context = a · memory  (memory = the encoder's output)                        (B, T, d)
    p       = σ(prob_proj([context; x]))                                          (B, T, 1)
    P       = p · softmax(x·Eᵀ + b) + (1 − p) · softmax(copy)

and returns log P. softmax(copy) is nearly uniform over the vocabulary with a bump on the source's
tokens (the paper's P_c is the attention mass itself). E and b are the decoder's output layer
(`generator.gen_proj`, tied to the decoder embedding). Computed here in log space (logaddexp of
the two weighted log-softmaxes), in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import tied_logits


class AttentionCopyHead(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.prob_proj = nn.Linear(2 * d_model, 1)  # the release's `generator.prob_proj`

    def reset_parameters(self) -> None:
        """As `AbsSummarizer.__init__` initialises the generator: Xavier-uniform matrices, zero biases."""
        nn.init.xavier_uniform_(self.prob_proj.weight)
        nn.init.zeros_(self.prob_proj.bias)

    def forward(
        self,
        decoder_states: torch.Tensor,
        attention: torch.Tensor,
        encoder_states: torch.Tensor,
        source_ids: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        weight_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log P(y_t | y_<t, x) (B, T, V), float32. `attention` (B, T, S): the last decoder layer's
        cross-attention averaged over heads; `encoder_states` (B, S, d) and `source_ids` (B, S) have
        the rows of `decoder_states` (one per beam)."""
        gen = tied_logits(decoder_states, weight, bias, weight_t).float()
        attention = attention.float()
        index = source_ids[:, None, :].expand(-1, attention.shape[1], -1)
        copy = torch.zeros_like(gen).scatter_add_(2, index, attention)
        context = torch.matmul(attention, encoder_states.float())
        gate = self.prob_proj(torch.cat([context.to(decoder_states.dtype), decoder_states], dim=-1)).float()
        return torch.logaddexp(
            F.logsigmoid(gate) + F.log_softmax(gen, dim=-1), F.logsigmoid(-gate) + F.log_softmax(copy, dim=-1)
        )
