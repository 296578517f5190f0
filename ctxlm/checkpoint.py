"""Model directories and training checkpoints, written atomically.

A model directory holds `config.json` (the model config, with its `family`), `model.safetensors`
and `tokenizer.json`; `load_model_dir` rebuilds the model from it. Weights above `max_shard_size` (default
5GB, as transformers) are written as shards in transformers' convention instead of one `model.safetensors`:
`model-00001-of-00003.safetensors`, ... and `model.safetensors.index.json` (its `weight_map`: name → shard);
every reader takes either form (the index wins where both are present). A training run's output
directory is a model directory too (the latest weights) and keeps its full training checkpoints
under `checkpoints/step-XXXXXXXX/`: a model directory plus `trainer_state.pt` (optimizer,
scheduler, RNG states, data position, step, metrics so far).

Every directory is written under a temporary name (`.tmp-*`, normal permissions) and renamed into
place once its files are fsync'ed, so a crash (or a kill) never leaves a half-written checkpoint
that looks complete, and a finished checkpoint is deleted only after a newer one is complete. A
full disk or a permission error while writing is a one-line `CtxlmError`; the previous copy stays.
Leftover temporaries of a killed run are removed when the next run starts
(`remove_stale_temporaries`).

Under best-checkpoint selection each training checkpoint also holds the best weights so far
(`best/`), so resuming from any checkpoint restores the `best/` the run had at that step.

Every checkpoint and model directory holds `manifest.json` (each file's size and sha256), written
last: it is the commit point readers verify against (`verify_model_dir`, `load_model_dir`), and
`resume_checkpoint` passes over a damaged checkpoint or restores a damaged file from an intact copy
with the same sha256. An in-place write reaches every hard link of a file, so no file a run needs
is only a link of another: the checkpoints' `best/` is a copy (`clone_file`: a reflink where the
file system has them) of the run's `best/`, shared by hard links among checkpoints holding the same
best (a checkpoint written at the best step links its weights to it), and the run's final model is
a copy of `best/` or of the last checkpoint.

One folder holds one run: `RunFolderLock` takes an OS lock on `.lock` in it (holding the PID) for
the run's life, so a second run or a resume into the folder is refused while the first lives.

Weights files carry `format_version` in their metadata, trainer states a `format_version` key;
a newer version than this code's `FORMAT_VERSION` is refused. Trainer states hold only tensors
and plain Python values and load with `weights_only=True`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import _remove_duplicate_names, save_file, save_model

from .config_loading import model_config_from_dict
from .errors import CtxlmError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
TRAINER_STATE_NAME = "trainer_state.pt"
HEAD_NAME = "head.json"  # a task head on the backbone (classification, extractive QA, cloze)

FORMAT_VERSION = 1  # of model directories and checkpoints; bump on an incompatible change
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"  # the best weights by the validation metric (fine-tuning)
SHARDED_DIR = "dcp"  # a checkpoint's sharded model and optimizer (FSDP; torch.distributed.checkpoint)
MODEL_FILES = (TOKENIZER_NAME, HEAD_NAME, CONFIG_NAME, WEIGHTS_NAME)  # a model directory's files (unsharded)
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"  # sharded weights: transformers' index (`weight_map`)
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' default; 1GB = 10**9 bytes, 1GiB = 2**30
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
LOCK_NAME = ".lock"  # a running run's lock on its output folder (`RunFolderLock`)
MANIFEST_NAME = "manifest.json"  # size and sha256 of every file of a model directory or checkpoint, written last
VERIFY_LEVELS = ("full", "size", "off")  # what readers check against a manifest: sha256 and size, size, nothing
_verify_default = contextvars.ContextVar("ctxlm_verify", default="full")


def build_model(config, head: dict | None = None):
    """The model for a config's family (`ctxlm.families`), with a task head when `head` (a
    `head.json`: its "type" and constructor arguments) is given: `cls(config, **arguments)`."""
    from .families import get_family, head_class

    if head is not None:
        arguments = dict(head)
        return head_class(arguments.pop("type", None))(config, **arguments)
    return get_family(config.family).build(config)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        if file.is_dir():
            _fsync_tree(file)
        elif file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def _temporary_directory(parent: Path, name: str) -> Path:
    """A new empty `.tmp-<name>-<pid>-<random>` directory in `parent`, with the umask's permissions."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _write_error(target: Path, error: OSError) -> CtxlmError:
    reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
    return CtxlmError(f"{target}: cannot write ({reason}); the previous copy is kept")


