"""The task verbs end to end on tiny models trained from scratch: GLM's `infill` and cloze NLU,
UniLMv2's classification and extractive QA (each verb calls the API the other tests check)."""

from __future__ import annotations

import json

import pytest

from ctxlm.checkpoint import load_model_dir
from ctxlm.cli import main
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "glm": "model:\n  base: glm-tiny\n  d_model: 32\n  num_layers: 1\n  num_heads: 2\n  ffn_dim: 64\n",
    "unilm": "model:\n  base: unilm-tiny\n  d_model: 32\n  num_layers: 1\n  num_heads: 2\n  ffn_dim: 64\n",
}


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_tasks")
    tokenizer = train_tokenizer(
        [data_dir / "nlu/superglue/RTE/train.jsonl", data_dir / "nlu/glue/MRPC" / "msr_paraphrase_train.txt"],
        800,
        root / "tok",
        format="paragraphs",
    )
    for family, text in TINY.items():
        (root / f"{family}.yaml").write_text(text, encoding="utf-8")
    return root, tokenizer


def run(*args: str) -> None:
    assert main(list(args)) == 0


def test_glm_cloze_and_infill_verbs(setup, data_dir, tmp_path, capsys):
    """finetune --task cloze → a cloze model directory; evaluate --task cloze prints accuracy ×100;
    infill fills every blank and --eval reports BLEU."""
    root, _ = setup
    nlu = str(data_dir / "nlu")
    run(
        "finetune",
        "--task",
        "cloze",
        "--dataset",
        "superglue/RTE",
        "--data-dir",
        nlu,
        "--config",
        str(root / "glm.yaml"),
        "--tokenizer",
        str(root / "tok"),
        "--out",
        str(tmp_path / "rte"),
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--max-length",
        "256",
        "--no-progress",
        "--device",
        "cpu",
    )
    model, _ = load_model_dir(tmp_path / "rte")
    assert type(model).__name__ == "GlmClozeModel"
    capsys.readouterr()
    run(
        "evaluate",
        "--task",
        "cloze",
        "--model",
        str(tmp_path / "rte"),
        "--dataset",
        "superglue/RTE",
        "--data-dir",
        nlu,
        "--output",
        str(tmp_path / "scores.json"),
        "--device",
        "cpu",
        "--bf16",
    )
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["examples"] == 32 and 0 <= scores["accuracy"] <= 100
    run(
        "infill",
        "--model",
        str(tmp_path / "rte"),
        "--text",
        "the [MASK] sat on the [MASK] .",
        "--beam",
        "2",
        "--max-length",
        "3",
        "--device",
        "cpu",
    )
    filled = capsys.readouterr().out.strip().splitlines()[-1]
    assert "[MASK]" not in filled and filled.startswith("the ") and " sat on the " in filled
    run(
        "infill",
        "--model",
        str(tmp_path / "rte"),
        "--eval",
        str(data_dir / "infill/yahoo/valid.txt"),
        "--limit",
        "3",
        "--mask-ratio",
        "0.2",
        "--beam",
        "1",
        "--max-length",
        "3",
        "--device",
        "cpu",
        "--bf16",
    )
    report = json.loads(capsys.readouterr().out)
    assert report["lines"] == 3 and report["blanks"] >= 1 and 0 <= report["bleu"] <= 100


def test_unilm_classify_and_squad_verbs(setup, data_dir, tmp_path, capsys):
    """finetune --task classify (MRPC) and --task squad (a SQuAD 1.1 file the test writes, settings
    from a YAML recipe), then evaluate each with the verb."""
    root, _ = setup
    nlu = str(data_dir / "nlu")
    scratch = [
        "--config",
        str(root / "unilm.yaml"),
        "--tokenizer",
        str(root / "tok"),
        "--no-progress",
        "--device",
        "cpu",
    ]
    run(
        "finetune",
        "--task",
        "classify",
        "--dataset",
        "glue/MRPC",
        "--data-dir",
        nlu,
        "--out",
        str(tmp_path / "mrpc"),
        "--max-steps",
        "2",
        "--train-limit",
        "32",
        "--valid-limit",
        "16",
        *scratch,
    )
    run(
        "evaluate",
        "--task",
        "classify",
        "--model",
        str(tmp_path / "mrpc"),
        "--data-dir",
        nlu,
        "--limit",
        "16",
        "--output",
        str(tmp_path / "mrpc.json"),
        "--device",
        "cpu",
        "--bf16",
    )
    assert set(json.loads((tmp_path / "mrpc.json").read_text())) >= {"accuracy", "f1"}
    context = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy."
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": "Normans",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who gave their name to Normandy?",
                                "answers": [{"text": "The Normans", "answer_start": 0}],
                            },
                            {
                                "id": "q2",
                                "question": "In what centuries?",
                                "answers": [{"text": "10th and 11th centuries", "answer_start": context.index("10th")}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "squad.json").write_text(json.dumps(squad), encoding="utf-8")
    recipe = tmp_path / "squad.yaml"  # NLU options and train settings from YAML, as seq2seq recipes
    recipe.write_text(
        "task: squad\nmax_length: 64\nmax_query_length: 16\ndoc_stride: 32\ntrain:\n  max_steps: 2\n  batch_size: 2\n",
        encoding="utf-8",
    )
    run(
        "finetune",
        "--task",
        "squad",
        "--train",
        str(tmp_path / "squad.json"),
        "--valid",
        str(tmp_path / "squad.json"),
        "--out",
        str(tmp_path / "qa"),
        "--recipe",
        str(recipe),
        "--doc-stride",
        "16",
        *scratch,
    )
    run_json = json.loads((tmp_path / "qa/run.json").read_text())
    assert run_json["train"]["max_steps"] == 2 and run_json["train"]["batch_size"] == 2
    run(
        "evaluate",
        "--task",
        "squad",
        "--model",
        str(tmp_path / "qa"),
        "--ref",
        str(tmp_path / "squad.json"),
        "--output",
        str(tmp_path / "qa.json"),
        "--device",
        "cpu",
        "--bf16",
    )
    scores = json.loads((tmp_path / "qa.json").read_text())
    assert set(scores) == {"exact_match", "f1"} and 0 <= scores["exact_match"] <= scores["f1"] <= 100


@pytest.mark.parametrize(
    "flags",
    [
        ["--objective", "glm", "--glm-task", "multitask"],
        ["--objective", "glm", "--glm-sentinel", "--glm-no-shuffle"],
        ["--objective", "unilm", "--unilm-objective", "ar"],
    ],
)
def test_pretrain_verb_runs_each_family_and_ablation(setup, data_dir, tmp_path, flags):
    """`ctxlm pretrain` with GLM's tasks and ablation switches (the sentinel tokens [S0].. come with
    our tokenizer) and UniLMv2's objectives: a few steps, held-out loss logged, a loadable model."""
    root, tokenizer = setup
    assert tokenizer.sentinel_ids[:3] == [10, 11, 12]
    family = flags[1]
    config = tmp_path / "c.yaml"
    config.write_text(TINY[family] + "data:\n  max_length: 128\n  valid_fraction: 0.1\n", encoding="utf-8")
    run(
        "pretrain",
        *flags,
        "--config",
        str(config),
        "--corpus",
        str(data_dir / "pretrain/wikipedia/sents_008.txt"),
        "--tokenizer",
        str(root / "tok"),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--device",
        "cpu",
    )
    logged = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("valid/") for row in logged for k in row)
    model, _ = load_model_dir(tmp_path / "run")
    assert model.config.family == family
