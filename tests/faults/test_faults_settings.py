"""Bad settings fail at load (one line naming the file, section and key; exit 2) before any stage runs, and the
model version depends on the weights and the model config, not on how the checkpoint file was laid out."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import pytest
import yaml

from jobs import pipeline
from jobs.cli import main
from jobs.pipeline import RANGES, SECTIONS, load_config

SMOKE = Path(pipeline.__file__).parent / "configs" / "smoke.yaml"


def _smoke_with(tmp_path: Path, section: str, key: str, value: Any) -> Path:
    """The smoke config with one setting replaced ("mining.covisit": a nested section)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    node = cfg
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _sail_run(config: Path | str, run_dir: Path, capsys) -> tuple[int, list[str]]:
    rc = main(["run", "--config", str(config), "--run-dir", str(run_dir)])
    return rc, capsys.readouterr().err.strip().splitlines()


# ------------------------------------------------------------------------------------------------ sail run


@pytest.mark.parametrize(
    "section, key, value, says",
    [
        ("embedding", "holdout_frac", 2, "holdout_frac must be in (0, 1), got 2.0"),
        ("mining", "top_k", -5, "top_k must be >= 1, got -5"),
        ("validation", "max_rejected_share", "lots", "max_rejected_share must be a finite number, got 'lots'"),
        ("embedding", "steps", "abcd", "steps must be a list of 4 integers, got 'abcd'"),
        ("embedding", "steps", [6, 4, 4, 6.5], "steps must be a list of 4 integers, got [6, 4, 4, 6.5]"),
        ("embedding", "lr", True, "lr must be a finite number, got True"),
        ("ranker", "epochs", True, "epochs must be an integer, got True"),
        ("retrieval", "enabled", "no", "enabled must be true or false, got 'no'"),
        ("mining", "miners", "covisit", "miners must be a list of strings, got 'covisit'"),
        ("mining.covisit", "window", 0, "window must be >= 1, got 0"),
        ("mining.positive", "threshold", -1.0, "threshold must be > 0, got -1.0"),
        ("ab", "days", 0, "days must be >= 1, got 0"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_file_section_and_key(tmp_path, capsys, section, key, value, says):
    # Given the smoke config with one bad setting
    config = _smoke_with(tmp_path, section, key, value)
    run_dir = tmp_path / "run"
    # When it is run
    rc, err = _sail_run(config, run_dir, capsys)
    # Then: exit 2, one line naming the file, the section and the key, and no stage ran
    assert rc == 2
    assert err == [f"sail: error: {config} [{section}]: {says}"]
    assert not run_dir.exists()


def test_a_yaml_syntax_error_exits_2_naming_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("name: broken\ndata:\n  size: tiny\n  seed: 7\nmining:\n  top_k: [50\n  engine: polars\n")
    run_dir = tmp_path / "run"
    rc, err = _sail_run(config, run_dir, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"sail: error: {config}: invalid YAML at line 7, column ")
    assert "from line 6" in err[0]  # where the unclosed list started
    assert not run_dir.exists()


def test_a_config_that_is_not_a_mapping_exits_2(tmp_path, capsys):
    config = tmp_path / "list.yaml"
    config.write_text("- data\n- mining\n")
    rc, err = _sail_run(config, tmp_path / "run", capsys)
    assert (rc, err) == (2, [f"sail: error: {config}: must be a mapping of sections, got list"])


def test_a_run_directory_under_a_file_exits_2_naming_it(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory's parent should be")
    run_dir = blocker / "run"
    rc, err = _sail_run("smoke", run_dir, capsys)
    assert rc == 2
    assert err == [f"sail: error: run directory {run_dir}: cannot be created or written (Not a directory)"]
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_run_directory_exits_2_naming_it(tmp_path, capsys):
    run_dir = tmp_path / "ro"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        rc, err = _sail_run("smoke", run_dir, capsys)
    finally:
        run_dir.chmod(0o700)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"sail: error: run directory {run_dir}: cannot be created or written")
    assert list(run_dir.iterdir()) == []


def test_an_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads `1e-3` as the string "1e-3"; for a number setting it is the number
    config = _smoke_with(tmp_path, "embedding", "lr", "1e-3")
    assert "lr: 1e-3" in config.read_text()
    assert load_config(str(config)).embedding.lr == 0.001


def test_an_integer_is_accepted_for_a_number_and_lists_become_tuples(tmp_path):
    config = _smoke_with(tmp_path, "validation", "max_rejected_share", 0)
    cfg = load_config(str(config))
    assert cfg.validation.max_rejected_share == 0.0 and isinstance(cfg.validation.max_rejected_share, float)
    assert cfg.embedding.steps == (6, 4, 4, 6) and cfg.ranker.variants == ("control", "both")


def _numeric(tp: Any) -> bool:
    args = get_args(tp)
    if get_origin(tp) is tuple or args:
        return any(_numeric(a) for a in args if a is not Ellipsis)
    return tp in (int, float)


def _numeric_settings(cls: type, prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, tp in get_type_hints(cls).items():
        if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
            out.update(_numeric_settings(tp, f"{prefix}.{key}"))
        elif _numeric(tp):
            out.setdefault(prefix, []).append(key)
    return out


def test_every_numeric_setting_of_every_section_has_a_range():
    numeric: dict[str, list[str]] = {}
    for name, cls in SECTIONS.items():
        numeric.update(_numeric_settings(cls, name))
    assert {s: sorted(k) for s, k in RANGES.items()} == {s: sorted(k) for s, k in numeric.items()}


def _outside(spec: str, is_int: bool) -> float | int:
    """A value just below a RANGES spec's lower bound ('>= a', '> a', 'in [a, b)', ...)."""
    if spec.startswith(">="):
        below = float(spec[2:]) - 1
    elif spec.startswith(">"):
        below = float(spec[1:])
    else:
        lo = float(spec[4:].split(",")[0])
        below = lo if spec[3] == "(" else lo - 1
    return int(below) if is_int else below


@pytest.mark.parametrize("section, key", [(s, k) for s, keys in RANGES.items() for k in keys])
def test_every_range_is_enforced_at_load(tmp_path, section, key):
    cls = SECTIONS[section.split(".")[0]]
    for part in section.split(".")[1:]:
        cls = get_type_hints(cls)[part]
    tp = get_type_hints(cls)[key]
    spec = RANGES[section][key]
    base = [a for a in (get_args(tp) or (tp,)) if a not in (type(None), Ellipsis)][0]
    value = _outside(spec, base is int)
    if get_origin(tp) is tuple:
        value = [value] * len(get_args(tp))
    config = _smoke_with(tmp_path, section, key, value)
    with pytest.raises(ValueError) as info:
        load_config(str(config))
    what = f"each of {key}" if get_origin(tp) is tuple else key
    assert str(info.value).startswith(f"{config} [{section}]: {what} must be {spec}, got ")


# ------------------------------------------------------------------------------------------------ other commands


def test_train_embedding_with_unparseable_steps_exits_2_naming_the_option(tmp_path, capsys):
    argv = ["--data", str(tmp_path), "--pairs", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "abcd"]
    rc = main(["train-embedding", *argv])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "sail: error: --steps needs four comma-separated non-negative integers (stages I,II,III,CRE), got 'abcd'"
    ]


def test_an_unreadable_model_config_file_is_refused_at_load_naming_it(tmp_path, capsys):
    model = tmp_path / "model.json"
    model.write_text('{"text": {')
    config = _smoke_with(tmp_path, "embedding", "model", str(model))
    rc, err = _sail_run(config, tmp_path / "run", capsys)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"sail: error: {config} [embedding]: model {str(model)!r} is neither a preset")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ model version


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A safetensors file written by hand: the metadata keys and the tensors' data in the given orders."""
    dtypes = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        blob = np.ascontiguousarray(arr).tobytes()
        header[name] = {
            "dtype": dtypes[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _model_files(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    tensors = {
        "text.proj.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "fuser.bias": rng.standard_normal(8).astype(np.float32),
        "ids.table": np.arange(6, dtype=np.int64).reshape(3, 2),
    }
    config = {"dim": 8, "matryoshka_dims": [4, 8], "text": {"layers": 1, "freeze": True}}
    meta_a = {"format": "sail-embedding-v1", "config": json.dumps(config), "use_audio": "true"}
    # the same metadata inserted in another order, the config's keys too, and the tensors laid out in another order
    meta_b = {"use_audio": "true", "config": json.dumps(dict(reversed(config.items()))), "format": "sail-embedding-v1"}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _write_safetensors(a, tensors, meta_a)
    _write_safetensors(b, dict(reversed(tensors.items())), meta_b)
    return a, b, tensors


def test_identical_weights_with_metadata_in_another_order_have_one_version(tmp_path):
    from safetensors.numpy import load_file

    from embedding.checkpoint import checkpoint_version

    a, b, tensors = _model_files(tmp_path)
    assert a.read_bytes() != b.read_bytes()  # a digest of the file's bytes would differ
    for path in (a, b):  # both are valid checkpoints holding the same tensors
        loaded = load_file(str(path))
        assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())
    assert checkpoint_version(a) == checkpoint_version(b)
    assert checkpoint_version(a).startswith("sail-") and len(checkpoint_version(a)) == len("sail-") + 12


def test_one_flipped_bit_in_a_tensor_changes_the_version(tmp_path):
    from embedding.checkpoint import checkpoint_version

    a, _, _ = _model_files(tmp_path)
    raw = bytearray(a.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    start = json.loads(raw[8 : 8 + n])["fuser.bias"]["data_offsets"][0]
    raw[8 + n + start] ^= 0x01  # the lowest mantissa bit of fuser.bias[0]
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(raw))
    assert checkpoint_version(flipped) != checkpoint_version(a)


def test_a_changed_model_config_changes_the_version(tmp_path):
    from embedding.checkpoint import checkpoint_version

    a, _, tensors = _model_files(tmp_path)
    other = tmp_path / "other.safetensors"
    config = {"dim": 8, "matryoshka_dims": [4, 8], "text": {"layers": 2, "freeze": True}}
    _write_safetensors(
        other, tensors, {"format": "sail-embedding-v1", "config": json.dumps(config), "use_audio": "true"}
    )
    assert checkpoint_version(other) != checkpoint_version(a)


def test_the_version_of_a_saved_model_survives_a_rewrite_of_its_header(tmp_path):
    import torch

    from embedding.checkpoint import checkpoint_version, load_embedding_model, save_embedding_model
    from embedding.config import ModelConfig
    from embedding.model import build_model

    # Given a real checkpoint of the tiny model
    torch.manual_seed(0)
    path = save_embedding_model(build_model(ModelConfig.tiny(), load_weights=False), tmp_path / "model.safetensors")
    # When its header is rewritten with the metadata keys and the tensors in reverse order
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    data = raw[8 + n :]
    tensors = {k: data[v["data_offsets"][0] : v["data_offsets"][1]] for k, v in header.items()}
    new: dict[str, Any] = {"__metadata__": dict(reversed(meta.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors, reverse=True):
        new[name] = {**header[name], "data_offsets": [offset, offset + len(tensors[name])]}
        blobs.append(tensors[name])
        offset += len(tensors[name])
    text = json.dumps(new).encode()
    text += b" " * (-len(text) % 8)
    rewritten = tmp_path / "rewritten.safetensors"
    rewritten.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    # Then it still loads as the same model and has the same version
    assert rewritten.read_bytes() != raw
    before, after = load_embedding_model(path).model.state_dict(), load_embedding_model(rewritten).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert checkpoint_version(rewritten) == checkpoint_version(path)