def remove_stale_temporaries(out_dir: str | Path) -> None:
    """Delete the `.tmp-*` and `.old-*` directories (and a manifest's `.tmp-*` file) a killed run left
    in `out_dir` and its `checkpoints/` (call it while no other process writes there)."""
    for parent in (Path(out_dir), Path(out_dir) / CHECKPOINTS_DIR):
        if parent.is_dir():
            for path in parent.iterdir():
                if path.name.startswith((".tmp-", ".old-")):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)


def link_files(source: Path, target: Path, names: tuple[str, ...] | None = None) -> None:
    """Hard-link (or, where the file system cannot, copy) the files of `source` (those of `names`
    only, when given) into `target`."""
    target.mkdir(exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and (names is None or file.name in names):
            try:
                os.link(file, target / file.name)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise
                shutil.copy2(file, target / file.name)


# --------------------------------------------------------------------------- manifests and verification
def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _tree_files(directory: Path) -> list[str]:
    """The files under `directory` (recursively, as relative POSIX paths), but its own manifest."""
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path != directory / MANIFEST_NAME
    )


def write_manifest(directory: Path, names: list[str] | tuple[str, ...] | None = None) -> None:
    """`directory/manifest.json`: size and sha256 of each of `names` (default: every file under it),
    written under a temporary name, fsync'ed and renamed into place: the directory's commit point."""
    directory = Path(directory)
    files = {
        name: {"size": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
        for name in (_tree_files(directory) if names is None else names)
    }
    _write_json_atomically(directory / MANIFEST_NAME, {"format_version": FORMAT_VERSION, "files": files})


def mark_writing(directory: Path) -> None:
    """Replace `directory`'s manifest by one saying its files are being rewritten: readers then take
    it for incomplete until `write_manifest` (a killed writer's directory stays so)."""
    _write_json_atomically(Path(directory) / MANIFEST_NAME, {"format_version": FORMAT_VERSION, "writing": True})


def _write_json_atomically(path: Path, values: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(values, indent=1, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def read_manifest(directory: str | Path) -> dict | None:
    """The manifest of `directory` (None: none, a directory written before manifests); an unreadable
    one is a one-line error."""
    path = Path(directory) / MANIFEST_NAME
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise CtxlmError(f"{path}: damaged manifest ({type(error).__name__}: {error})") from None
    if not isinstance(values, dict) or not (values.get("writing") or isinstance(values.get("files"), dict)):
        raise CtxlmError(f"{path}: damaged manifest (no 'files')")
    return values


def is_being_written(directory: str | Path) -> bool:
    """True when `directory`'s model files are being rewritten (or their writer was killed)."""
    try:
        return bool((read_manifest(directory) or {}).get("writing"))
    except CtxlmError:
        return False


def resolve_verify(verify: bool | str | None) -> str:
    """A `verify` keyword as one of VERIFY_LEVELS: True "full", False "off", None the default (`verification`)."""
    level = _verify_default.get() if verify is None else {True: "full", False: "off"}.get(verify, verify)
    if level not in VERIFY_LEVELS:
        raise CtxlmError(f"verify must be one of {', '.join(VERIFY_LEVELS)} (or True/False), not {verify!r}")
    return level


@contextmanager
def verification(level: bool | str):
    """Within the block, readers that are not told otherwise verify at `level` (the CLI's --verify).

    Args:
        level: check model directories and checkpoints against their manifest.json before use: sha256 and
            size (full, the default), sizes only (size: fast for huge files), or not at all (off)
    """
    token = _verify_default.set(resolve_verify(level))
    try:
        yield
    finally:
        _verify_default.reset(token)


def manifest_problems(directory: str | Path, verify: bool | str | None = None) -> list[str]:
    """What is wrong with `directory`'s files by its manifest, one line each naming the file (empty:
    intact, no manifest, or `verify` "off"). "size" compares sizes only; "full" also the sha256."""
    directory, level = Path(directory), resolve_verify(verify)
    manifest = read_manifest(directory) if level != "off" else None
    if manifest is None:
        return []
    if manifest.get("writing"):
        return [f"{directory / MANIFEST_NAME}: its files are being written (or their writer was killed)"]
    return [line for _, _, line in damaged_files(directory, level, manifest)]


def damaged_files(directory: Path, level: str, manifest: dict) -> list[tuple[str, dict, str]]:
    """(name, its manifest entry, the line saying what is wrong) for each file of `manifest` that
    `directory` does not hold intact."""
    key = (str(directory), level, _stat_key(directory, manifest["files"]))
    if key in _verified:
        return []
    damaged = []
    for name, entry in manifest["files"].items():
        problem = _file_problem(directory / name, entry, level)
        if problem:
            damaged.append((name, entry, problem))
    if not damaged:
        _verified.add(key)
    return damaged


_verified: set = set()  # (directory, level, files' stats) found intact in this process: not hashed again


def _stat_key(directory: Path, names) -> tuple:
    stats = []
    for name in [MANIFEST_NAME, *names]:
        try:
            stat = os.stat(directory / name)
            stats.append((stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)


def _file_problem(path: Path, entry: dict, level: str) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path}: missing ({MANIFEST_NAME} lists it)"
    if size != entry.get("size"):
        return f"{path}: damaged ({size} bytes, {MANIFEST_NAME} records {entry.get('size')})"
    if level == "full" and file_sha256(path) != entry.get("sha256"):
        return f"{path}: damaged (its sha256 differs from the one {MANIFEST_NAME} records)"
    return None


def verify_model_dir(directory: str | Path, verify: bool | str | None = None) -> None:
    """Refuse, with one line naming the first damaged file, a directory whose files differ from
    its manifest (a directory without one, written before manifests, passes)."""
    problems = manifest_problems(directory, verify)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CtxlmError(
            f"{problems[0]}{more}; restore it from a copy, or pass --verify off (verify='off') to load it anyway"
        )


def clone_file(source: Path, target: Path) -> None:
    """`target` as an independent copy of `source`: a reflink (FICLONE: shared blocks, copied on
    write) where the file system has it, else a real copy. Never a hard link."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            return
        except OSError:
            pass
        shutil.copyfileobj(src, dst, 1 << 24)
    shutil.copystat(source, target)


_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def clone_files(source: Path, target: Path, names: tuple[str, ...] | None = None) -> None:
    """`clone_file` each file of `source` (those of `names` only, when given) into `target`."""
    target.mkdir(exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and (names is None or file.name in names):
            clone_file(file, target / file.name)


def parse_size(value: int | str, what: str = "max_shard_size") -> int:
    """Bytes of a size written as transformers writes it: an int, or "5GB", "500MB", "2GiB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B|)\s*", str(value).upper())
    if not match or float(match.group(1)) <= 0:
        raise CtxlmError(f"{what} {value!r}: expected a positive size such as 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def shard_name(index: int, count: int) -> str:
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def weight_file_names(directory: str | Path) -> list[str]:
    """The weights files of a model directory: its index and the shards it names, else `model.safetensors`,
    else none."""
    directory = Path(directory)
    if (directory / WEIGHTS_INDEX_NAME).is_file():
        return [*sorted(set(read_weights_index(directory).values())), WEIGHTS_INDEX_NAME]
    return [WEIGHTS_NAME] if (directory / WEIGHTS_NAME).is_file() else []


def has_weights(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / WEIGHTS_INDEX_NAME).is_file() or (directory / WEIGHTS_NAME).is_file()


def model_file_names(directory: str | Path) -> tuple[str, ...]:
    """The model files `directory` holds, weights last (sharded: the shards, then the index)."""
    others = tuple(name for name in MODEL_FILES if name != WEIGHTS_NAME and (Path(directory) / name).exists())
    return others + tuple(weight_file_names(directory))


def read_weights_index(directory: str | Path) -> dict[str, str]:
    """The `weight_map` (name → shard file) of `directory/model.safetensors.index.json`."""
    path = Path(directory) / WEIGHTS_INDEX_NAME
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CtxlmError(f"{path}: not a weights index ({type(error).__name__}: {error})") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(v, str) and SHARD_NAME.fullmatch(v) for v in weight_map.values()
    ):
        raise CtxlmError(f"{path}: weight_map must map names to model-XXXXX-of-YYYYY.safetensors files")
    return weight_map


def _make_readable(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors writes it 0600


def write_weights(directory: Path, model, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> list[str]:
    """`model`'s weights (tied ones once, in the checkpoint's dtype) as `model.safetensors`, or, above
    `max_shard_size`, as shards and their index in transformers' convention (a tensor larger than the
    limit gets a shard of its own). Returns the file names written."""
    metadata = {"format": "pt", "family": model.config.family, "format_version": str(FORMAT_VERSION)}
    limit = parse_size(max_shard_size)
    state = model.state_dict()
    for kept, removed in _remove_duplicate_names(state).items():  # the names save_model keeps
        for name in removed:
            metadata.setdefault(name, kept)
            del state[name]
    sizes = {name: tensor.numel() * tensor.element_size() for name, tensor in state.items()}
    if sum(sizes.values()) <= limit:
        save_model(model, str(directory / WEIGHTS_NAME), metadata=metadata)
        _make_readable(directory / WEIGHTS_NAME)
        return [WEIGHTS_NAME]
    groups: list[list[str]] = [[]]
    filled = 0  # bytes in the last group
    for name in state:
        if groups[-1] and filled + sizes[name] > limit:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += sizes[name]
    names, weight_map = [], {}
    for number, group in enumerate(groups, start=1):
        file = shard_name(number, len(groups))
        save_file({name: state[name].contiguous() for name in group}, str(directory / file), metadata=metadata)
        _make_readable(directory / file)
        names.append(file)
        weight_map.update(dict.fromkeys(group, file))
    index = {"metadata": {"total_size": sum(sizes.values()), **metadata}, "weight_map": weight_map}
    (directory / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*names, WEIGHTS_INDEX_NAME]


def write_model_files(directory: Path, model, tokenizer, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> None:
    values = dataclasses.asdict(model.config)
    (directory / CONFIG_NAME).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_weights(directory, model, max_shard_size)
    if hasattr(model, "head_config"):
        (directory / HEAD_NAME).write_text(json.dumps(model.head_config(), indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(directory)


def atomic_directory(final: Path, write) -> Path:
    """Run `write(tmp_dir)`, write its manifest (every file's size and sha256) and rename tmp_dir to
    `final` (replacing an older `final`)."""
    final = Path(final)
    tmp = None
    try:
        tmp = _temporary_directory(final.parent, final.name)
        write(tmp)
        write_manifest(tmp)
        _fsync_tree(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as error:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            raise _write_error(final, error) from None
        raise
    return final


def save_model_dir(
    directory: str | Path, model, tokenizer=None, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
) -> Path:
    """Write a loadable model directory (weights above `max_shard_size` sharded). Files are replaced one
    by one with `os.replace`, so the directory may also hold other things (a training run's metrics and
    checkpoints)."""
    return _replace_model_files(Path(directory), lambda tmp: write_model_files(tmp, model, tokenizer, max_shard_size))


def copy_model_dir(source: str | Path, directory: str | Path) -> Path:
    """Make `directory` hold the model files of the model directory `source` as independent copies
    (reflinks where the file system has them, `clone_file`: an in-place write to one never reaches
    the other), replaced as `save_model_dir` does; each copy must match `source`'s manifest."""
    source = Path(source)
    manifest = read_manifest(source)
    expected = {} if manifest is None or manifest.get("writing") else manifest["files"]
    return _replace_model_files(
        Path(directory),
        lambda tmp: clone_files(source, tmp, model_file_names(source)),
        expected=expected,
        source=source,
    )


def _replace_model_files(directory: Path, write, expected: dict | None = None, source: Path | None = None) -> Path:
    """`write(tmp)` the model files into a temporary directory, then move them into `directory`, the
    weights last (sharded: the index after its shards); weights files of the other form (or older
    shards) that were there are removed. The manifest is the commit point: it says "writing" while
    files are replaced and lists the new files (their sizes and sha256, each checked against
    `expected` where that names it: the manifest of `source` they were copied from) once all are in."""
    tmp = None
    try:
        tmp = _temporary_directory(directory, "model")
        write(tmp)
        _fsync_tree(tmp)
        new = model_file_names(tmp)
        files = {name: {"size": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)} for name in new}
        for name, entry in files.items():
            if name in (expected or {}) and expected[name] != entry:
                raise CtxlmError(f"{source / name}: damaged (it differs from its {MANIFEST_NAME}); not copied")
        mark_writing(directory)
        stale = [name for name in weight_file_names(directory) if name not in new]
        if WEIGHTS_INDEX_NAME in stale:  # first: an index must never name shards that are gone
            (directory / WEIGHTS_INDEX_NAME).unlink()
        for name in new:
            os.replace(tmp / name, directory / name)
        if HEAD_NAME not in new:
            (directory / HEAD_NAME).unlink(missing_ok=True)  # a plain model replaces a head model
        for name in stale:
            (directory / name).unlink(missing_ok=True)
        _fsync_dir(directory)
        _write_json_atomically(directory / MANIFEST_NAME, {"format_version": FORMAT_VERSION, "files": files})
    except OSError as error:
        raise _write_error(directory, error) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_model_config_values(directory: str | Path) -> dict:
    """The raw `config.json` of a model directory."""
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CtxlmError(f"{directory}: not a ctxlm model directory (no {CONFIG_NAME})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CtxlmError(f"{path}: invalid JSON ({error})") from None


def read_model_config(directory: str | Path):
    return model_config_from_dict(read_model_config_values(directory), source=str(Path(directory) / CONFIG_NAME))


def read_head(directory: str | Path) -> dict | None:
    """The task head of a model directory (`head.json`), or None for a plain model."""
    path = Path(directory) / HEAD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CtxlmError(f"{path}: invalid JSON ({error})") from None


def refuse_transformers_dir(directory: Path) -> None:
    """A transformers checkpoint (config.json naming `architectures` / `model_type` and no ctxlm
    `family`) is refused with the command that converts it."""
    try:
        values = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no readable config.json: `read_model_config` names the problem
    if isinstance(values, dict) and "family" not in values and ("architectures" in values or "model_type" in values):
        kind = values.get("model_type") or ", ".join(values.get("architectures") or [])
        raise CtxlmError(
            f"{directory}: a transformers checkpoint ({kind}), not a ctxlm model directory; convert "
            f"it first: ctxlm convert --from-hf {directory} --out OUT_DIR"
        )


def resolve_model_dir(directory: str | Path, verify: bool | str | None = None) -> Path:
    """A model directory whose files match its manifest (`verify_model_dir`; `verify`: "full",
    "size" or "off", default `verification`'s), or a training output whose final model is not
    written yet (or is being rewritten): its newest intact checkpoint, said in one warning line
    (as is each damaged checkpoint passed over)."""
    directory = Path(directory)
    if not directory.exists():
        raise CtxlmError(f"{directory}: no such model directory")
    refuse_transformers_dir(directory)
    writing = is_being_written(directory)
    if has_weights(directory) and not (writing and list_checkpoints(directory)):
        verify_model_dir(directory, verify)
        return directory
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        raise CtxlmError(f"{directory}: no {WEIGHTS_NAME} and no checkpoints/ (not a ctxlm model directory)")
    checkpoint, damage = _newest_intact(checkpoints, verify)
    for line in damage:
        _warn_once(f"{line}; passed over")
    if checkpoint is None:
        raise CtxlmError(f"{damage[0]}; no intact checkpoint in {directory}")
    why = "its final model is being written" if writing else "it holds no final model yet"
    _warn_once(f"{directory}: {why}; using its newest intact checkpoint, {checkpoint.name}")
    return checkpoint


_said: set[str] = set()


def _warn_once(line: str) -> None:
    """A warning line, once per process (a reader resolves its directory more than once)."""
    if line not in _said:
        _said.add(line)
        warnings.warn(line, stacklevel=3)


def _newest_intact(checkpoints: list[Path], verify: bool | str | None) -> tuple[Path | None, list[str]]:
    """(the newest of `checkpoints` whose files match its manifest, the first problem of each newer one)."""
    damage = []
    for checkpoint in reversed(checkpoints):
        try:
            problems = manifest_problems(checkpoint, verify)
        except CtxlmError as error:  # its manifest.json is damaged
            problems = [str(error)]
        if not problems:
            return checkpoint, damage
        if checkpoint.is_dir():  # else its run rotated it away meanwhile: no damage
            damage.append(problems[0])
    return None, damage


READ_ATTEMPTS = 30  # a reader that raced a writer (a checkpoint rotated away, a final model rewritten) reads again


def load_model_dir(
    directory: str | Path,
    *,
    with_tokenizer: bool = True,
    weights: bool = True,
    device: str | torch.device = "cpu",
    verify: bool | str | None = None,
):
    """(model, tokenizer or None) from a model directory (or a run's newest checkpoint), verified
    against its manifest first (`resolve_model_dir`; `verify="off"` skips it, "size" checks sizes
    only). With `weights=False` the model keeps its fresh initialisation (a resumed run loads the
    weights together with the rest of its training state). A directory that changed while it was
    read (a run wrote, rotated or replaced it meanwhile) is read again: a reader never gets a model
    mixed from two writes."""
    last = READ_ATTEMPTS - 1
    for attempt in range(READ_ATTEMPTS):
        checkpoints = list_checkpoints(directory)
        try:
            resolved = resolve_model_dir(directory, verify)
        except CtxlmError:
            if attempt == last or list_checkpoints(directory) == checkpoints:
                raise
            continue
        committed = _stat_key(resolved, [])  # its manifest: replaced (or gone) when a writer touches it
        try:
            loaded = _load_resolved(resolved, with_tokenizer, weights, device)
        except (CtxlmError, OSError):
            if attempt == last or _stat_key(resolved, []) == committed:
                raise
            continue
        if _stat_key(resolved, []) == committed:
            return loaded
    raise CtxlmError(f"{directory}: changed at each of {READ_ATTEMPTS} reads; try again when its run is not writing")


def _load_resolved(directory: Path, with_tokenizer: bool, weights: bool, device):
    from .tokenization import TextTokenizer

    config = read_model_config(directory)
    model = build_model(config, read_head(directory))
    if weights:
        load_weights_file(model, directory, device)
    tokenizer = None
    if with_tokenizer and (directory / TOKENIZER_NAME).is_file():
        tokenizer = TextTokenizer.load(directory / TOKENIZER_NAME)
    return model, tokenizer


def load_weights_file(model, directory: Path, device: str | torch.device = "cpu") -> None:
    """Load `directory/model.safetensors` (or its shards) into `model` (moved to `device`); a file of a
    newer format, another family, or another vocabulary or architecture (by `directory/config.json`) is
    refused naming the difference."""
    path, state, metadata = read_weights(directory, device)
    check_format_version(int(metadata.get("format_version", 0)), path)
    family = metadata.get("family")
    if family is not None and family != model.config.family:
        raise CtxlmError(f"{path}: a {family} checkpoint cannot load into a {model.config.family} model")
    if (Path(directory) / CONFIG_NAME).is_file():
        differences = config_differences(
            read_model_config_values(directory), dataclasses.asdict(model.config), ignore=NOT_ARCHITECTURE
        )
        if differences:
            raise CtxlmError(f"{path}: the checkpoint's {differences[0]}")
    load_weights(model, state, source=str(path))
    model.to(device)


def read_weights(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Path, dict, dict]:
    """(the file named in errors, name → tensor, the metadata) of a model directory's weights,
    `model.safetensors` or the shards its index names."""
    directory = Path(directory)
    if not (directory / WEIGHTS_INDEX_NAME).is_file():
        return (directory / WEIGHTS_NAME, *_read_safetensors(directory / WEIGHTS_NAME, device))
    index = directory / WEIGHTS_INDEX_NAME
    weight_map, state, metadata = read_weights_index(directory), {}, {}
    for file in sorted(set(weight_map.values())):
        tensors, metadata = _read_safetensors(directory / file, device)
        state.update(tensors)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CtxlmError(f"{index}: '{missing[0]}' is not in {weight_map[missing[0]]}")
    return index, state, metadata


def _read_safetensors(path: Path, device) -> tuple[dict, dict]:
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise CtxlmError(f"{path}: cannot read weights ({error})") from None


NOT_ARCHITECTURE = ("dropout", "attention_dropout", "activation_dropout", "init_std")  # weights load across these


def config_differences(saved: dict, current: dict, ignore=()) -> list[str]:
    """'<key> is <saved>, the config says <current>' for each field both configs have and
    disagree on, but the `ignore` ones; `vocab_size` first."""
    keys = sorted(set(saved) & set(current) - set(ignore), key=lambda k: (k != "vocab_size", k))
    return [f"{key} is {saved[key]!r}, the config says {current[key]!r}" for key in keys if saved[key] != current[key]]


def check_format_version(version: int, source: Path) -> None:
    if version > FORMAT_VERSION:
        raise CtxlmError(
            f"{source}: written by a newer ctxlm (format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade ctxlm to load it"
        )


def load_weights(model, state: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """Load a state dict saved by `save_model` (tied weights appear once); `assign`: the model takes the
    tensors themselves (a model built on the meta device)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected or any(not _is_tied(model, k) for k in missing):
        raise CtxlmError(
            f"{source}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise CtxlmError(
                f"{source}: '{key}' has shape {tuple(value.shape)}, config expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False, assign=assign)


def _is_tied(model, key: str) -> bool:
    """True if parameter `key` shares storage with another parameter that is saved."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    return any(other != key and p is params[key] for other, p in params.items())


# --------------------------------------------------------------------------- training checkpoints
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("step-")
        and ((p / TRAINER_STATE_NAME).is_file() or (p / MANIFEST_NAME).is_file())
    )


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resume_checkpoint(
    out_dir: str | Path, resume: bool | str, *, repair: bool = False, verify: bool | str | None = None
) -> Path | None:
    """The checkpoint a run into `out_dir` resumes from (None: a new run). `resume=True`: the
    newest intact one, of which one must exist; "auto": the newest intact one if there is any
    checkpoint; False: none. Intact: its files match its manifest, or each damaged one has a copy
    with the same sha256 elsewhere in the run (`best/`, another checkpoint, the final model) from
    which `repair` (the run holding the folder's lock) restores it; with `repair`, each restored
    file and each checkpoint passed over is one warning line naming the file."""
    if not (resume is True or resume is False or resume == "auto"):
        raise CtxlmError(f"resume must be True, False or 'auto', not {resume!r}")
    if not resume:
        return None
    checkpoints = list_checkpoints(out_dir)
    if not checkpoints:
        if resume is True:
            raise CtxlmError(
                f"{out_dir}: --resume given but there is no checkpoint under {out_dir}/checkpoints "
                f"(--resume auto starts a new run then; in Python: resume='auto')"
            )
        return None
    level, damage = resolve_verify(verify), []
    for checkpoint in reversed(checkpoints):
        try:
            manifest = read_manifest(checkpoint) if level != "off" else None
        except CtxlmError as error:
            manifest = {"files": {}}
            damaged = [(MANIFEST_NAME, {}, str(error))]
        else:
            damaged = damaged_files(checkpoint, level, manifest) if manifest else []
        sources = [
            _intact_copy(Path(out_dir), checkpoint / name, entry) if entry else None for name, entry, _ in damaged
        ]
        if all(source is not None for source in sources):
            for (name, _, line), source in zip(damaged, sources):
                if repair:
                    _restore_file(source, checkpoint / name)
                    warnings.warn(f"{line}; restored from {source}", stacklevel=2)
            return checkpoint
        line = next(line for (_, _, line), source in zip(damaged, sources) if source is None)
        damage.append(line)
        if repair:
            warnings.warn(f"{line}; resuming from an older checkpoint", stacklevel=2)
    raise CtxlmError(
        f"{damage[0]}; no intact checkpoint under {out_dir}/checkpoints to resume from (start over with --overwrite)"
    )


def _intact_copy(out_dir: Path, path: Path, entry: dict) -> Path | None:
    """A file of the run in `out_dir` (by the manifests of its final model, `best/` and checkpoints)
    recorded with `entry`'s size and sha256, not a hard link of `path`, that still has them."""
    try:
        damaged = os.stat(path)
    except FileNotFoundError:
        damaged = None
    for directory in (out_dir, out_dir / BEST_DIR, *reversed(list_checkpoints(out_dir))):
        try:
            files = (read_manifest(directory) or {}).get("files") or {}
        except CtxlmError:
            continue
        for name, other in files.items():
            candidate = directory / name
            if other != entry or candidate == path or not candidate.is_file():
                continue
            stat = os.stat(candidate)
            if damaged is not None and (stat.st_dev, stat.st_ino) == (damaged.st_dev, damaged.st_ino):
                continue
            if stat.st_size == entry["size"] and file_sha256(candidate) == entry["sha256"]:
                return candidate
    return None


def _restore_file(source: Path, path: Path) -> None:
    """Replace `path` by an independent copy of `source` (a new file: hard links of the damaged one keep it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        clone_file(source, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_training_checkpoint(
    out_dir: str | Path,
    step: int,
    model,
    tokenizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
    best: Path | None = None,
    extra: dict[str, Path] | None = None,
    model_files: Path | None = None,
) -> Path:
    """Write `checkpoints/step-XXXXXXXX/` atomically (with the best weights so far from `best`,
    when given, and the finished directories of `extra` moved in: name → path, e.g. the sharded
    state), then drop all but the newest `keep` (0: keep all). `model_files`: a model directory
    that already holds `model`'s files (`best/` at the best step), linked (from the checkpoint's own
    `best/`) instead of written again.

    The checkpoint's `best/` is never a hard link of `best`: it is the previous checkpoint's
    `best/` (hard links) while the best weights are the same, else an independent copy of `best`
    (`clone_file`). The run's best weights are thus in two files that no in-place write reaches
    together, and either restores the other (`resume_checkpoint`)."""
    previous = latest_checkpoint(out_dir)

    def write(tmp: Path) -> None:
        if best is not None:
            if previous is not None and _same_intact_files(previous / BEST_DIR, best):
                link_files(previous / BEST_DIR, tmp / BEST_DIR)
            else:
                clone_files(best, tmp / BEST_DIR)
        if model_files is not None:
            source = tmp / BEST_DIR if best is not None and Path(model_files) == Path(best) else model_files
            link_files(source, tmp, model_file_names(source))
        else:
            write_model_files(tmp, model, tokenizer)
        torch.save({**trainer_state, "format_version": FORMAT_VERSION}, tmp / TRAINER_STATE_NAME)
        for name, path in (extra or {}).items():
            os.rename(path, tmp / name)

    path = atomic_directory(Path(out_dir) / CHECKPOINTS_DIR / checkpoint_name(step), write)
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _same_files(a: Path, b: Path) -> bool:
    """True when the manifests of `a` and `b` record the same files (sizes and sha256)."""
    try:
        first, second = read_manifest(a), read_manifest(b)
    except CtxlmError:
        return False
    return bool(first and second and first.get("files") and first.get("files") == second.get("files"))


def _same_intact_files(saved: Path, best: Path) -> bool:
    """True when `saved` (a checkpoint's `best/`) holds intact what `best` holds: it may be linked
    (hashed once per directory: `manifest_problems` remembers an unchanged directory it found intact)."""
    return _same_files(saved, best) and not manifest_problems(saved, "full")


def restore_best(checkpoint: Path, out_dir: Path) -> None:
    """Make `out_dir/best/` what the run had when it wrote `checkpoint` (none if it had none), as
    an independent copy of the checkpoint's `best/` (kept when it already holds the same, intact)."""
    saved = checkpoint / BEST_DIR
    if has_weights(saved):
        if _same_intact_files(out_dir / BEST_DIR, saved):
            return
        atomic_directory(
            out_dir / BEST_DIR,
            lambda tmp: clone_files(saved, tmp, tuple(name for name in os.listdir(saved) if name != MANIFEST_NAME)),
        )
    elif (out_dir / BEST_DIR).exists():
        shutil.rmtree(out_dir / BEST_DIR)


RUN_FILES = (
    CHECKPOINTS_DIR,
    BEST_DIR,
    "tensorboard",
    "metrics.jsonl",
    "run.json",
    WEIGHTS_NAME,
    CONFIG_NAME,
    HEAD_NAME,
    WEIGHTS_INDEX_NAME,
    MANIFEST_NAME,
)


def clear_run(out_dir: str | Path) -> None:
    """Delete a training run's checkpoints, best weights, metrics and model files from `out_dir`
    (other files stay)."""
    shards = [path.name for path in Path(out_dir).glob("model-*-of-*.safetensors") if SHARD_NAME.fullmatch(path.name)]
    for name in (*RUN_FILES, *shards):
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CtxlmError(f"{path}: cannot read the training state ({first_line})") from None
    check_format_version(int(state.get("format_version", 0)), path)
    return state


class RunFolderLock:
    """An exclusive OS lock (`flock`) on `out_dir/.lock` for the life of a run; the file holds the
    holder's PID. Taking it while another process holds it is refused with one line naming that
    PID. The OS drops the lock when its holder ends, however it ends (SIGKILL included: the file
    then stays, and the next run takes it). `release` removes the file while still holding the
    lock, so a run that opened it meanwhile finds it gone and locks a new one."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.fd = None
        while self.fd is None:
            fd = self._open_locked()
            if self._still_linked(fd):
                self.fd = fd
            else:  # its holder removed it between our open and our lock
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def _open_locked(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise CtxlmError(f"{self.path}: cannot create the run folder's lock ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CtxlmError(
                    f"{self.path.parent} is in use by another run (PID {holder}); wait for it to end, "
                    f"stop it, or choose another --out"
                ) from None
            raise CtxlmError(f"{self.path}: cannot lock the run folder ({error.strerror})") from None
        return fd

    def _still_linked(self, fd: int) -> bool:
        try:
            linked, opened = os.stat(self.path), os.fstat(fd)
            return (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino)
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None
