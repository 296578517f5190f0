"""The machinery every official format shares (`ctxlm.official`, issue 31 points 2, 5 and 7): the model is
built on the meta device and takes the reader's tensors as they are (one copy of the weights, the
checkpoint's dtype), big outputs are sharded as transformers shards them, and every reader of model
directories takes the shards; `ctxlm convert --from-official / --to-official` is thin over it.

The formats here are test-registered fakes (a safetensors file with ctxlm's names and a config.json), so
what is tested is the shared path, not a family's reader (those have their own parity tests); the peak-memory
test converts a real GLM hub release through the `glm-hub` reader."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ctxlm.official as official
from ctxlm.checkpoint import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, build_model, load_model_dir, parse_size, save_model_dir
from ctxlm.cli import main
from ctxlm.config_loading import model_config_from_dict, named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.models.glm import GlmModel

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
FAKE = "fake-safetensors"


# ------------------------------------------------------------------ a fake official format (test-registered)
def is_fake(path: Path) -> bool:
    return (Path(path) / "fake.safetensors").is_file()


def read_fake(path: Path, **options) -> official.OfficialCheckpoint:
    """ctxlm's names in `fake.safetensors` (memory-mapped views, as a real reader returns them); a fused
    `attention.query_key_value` is cut into q, k, v as the GLM formats' readers cut it."""
    config = model_config_from_dict(json.loads((path / "fake-config.json").read_text()))
    tensors = {}
    with safe_open(str(path / "fake.safetensors"), framework="pt") as handle:
        for name in handle.keys():
            if ".query_key_value." in name:
                prefix, kind = name.split(".query_key_value.")
                parts = handle.get_tensor(name).chunk(3)
                tensors.update({f"{prefix}.{p}_proj.{kind}": part for p, part in zip("qkv", parts)})
            else:
                tensors[name] = handle.get_tensor(name)
    return official.OfficialCheckpoint(config, tensors, notes=["a test format"])


def write_fake(model, tokenizer, out_dir: Path) -> list[str]:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "fake.safetensors"))
    (out_dir / "fake-config.json").write_text(json.dumps(dataclasses.asdict(model.config)))
    return [f"wrote {out_dir / 'fake.safetensors'}"]


FAKE_FORMAT = official.OfficialFormat(
    FAKE, "glm", "a safetensors file with ctxlm's names (tests)", is_fake, read_fake, write_fake
)


@pytest.fixture
def fake_format(monkeypatch):
    """Only the fake format is known (the family modules' readers are tested in their own files)."""
    monkeypatch.setattr(official, "FORMATS", {FAKE: FAKE_FORMAT})


