"""PALM's copy head (pointer-generator, Bi et al. 2020 eqs. 2-8) on GLM and UniLMv2 (`copy: true`,
ctxlm's extension): the distribution against a term-by-term float64 evaluation of eqs. 2-8, the
training loss against the full distribution, cached decoding against teacher forcing, saving and
loading, the variants, the YAML field and the CLI flag."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_models_glm import Recorder
from test_models_unilm import cached_steps_with_reorder

from ctxlm.cli import main
from ctxlm.config_loading import load_pretrain_config, named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.generation import GenerationConfig, generate
from ctxlm.models.glm import GlmModel, glm_tokens
from ctxlm.models.losses import token_nll
from ctxlm.models.unilm import UnilmModel
from ctxlm.objectives import glm as glm_objective
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.objectives.unilm import UnilmTokens, build_seq2seq_example, build_seq2seq_prompt
from ctxlm.objectives.variants import PRETRAIN_VARIANTS
from ctxlm.tasks.cloze import score_candidates
from ctxlm.training import collate

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 60
WORDS = (20, 32)  # a narrow range of ordinary tokens: labels often occur in the context


# ----------------------------------------------------------------------------- the reference
def reference_distribution(pointer, s, memory, embedding, bias=None):
    """P(y) (V,) for one query state s (d,) and memory [(h_l, x_l)], eqs. (2)-(8) term by term."""
    vocab_logits = embedding @ (pointer.W_v.weight @ s + pointer.W_v.bias)
    p_v = torch.softmax(vocab_logits + (0 if bias is None else bias), 0)  # (2)
    if not memory:
        return p_v
    e = torch.stack(
        [
            pointer.w_c @ torch.tanh(pointer.W_m.weight @ h + pointer.W_s.weight @ s + pointer.W_s.bias)
            for h, _ in memory
        ]
    )  # (3)
    alpha = torch.softmax(e, 0)  # (4)
    z = sum(a * h for a, (h, _) in zip(alpha, memory))  # (5)
    p_c = torch.zeros_like(p_v)
    for a, (_, x) in zip(alpha, memory):
        p_c[x] += a  # (6)
    lam = torch.sigmoid(pointer.gate.weight[0] @ torch.cat([z, s]) + pointer.gate.bias[0])  # (8)
    return lam * p_v + (1 - lam) * p_c  # (7)


def randomize_pointer(model, seed, gate_bias=0.0):
    """Copy-head weights large enough that the copy attention and the gate matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.pointer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        model.pointer.gate.bias.fill_(gate_bias)
    return model


# ----------------------------------------------------------------------------- GLM
def glm_model(seed=0, copy=True, gate_bias=0.0):
    torch.manual_seed(seed)
    cfg = named_model_config(
        "glm-tiny",
        vocab_size=VOCAB,
        d_model=16,
        num_layers=2,
        num_heads=2,
        ffn_dim=32,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.3,
        copy=copy,
    )
    model = GlmModel(cfg).double().eval()
    return randomize_pointer(model, seed, gate_bias) if copy else model


GLM_SPECIAL = ("pad", "cls", "eos", "mask", "smask", "gmask", "sop", "eop")


def glm_batch(tok, lengths=(14, 22, 9), seed=0):
    rng = np.random.default_rng(seed)
    examples = [glm_objective.blank_example(rng.integers(*WORDS, size=n), rng, tok, ratio=0.3) for n in lengths]
    batch = collate(examples, tok.pad)
    return {k: batch[k] for k in ("input_ids", "position_ids", "block_position_ids", "part_a_length", "labels")}


def glm_reference(model, batch):
    """P at every Part B position of every row, from eqs. (2)-(8) with memory = Part A's ordinary tokens."""
    tok = glm_tokens(model.config)
    special = {getattr(tok, name) for name in GLM_SPECIAL}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    h = model.hidden_states(**inputs)
    out = {}
    for b in range(h.shape[0]):
        sep, ids = int(batch["part_a_length"][b]), batch["input_ids"][b]
        memory = [(h[b, l], int(ids[l])) for l in range(sep) if int(ids[l]) not in special]
        for t in range(sep, int((ids != tok.pad).sum())):
            out[b, t] = reference_distribution(model.pointer, h[b, t], memory, model.word_embeddings.weight)
    return out


