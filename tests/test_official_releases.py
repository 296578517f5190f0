"""The real readers of `ctxlm.official` together (issue 31 points 1 and 6): every format is found without
`family=` / `format=`, no format's detector says yes to another's files, and a converted release of each
family is a model the command line generates with and fine-tunes from.

The releases are the families' tiny parity fixtures, written in their official on-disk form by the
helpers of each family's test module."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_official_glm import FIXTURES as GLM_FIXTURES
from test_official_glm import write_hub_dir, write_megatron_dir
from test_official_palm import write_release as write_palm_release
from test_official_unilm import write_release as write_unilm_release
from test_official_unilm import write_s2s_ft_dir

from ctxlm.errors import CtxlmError
from ctxlm.families import resolve
from ctxlm.official import FORMATS, detect_format

pytestmark = pytest.mark.usefixtures("single_thread")


def official_paths(root: Path) -> dict[str, list[Path]]:
    """Each format's name → the paths that hold it, every form a user may pass (a directory, a file)."""
    glm_state = load_file(str(GLM_FIXTURES / "weights.safetensors"))
    palm_pt = write_palm_release(root / "palm", "pgen")
    return {
        "glm-hub": [
            write_hub_dir(root / "hub-bin", glm_state),
            write_hub_dir(root / "hub-st", glm_state, prefix=True, weights="safetensors"),
        ],
        "glm-megatron": [(tracker := write_megatron_dir(root / "megatron", glm_state)), tracker / "release"],
        "unilm-release": [
            write_unilm_release(root / "unilm-release", "rel32"),
            write_unilm_release(root / "unilm-named", "norel", named="unilm2-base-uncased"),
        ],
        "unilm-s2s-ft": [write_s2s_ft_dir(root / "s2s-ft", "rel32")],
        "palm-alicemind": [palm_pt, palm_pt.parent],
    }


def test_every_format_is_detected_without_names_and_no_detector_takes_another(tmp_path):
    paths = official_paths(tmp_path)
    assert set(paths) == set(FORMATS)
    for name, holders in paths.items():
        for path in holders:
            assert detect_format(path).name == name, path
            others = [other for other, spec in FORMATS.items() if other != name and resolve(spec.detect)(path)]
            assert others == [], f"{path} ({name}) is also taken by {others}"
    for unrelated in (tmp_path, tmp_path / "missing", GLM_FIXTURES / "inputs.json"):
        assert not any(resolve(spec.detect)(unrelated) for spec in FORMATS.values())
        with pytest.raises(CtxlmError, match="in no known official format"):
            detect_format(unrelated)


def test_the_command_line_generates_with_and_finetunes_from_a_converted_release_of_each_family(tmp_path, capsys):
    """`ctxlm convert --from-official`, then `ctxlm generate --model` and `ctxlm finetune --init` on its output:
    one tiny release per family (GLM hub, UniLMv2 release, PALM with the p_gen head)."""
    from ctxlm.checkpoint import load_model_dir
    from ctxlm.cli import main
    from ctxlm.config import GenerationConfig
    from ctxlm.predict import Seq2SeqPredictor

    releases = {
        "glm": write_hub_dir(tmp_path / "glm", load_file(str(GLM_FIXTURES / "weights.safetensors"))),
        "unilm": write_unilm_release(tmp_path / "unilm", "rel32"),
        "palm": write_palm_release(tmp_path / "palm", "pgen"),
    }
    rows = [
        {"document": "the cat sat on a mat", "summary": "cat sat"},
        {"document": "rain fell all day", "summary": "rain fell"},
    ] * 2
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    for family, release in releases.items():
        converted, run = tmp_path / f"{family}-converted", tmp_path / f"{family}-run"
        assert main(["convert", "--from-official", str(release), "--out", str(converted)]) == 0
        assert json.loads((converted / "config.json").read_text(encoding="utf-8"))["family"] == family
        capsys.readouterr()
        assert (
            main(
                [
                    "generate",
                    "--model",
                    str(converted),
                    "--text",
                    "the cat sat",
                    "--max-length",
                    "3",
                    "--beam",
                    "1",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        model, tokenizer = load_model_dir(converted)
        expected = Seq2SeqPredictor(model, tokenizer, "cpu").generate(
            ["the cat sat"],
            dataclasses.replace(model.generation_config or GenerationConfig(), num_beams=1, max_new_tokens=3),
        )
        assert capsys.readouterr().out.splitlines() == expected and expected[0], family
        assert (
            main(
                [
                    "finetune",
                    "--init",
                    str(converted),
                    "--task",
                    "summarization",
                    "--train",
                    str(data),
                    "--valid",
                    str(data),
                    "--out",
                    str(run),
                    "--max-steps",
                    "1",
                    "--batch-size",
                    "2",
                    "--warmup-steps",
                    "1",
                    "--eval-every",
                    "1",
                    "--no-progress",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        assert json.loads((run / "config.json").read_text(encoding="utf-8"))["family"] == family