def write_release(
    directory: Path, config, dtype=torch.float32, seed: int = 0, drop: str | None = None, fused: bool = False
) -> dict:
    """A fake release of `config`'s shapes with random weights (`fused`: q, k, v in one `query_key_value`
    per layer, as GLM's files hold them); returns its tensors under ctxlm's names."""
    directory.mkdir(parents=True, exist_ok=True)
    with official.parameters_on_meta():
        shapes = {name: tensor.shape for name, tensor in build_model(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        name: (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        for name, shape in shapes.items()
        if name != drop
    }
    stored = dict(tensors)
    if fused:
        for name in [n for n in tensors if ".attention.q_proj." in n]:
            prefix, kind = name.split(".q_proj.")
            parts = [stored.pop(f"{prefix}.{p}_proj.{kind}") for p in "qkv"]
            stored[f"{prefix}.query_key_value.{kind}"] = torch.cat(parts)
    save_file(stored, str(directory / "fake.safetensors"))
    (directory / "fake-config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return tensors


# ------------------------------------------------------------------ meta-device construction
def test_the_model_takes_the_checkpoint_tensors_in_their_dtype(fake_format, tmp_path):
    config = named_model_config("glm-tiny")
    tensors = write_release(tmp_path / "release", config, dtype=torch.bfloat16)
    model, tokenizer, report = official.model_from_official(tmp_path / "release")
    assert isinstance(model, GlmModel) and tokenizer is None and "format fake-safetensors" in report.notes
    state = model.state_dict()
    assert sorted(state) == sorted(tensors)
    for name, value in tensors.items():
        assert state[name].dtype == torch.bfloat16 and torch.equal(state[name], value), name
    assert not any(p.device.type == "meta" for p in model.parameters())
    reference = build_model(config).eval()  # the same weights loaded the ordinary way give the same outputs
    reference.load_state_dict({k: v.float() for k, v in tensors.items()})
    ids = torch.randint(10, config.vocab_size, (2, 9))
    positions, blocks, part_a = torch.arange(9).expand(2, 9), torch.zeros(2, 9, dtype=torch.long), torch.tensor([5, 9])
    with torch.no_grad():
        got = model.float().log_probs(ids, positions, blocks, part_a)
        want = reference.log_probs(ids, positions, blocks, part_a)
    assert torch.equal(got, want)


def test_a_missing_tensor_is_one_line_not_a_meta_tensor(fake_format, tmp_path):
    config = named_model_config("glm-tiny")
    write_release(tmp_path / "release", config, drop="layers.0.fc1.weight")
    with pytest.raises(CtxlmError) as error:
        official.model_from_official(tmp_path / "release")
    assert "layers.0.fc1.weight" in str(error.value) and "\n" not in str(error.value)


def test_views_of_one_fused_tensor_are_saved_as_separate_tensors(tmp_path):
    """A reader that cuts q, k, v from one fused `query_key_value` (as the GLM and UniLMv2 formats hold them)
    hands over views of one storage; the converted directory still saves and loads back."""
    config = named_model_config("glm-tiny")
    torch.manual_seed(0)
    state = build_model(config).state_dict()
    fused = torch.cat([state[f"layers.0.attention.{p}_proj.weight"] for p in "qkv"])
    for part, view in zip("qkv", fused.chunk(3)):
        state[f"layers.0.attention.{part}_proj.weight"] = view
    with official.parameters_on_meta():
        model = build_model(config)
    official.load_on_meta(model, state, source="fused")
    loaded = GlmModel.from_pretrained(save_model_dir(tmp_path / "model", model))
    assert torch.equal(loaded.state_dict()["layers.0.attention.k_proj.weight"], fused.chunk(3)[1])


def test_parameters_on_meta_keeps_buffers_and_reties_tied_weights():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(7, 3)
            self.out = torch.nn.Linear(3, 7, bias=False)
            self.out.weight = self.embed.weight
            self.register_buffer("table", torch.arange(5.0), persistent=False)

    with official.parameters_on_meta():
        model = Tied()
    assert model.embed.weight.is_meta and not model.table.is_meta and model.table.tolist() == [0, 1, 2, 3, 4]
    model.config = type("C", (), {"family": "test"})()
    weight = torch.randn(7, 3)
    official.load_on_meta(model, {"embed.weight": weight}, source="tied")
    assert model.out.weight is model.embed.weight and torch.equal(model.out.weight, weight)


# ------------------------------------------------------------------ shards
def test_shards_follow_transformers_and_every_reader_takes_them(tmp_path):
    torch.manual_seed(0)
    model = build_model(named_model_config("glm-tiny")).eval()
    out = save_model_dir(tmp_path / "model", model, max_shard_size="10MB")
    index = json.loads((out / WEIGHTS_INDEX_NAME).read_text())
    shards = sorted({file for file in index["weight_map"].values()})
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(p.name for p in out.glob("model-*")) == shards and not (out / WEIGHTS_NAME).exists()
    assert index["metadata"]["total_size"] == sum(p.numel() * p.element_size() for p in model.state_dict().values())
    for shard in shards:  # each shard within the limit, but for a tensor above it (the 31 MB embedding) alone
        names = [name for name, file in index["weight_map"].items() if file == shard]
        assert (out / shard).stat().st_size <= 10**7 + 10**5 or len(names) == 1, (shard, names)
    loaded = GlmModel.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    again, _ = load_model_dir(out)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    save_model_dir(out, model)  # one file again: the shards and index go
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", WEIGHTS_NAME]
    save_model_dir(out, model, max_shard_size=10**7)  # and back
    assert not (out / WEIGHTS_NAME).exists() and (out / WEIGHTS_INDEX_NAME).is_file()
    (out / shards[1]).unlink()
    with pytest.raises(CtxlmError, match=rf"{shards[1]}: missing \(manifest.json lists it\)"):
        load_model_dir(out)
    with pytest.raises(CtxlmError, match=rf"{shards[1]}: cannot read weights"):
        load_model_dir(out, verify="off")


def test_max_shard_size_reads_as_transformers_writes_it():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234
    with pytest.raises(CtxlmError, match=r"max_shard_size 'lots': expected a positive size"):
        parse_size("lots")


# ------------------------------------------------------------------ peak memory of a conversion
CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import tests.test_official_convert as t
import ctxlm.official as official

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

with official.parameters_on_meta():  # the modules a conversion imports (~75 MB, whatever the size) first
    t.build_model(t.named_model_config("glm-tiny"))
import ctxlm.official.glm, safetensors.torch  # the reader's modules, imported by the conversion otherwise
Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
before = status("VmRSS")
official.convert_from_official(sys.argv[2], sys.argv[3], max_shard_size="64MB")  # the format is detected
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def write_glm_hub(directory: Path, hidden: int, layers: int, rows: int, positions: int) -> int:
    """A GLM hub release (config.json model_type "glm", `model.safetensors` in bf16 under THUDM's `glm.`-prefixed
    names, q, k, v fused in `query_key_value`), random weights; no vocabulary files (30592 rows: glm-large's
    BERT layout). Returns the weights file's size."""
    from ctxlm.official.glm import layer_pairs

    directory.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(
        named_model_config("glm-tiny"),
        vocab_size=rows,
        d_model=hidden,
        num_layers=layers,
        num_heads=hidden // 64,
        ffn_dim=4 * hidden,
        max_position_embeddings=positions + 1,
    )
    with official.parameters_on_meta():
        shapes = {name: tensor.shape for name, tensor in build_model(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)

    def weight(name):
        return (torch.randn(shapes[name], generator=generator) * 0.02).to(torch.bfloat16)

    state = {f"glm.{theirs}": weight(ours) for theirs, ours in layer_pairs(layers)}
    for i in range(layers):
        for kind in ("weight", "bias"):
            fused = torch.cat([weight(f"layers.{i}.attention.{p}_proj.{kind}") for p in "qkv"])
            state[f"glm.transformer.layers.{i}.attention.query_key_value.{kind}"] = fused
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "glm",
                "num_layers": layers,
                "vocab_size": rows,
                "hidden_size": hidden,
                "num_attention_heads": hidden // 64,
                "max_sequence_length": positions,
            }
        )
    )
    return (directory / "model.safetensors").stat().st_size


def test_converting_holds_the_weights_once(tmp_path):  # 6-8 s here: not marked slow
    """A ~270 MB bf16 GLM hub release (8 × 1024, vocabulary 30592, q, k, v fused as GLM's files hold them),
    converted by the real `glm-hub` reader in a child process whose peak RSS (VmHWM, reset once the imports
    are done) grows by less than 1.5× the checkpoint's size (measured: 1.19×: the file's tensors, read once
    by the reader and kept by the model, and copies of the q, k, v the reader cut from the fused tensors;
    built and loaded the ordinary way, a float32 model beside the file, 2.9×)."""
    size = write_glm_hub(tmp_path / "release", hidden=1024, layers=8, rows=30592, positions=512)
    assert 2 * 10**8 < size < 4 * 10**8
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(tmp_path / "release"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    growth = measured["peak"] - measured["before"]
    print(f"checkpoint {size / 1e6:.0f} MB; peak RSS growth {growth / 1e6:.0f} MB ({growth / size:.2f}×)")
    assert growth < 1.5 * size, (growth, size)
    conversion = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert "format glm-hub" in conversion["notes"]
    index = json.loads((tmp_path / "out" / WEIGHTS_INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) >= 4  # 64MB shards
    with safe_open(str(tmp_path / "out" / index["weight_map"]["layers.7.fc2.weight"]), framework="pt") as shard:
        kept = shard.get_tensor("layers.7.fc2.weight")
    with safe_open(str(tmp_path / "release/model.safetensors"), framework="pt") as release:
        official_weight = release.get_tensor("glm.transformer.layers.7.mlp.dense_4h_to_h.weight")
    assert kept.dtype == torch.bfloat16 and torch.equal(kept, official_weight)


# ------------------------------------------------------------------ the CLI
def test_convert_from_and_to_official_on_the_command_line(fake_format, tmp_path, capsys):
    config = named_model_config("glm-tiny")
    tensors = write_release(tmp_path / "release", config)
    assert main(["convert", "--from-official", str(tmp_path / "release"), "--out", str(tmp_path / "ctxlm")]) == 0
    out = capsys.readouterr().out
    assert "→ glm:" in out and "format fake-safetensors; a test format" in out
    conversion = json.loads((tmp_path / "ctxlm/conversion.json").read_text())
    assert conversion["family"] == "glm" and len(conversion["mapped"]) == len(tensors)
    model = GlmModel.from_pretrained(tmp_path / "ctxlm")
    assert torch.equal(model.state_dict()["layers.1.fc2.weight"], tensors["layers.1.fc2.weight"])
    assert main(["convert", "--to-official", str(tmp_path / "ctxlm"), "--out", str(tmp_path / "back")]) == 0
    assert "wrote" in capsys.readouterr().out
    with safe_open(str(tmp_path / "back/fake.safetensors"), framework="pt") as back:
        assert torch.equal(back.get_tensor("layers.1.fc2.weight"), tensors["layers.1.fc2.weight"])


def test_a_directory_in_no_known_format_is_one_line_naming_the_formats_tried(tmp_path, capsys, monkeypatch):
    """With the real registry: every format's `detect` says no for an unrelated directory."""
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/notes.txt").write_text("nothing here")
    monkeypatch.setattr(official, "FORMATS", _importable_formats())
    code = main(["convert", "--from-official", str(tmp_path / "junk"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == f"error: {tmp_path / 'junk'}: in no known official format (tried {', '.join(official.FORMATS)})"
    assert not (tmp_path / "out").exists()
    code = main(["convert", "--from-official", str(tmp_path / "junk"), "--format", "nonesuch", "--out", "o"])
    assert code == 2 and "unknown official format 'nonesuch' (known: " in capsys.readouterr().err


def _importable_formats() -> dict:
    """The registry, each format whose family module is not in this checkout yet (the family readers
    are written beside this machinery and merged with it) replaced by one that detects nothing."""
    import importlib.util

    formats = {}
    for name, spec in official.FORMATS.items():
        module = spec.detect.split(":")[0] if isinstance(spec.detect, str) else None
        if module and importlib.util.find_spec(module) is None:
            spec = dataclasses.replace(spec, detect=lambda path: False)
        formats[name] = spec
    return formats


def test_convert_flags_are_exclusive_and_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--from-official", "x", "--to-hf", str(tmp_path), "--out", "o"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["convert", "--out", "o"]) == 2
    assert "give exactly one of --from-hf and --to-hf" in capsys.readouterr().err
    assert main(["convert", "--from-official", str(tmp_path), "--max-shard-size", "big", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: max_shard_size 'big': expected a positive size such as 5GB, 500MB or 2GiB"
    )
    assert main(["convert", "--to-official", str(tmp_path / "absent"), "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --to-official {tmp_path / 'absent'}: no such file or directory"
