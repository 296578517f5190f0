"""ctxlm's fused loss against F.cross_entropy of the materialised logits, under bf16 autocast, at
unilm-base's shape (300 labelled rows, d 768, the 8k vocabulary): the loss and the relative error of
each gradient. (tests/test_vocab_cross_entropy.py checks it in float64.)

    .venv/bin/python reports/quality/unilm-defaults/fused_loss_check.py
"""

import torch
import torch.nn.functional as F

from ctxlm.models.vocab_cross_entropy import linear_cross_entropy

ROWS, D, V = 300, 768, 8000


def loss_and_gradients(loss_of, hidden, weight, bias):
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(*leaves)
    loss.backward()
    return loss.item(), [t.grad for t in leaves]


def main() -> None:
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(ROWS, D), torch.randn(V, D) * 0.02, torch.zeros(V)
    labels = torch.randint(0, V, (ROWS,))
    fused, fused_grads = loss_and_gradients(lambda h, w, b: linear_cross_entropy(h, w, b, labels)[0] / ROWS,
                                            hidden, weight, bias)
    plain, plain_grads = loss_and_gradients(lambda h, w, b: F.cross_entropy(F.linear(h, w, b).float(), labels),
                                            hidden, weight, bias)
    print(f"loss: fused {fused:.7f}, F.cross_entropy {plain:.7f}")
    for name, a, b in zip(("hidden", "embedding", "bias"), fused_grads, plain_grads):
        print(f"gradient of the {name}: relative error {((a - b).norm() / b.norm()).item():.4f}")


if __name__ == "__main__":
    main()