@torch.no_grad()
def test_glm_copy_distribution_is_eqs_2_to_8():
    """log_probs over a padded batch of multi-blank examples equals eqs. (2)-(8) evaluated term by
    term with memory = Part A's ordinary tokens; with λ ≡ 0 (eq. 8) all mass is on them: none on
    [MASK], [CLS], [SEP] or tokens absent from Part A."""
    model = glm_model()
    tok = glm_tokens(model.config)
    batch = glm_batch(tok)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    log_p = model.log_probs(**inputs)
    reference = glm_reference(model, batch)
    assert len(reference) > 15
    for (b, t), p in reference.items():
        torch.testing.assert_close(log_p[b, t].double().exp(), p, atol=1e-6, rtol=1e-5)
    copy_only = glm_model(gate_bias=-1e4)
    p = copy_only.log_probs(**inputs).exp()
    for b in range(p.shape[0]):
        sep, ids = int(batch["part_a_length"][b]), batch["input_ids"][b]
        copyable = {int(x) for x in ids[:sep]} - {getattr(tok, name) for name in GLM_SPECIAL}
        assert tok.mask in ids[:sep].tolist() and tok.cls in ids[:sep].tolist()
        others = [v for v in range(VOCAB) if v not in copyable]
        assert (p[b, sep:, others] == 0).all()
        torch.testing.assert_close(
            p[b, sep:, sorted(copyable)].sum(-1), torch.ones(p.shape[1] - sep), atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_glm_copy_loss_is_the_full_distribution_at_the_labels(smoothing):
    """The training loss (label log-likelihood without a B×T×V mixture) and label_log_probs equal
    the full eq. (7) distribution at the labels; gradients agree, are finite and reach the head."""
    model = glm_model(1)
    batch = glm_batch(glm_tokens(model.config), seed=1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    out = model(**batch, label_smoothing=smoothing)
    log_p = model.log_probs(**inputs)
    reference, _, count = token_nll(log_p, labels, smoothing)
    torch.testing.assert_close(out.loss, reference / count, atol=1e-6, rtol=1e-6)
    assert int(out.metrics["lm_tokens"]) == int((labels != IGNORE_INDEX).sum())
    keep = labels != IGNORE_INDEX
    at_labels = log_p.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * keep
    torch.testing.assert_close(model.label_log_probs(**inputs, labels=labels), at_labels, atol=1e-6, rtol=1e-6)
    params = [
        model.pointer.W_s.weight,
        model.pointer.gate.weight,
        model.pointer.w_c,
        model.word_embeddings.weight,
        model.layers[0].fc1.weight,
    ]
    fast = torch.autograd.grad(out.loss, params)
    for a, b in zip(fast, torch.autograd.grad(reference / count, params)):
        assert torch.isfinite(a).all() and a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


GLM_SOURCES = [[21, 22, 23, 21, 24, 25], [26, 27], [28, 29, 20, 28]]


def glm_prompts(tok):
    rows = [glm_objective.build_seq2seq_example(np.array(s), None, tok)["input_ids"] for s in GLM_SOURCES]
    return collate([{"input_ids": r} for r in rows], tok.pad)["input_ids"]


def glm_teacher_forced(model, source, target):
    """log P at every Part B position of `[CLS] source [gMASK] [sop] target`, one forward pass."""
    ex = glm_objective.build_seq2seq_example(
        np.array(source), np.array(target, dtype=np.int64), glm_tokens(model.config)
    )
    batch = {
        k: v
        for k, v in collate([ex], 0).items()
        if k in ("input_ids", "position_ids", "block_position_ids", "part_a_length")
    }
    return model.log_probs(**batch)[0, int(ex["part_a_length"]) :]


def score_of(log_p, tokens):
    return float(log_p[torch.arange(len(tokens)), torch.tensor(tokens)].sum())


@torch.no_grad()
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_glm_cached_decoding_with_copy_equals_teacher_forcing(mode):
    """Greedy (every step's distribution), beam search and sampling (their scores) over a padded
    batch of prompts equal one teacher-forced pass over the generated text."""
    model = glm_model(2)
    tok = glm_tokens(model.config)
    ids = glm_prompts(tok)
    assert (ids == tok.pad).any()
    recorder = Recorder(model)
    cfg = {
        "greedy": GenerationConfig(num_beams=1, max_new_tokens=6),
        "beam": GenerationConfig(num_beams=3, max_new_tokens=6, length_penalty=0.0),
        "sample": GenerationConfig(num_beams=1, do_sample=True, seed=3, max_new_tokens=6),
    }[mode]
    out = generate(recorder, ids, None, cfg)
    for i, (source, tokens) in enumerate(zip(GLM_SOURCES, out.tokens)):
        reference = glm_teacher_forced(model, source, tokens)
        assert out.scores[i] == pytest.approx(score_of(reference, tokens), abs=1e-5)
        if mode == "greedy":
            for step in range(len(tokens)):
                torch.testing.assert_close(recorder.steps[step][i], reference[step], atol=1e-6, rtol=1e-6)
    # the model's own reorder, rows swapped by hand
    state = model.start_decoding(ids, num_beams=2, max_length=4)
    model.decode_step(state, torch.full((6,), tok.sop))
    second = torch.tensor([21, 22, 26, 27, 28, 29])
    model.decode_step(state, second)
    swap = torch.tensor([1, 0, 3, 2, 5, 4])
    model.reorder(state, swap)
    got = model.decode_step(state, torch.tensor([23, 24, 25, 20, 21, 22]))
    for row in range(6):
        target = [int(second[swap[row]]), [23, 24, 25, 20, 21, 22][row]]
        reference = glm_teacher_forced(model, GLM_SOURCES[row // 2], target)
        torch.testing.assert_close(got[row], reference[2], atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_glm_cloze_scores_with_copy_equal_step_by_step_decoding():
    """label_log_probs (one pass, via score_candidates) equals cached decoding with the copy head."""
    model = glm_model(3)
    tok = glm_tokens(model.config)
    context = np.array([21, 22, 23, tok.mask, 24, 21])
    candidates = [[21], [22, 30], [24, 21, 31]]
    examples = glm_objective.build_cloze_candidates(context, candidates, tok, score_eop=True)
    scores = score_candidates(model, examples)
    part_a = torch.as_tensor(examples[0]["input_ids"][: int(examples[0]["part_a_length"])])[None]
    for candidate, score in zip(candidates, scores):
        state = model.start_decoding(part_a, max_length=len(candidate) + 1)
        total, fed = 0.0, tok.sop
        for token in candidate + [tok.eop]:
            total += float(model.decode_step(state, torch.tensor([fed]))[0, token])
            fed = token
        assert float(score) == pytest.approx(total, abs=1e-6)


@torch.no_grad()
def test_glm_prompt_with_nothing_to_copy_decodes_with_the_vocabulary_softmax():
    """A Part A of special tokens only (`[CLS] [gMASK]`) leaves the copy head nothing: P = P_v of
    eq. (2), finite, and the same in a batch next to a row that can copy."""
    model = glm_model(4)
    tok = glm_tokens(model.config)
    ids = torch.tensor([[tok.cls, tok.gmask, tok.pad, tok.pad], [tok.cls, 21, 22, tok.gmask]])
    state = model.start_decoding(ids, num_beams=2, max_length=2)
    log_p = model.decode_step(state, torch.full((4,), tok.sop))
    assert torch.isfinite(log_p).all()
    h = model.hidden_states(
        torch.tensor([[tok.cls, tok.gmask, tok.sop]]),
        torch.tensor([[0, 1, 1]]),
        torch.tensor([[0, 0, 1]]),
        torch.tensor([2]),
    )[0, -1]
    p_v = reference_distribution(model.pointer, h, [], model.word_embeddings.weight)
    torch.testing.assert_close(log_p[0].double().exp(), p_v, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(log_p[1], log_p[0])
    copying = glm_teacher_forced(model, [21, 22], [])[0]
    torch.testing.assert_close(log_p[2], copying, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- UniLMv2
TOK = UnilmTokens(sos=2, eos=3, mask=4, pseudo=9, pad=0, replace_pool=np.arange(10, VOCAB))
UNILM_SOURCES = [[21, 22, 23, 21, 24, 25, 26], [27, 28, 20], [29, 30, 21, 29, 31]]


def unilm_model(seed=0, copy=True, gate_bias=0.0):
    torch.manual_seed(seed)
    cfg = named_model_config(
        "unilm-tiny",
        vocab_size=VOCAB,
        d_model=16,
        num_layers=2,
        num_heads=2,
        ffn_dim=32,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.3,
        pad_token_id=TOK.pad,
        bos_token_id=TOK.sos,
        eos_token_id=TOK.eos,
        mask_token_id=TOK.mask,
        pseudo_token_id=TOK.pseudo,
        copy=copy,
    )
    model = UnilmModel(cfg).double().eval()
    with torch.no_grad():
        model.rel_pos_bias.embedding.weight.normal_(0.0, 1.0)
        model.mlm_head.bias.normal_(0.0, 1.0)
    return randomize_pointer(model, seed, gate_bias) if copy else model


def unilm_batch(sources, targets):
    examples = [build_seq2seq_example(np.array(s), np.array(t, dtype=np.int64), TOK) for s, t in zip(sources, targets)]
    return collate([{k: v for k, v in e.items() if isinstance(v, np.ndarray)} for e in examples], TOK.pad)


def unilm_teacher_forced(model, sources, targets):
    """Per row, log P of every target token (TGT [EOS]) from one forward pass over the fine-tuning layout."""
    out = model(**unilm_batch(sources, targets), return_log_probs=True)
    return list(out.log_probs.split([len(t) + 1 for t in targets]))


@torch.no_grad()
def test_unilm_copy_distribution_is_eqs_2_to_8():
    """The seq2seq distribution at every [P] equals eqs. (2)-(8) term by term: query = the [P]'s
    state through the MLM head's transform, memory = the source segment's ordinary tokens (no
    [SOS]/[EOS]), P_v with the MLM head's bias."""
    model = unilm_model()
    targets = [[21, 33, 24], [40], [29, 29, 35, 31]]
    batch = unilm_batch(UNILM_SOURCES, targets)
    log_p = model(**batch, return_log_probs=True).log_probs
    h = model.hidden_states(batch["input_ids"], batch["position_ids"], batch["token_type_ids"], batch["attention_mask"])
    head = model.mlm_head
    rows = []
    for b, source in enumerate(UNILM_SOURCES):
        memory = [(h[b, 1 + i], x) for i, x in enumerate(source)]  # [SOS] source [EOS]: the words only
        for p in (batch["labels"][b] != IGNORE_INDEX).nonzero().flatten().tolist():
            s = head.layer_norm(head.act(head.dense(h[b, p])))
            rows.append(
                reference_distribution(model.pointer, s, memory, model.embeddings.word_embeddings.weight, head.bias)
            )
    assert len(rows) == sum(len(t) + 1 for t in targets) == len(log_p)
    torch.testing.assert_close(log_p.double().exp(), torch.stack(rows), atol=1e-6, rtol=1e-5)
    copy_only = unilm_model(gate_bias=-1e4)
    p = copy_only(**batch, return_log_probs=True).log_probs.exp()
    start = 0
    for source, target in zip(UNILM_SOURCES, targets):
        block = p[start : start + len(target) + 1]
        start += len(target) + 1
        assert (block[:, [v for v in range(VOCAB) if v not in source]] == 0).all()  # [EOS] included


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_unilm_copy_loss_is_the_full_distribution_at_the_labels(smoothing):
    model = unilm_model(1)
    targets = [[21, 33, 24], [40], [29, 29, 35, 31]]
    batch = unilm_batch(UNILM_SOURCES, targets)
    fast = model(**batch, label_smoothing=smoothing)
    full = model(**batch, label_smoothing=smoothing, return_log_probs=True)
    labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
    reference, _, count = token_nll(full.log_probs, labels, smoothing)
    torch.testing.assert_close(fast.loss, reference / count, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(full.loss, fast.loss, atol=1e-6, rtol=1e-6)
    params = [
        model.pointer.W_m.weight,
        model.pointer.gate.weight,
        model.mlm_head.dense.weight,
        model.embeddings.word_embeddings.weight,
    ]
    for a, b in zip(torch.autograd.grad(fast.loss, params), torch.autograd.grad(full.loss, params)):
        assert torch.isfinite(a).all() and a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(**{**batch, "token_type_ids": None})


def unilm_prompts():
    rows = [build_seq2seq_prompt(np.array(s), TOK)["input_ids"] for s in UNILM_SOURCES]
    ids = collate([{"input_ids": r} for r in rows], TOK.pad)["input_ids"]
    return ids, ids.ne(TOK.pad)


@torch.no_grad()
def test_unilm_cached_steps_with_copy_equal_teacher_forcing():
    """decode_step (padded batch, beams, rows reordered mid-way) equals one forward pass."""
    model = unilm_model(2)
    ids, mask = unilm_prompts()
    beams = 2
    cached, targets = cached_steps_with_reorder(model, ids, mask, beams, 5, WORDS)
    sources = [s for s in UNILM_SOURCES for _ in range(beams)]
    full = unilm_teacher_forced(model, sources, targets)
    torch.testing.assert_close(cached, torch.stack(full), atol=1e-6, rtol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_unilm_decoding_scores_with_copy_equal_teacher_forcing(mode):
    model = unilm_model(3)
    ids, mask = unilm_prompts()
    cfg = {
        "greedy": GenerationConfig(num_beams=1, max_new_tokens=6),
        "beam": GenerationConfig(num_beams=3, max_new_tokens=6, length_penalty=0.0),
        "sample": GenerationConfig(num_beams=1, do_sample=True, seed=5, max_new_tokens=6),
    }[mode]
    out = generate(model, ids, mask, cfg)
    full = unilm_teacher_forced(model, UNILM_SOURCES, [t[:-1] if t[-1] == TOK.eos else t for t in out.tokens])
    for tokens, score, log_p in zip(out.tokens, out.scores, full):
        assert score == pytest.approx(score_of(log_p, tokens), abs=1e-5)
        if mode == "greedy":
            assert log_p[: len(tokens)].argmax(-1).tolist() == tokens


# ----------------------------------------------------------------------------- saving, configs, CLI
@pytest.mark.parametrize("family", ["glm", "unilm"])
def test_copy_model_round_trips_through_save_and_load(family, tmp_path):
    model = (glm_model if family == "glm" else unilm_model)(5).float()
    assert any(name.startswith("pointer.") for name in model.state_dict())
    model.save_pretrained(tmp_path / "m")
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert loaded.config.copy is True and loaded.pointer is not None
    saved = model.state_dict()
    assert set(loaded.state_dict()) == set(saved)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[name]), name
    plain = (glm_model if family == "glm" else unilm_model)(5, copy=False)
    assert plain.config.copy is False and not any(n.startswith("pointer.") for n in plain.state_dict())


def test_copy_off_leaves_the_other_weights_of_the_seed_unchanged():
    for make in (glm_model, unilm_model):
        with_copy, without = make(6).state_dict(), make(6, copy=False).state_dict()
        for name, value in without.items():
            if name != "rel_pos_bias.embedding.weight" and name != "mlm_head.bias":  # redrawn by the helper
                assert torch.equal(value, with_copy[name]), name


def test_variants_and_yaml(tmp_path):
    for name, base in (("glm-copy", "glm"), ("unilm-copy", "unilm")):
        variant = PRETRAIN_VARIANTS[name]
        assert variant.model == {"copy": True}
        assert (variant.family, variant.stages) == (PRETRAIN_VARIANTS[base].family, PRETRAIN_VARIANTS[base].stages)
    path = tmp_path / "glm.yaml"
    path.write_text("model:\n  base: glm-tiny\n  d_model: 16\n  num_heads: 2\n  copy: true\n", encoding="utf-8")
    config = load_pretrain_config(str(path))
    assert config.model.copy is True and GlmModel(config.model).pointer is not None
    assert named_model_config("unilm-tiny").copy is False and named_model_config("glm-tiny").copy is False


def test_cli_copy_flag(monkeypatch, tmp_path, capsys):
    import ctxlm.pretraining
    import ctxlm.tasks.seq2seq

    seen = {}

    def fake_pretrain(corpus, out, config, **options):
        seen["model"] = config.model
        return SimpleNamespace(interrupted=False, step=0, final_metrics={})

    def fake_finetune(train, valid, out, recipe, *, scratch, **options):
        seen["model"] = scratch.config
        return SimpleNamespace(interrupted=False, step=0, final_metrics={})

    monkeypatch.chdir(tmp_path)
    for name in ("c.txt", "x.jsonl", "t"):
        (tmp_path / name).write_text("", encoding="utf-8")
    monkeypatch.setattr(ctxlm.pretraining, "pretrain", fake_pretrain)
    monkeypatch.setattr(ctxlm.tasks.seq2seq, "finetune", fake_finetune)
    for config in ("glm-tiny", "unilm-tiny"):
        assert main(["pretrain", "--corpus", "c.txt", "--out", "out", "--config", config, "--copy"]) == 0
        assert seen.pop("model").copy is True
        assert (
            main(["finetune", "--config", config, "--tokenizer", "t", "--train", "x.jsonl", "--out", "out", "--copy"])
            == 0
        )
        assert seen.pop("model").copy is True
    capsys.readouterr()
    assert main(["pretrain", "--corpus", "c.txt", "--out", "out", "--copy", "--no-copy"]) == 2
    assert main(["finetune", "--init", "d", "--train", "x.jsonl", "--out", "out", "--copy"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)

    from ctxlm.config_loading import set_copy

    @dataclasses.dataclass
    class NoCopy:
        family: str = "other"

    with pytest.raises(CtxlmError, match="no copy head option"):
        set_copy(NoCopy(), True)


@pytest.mark.parametrize("family", ["glm", "unilm"])
def test_export_keeps_the_copy_head_as_an_extra_head(family, tmp_path):
    """`ctxlm convert --to-hf` and back restores the copy head (GLM: in its own layout's weights;
    UniLMv2: in ctxlm_extra.safetensors beside the BERT); --drop-copy-head exports the model
    without it."""
    from ctxlm.convert import EXPORT_EXTRA, export_to_hf, model_from_hf

    model = (glm_model if family == "glm" else unilm_model)(7).float()
    model.save_pretrained(tmp_path / "m")
    notes = export_to_hf(tmp_path / "m", tmp_path / "hf")
    assert any("copy head" in note for note in notes)
    if family == "unilm":
        from safetensors.torch import load_file

        assert {n for n in load_file(str(tmp_path / "hf" / EXPORT_EXTRA)) if n.startswith("pointer.")} == {
            n for n in model.state_dict() if n.startswith("pointer.")
        }
    back, _, _ = model_from_hf(tmp_path / "hf")
    assert back.config.copy is True
    for name, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    export_to_hf(tmp_path / "m", tmp_path / "hf-dropped", drop_copy_head=True)
    dropped, _, _ = model_from_hf(tmp_path / "hf-dropped")
    assert dropped.config.copy is False and dropped.pointer is None
