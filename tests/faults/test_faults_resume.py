"""Resuming a run: outputs damaged after they were finished, new code, a moved run directory, leftovers of a killed
run and two runs in one directory at once."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import core.io as jio
from core.io import atomic_dir
from jobs import pipeline
from jobs.cli import main
from jobs.pipeline import load_config, run_pipeline

REPO = Path(__file__).resolve().parents[2]
STAGE_NAMES = [s.name for s in pipeline.STAGES]


def _sail_run(run_dir: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["run", "--config", "smoke", "--run-dir", str(run_dir), *extra])
    return rc, out.getvalue()


def _table(path: Path) -> pa.Table:
    return pq.read_table(sorted(path.glob("*.parquet")))


def _assert_same_rows(got: pa.Table, want: pa.Table, what: str) -> None:
    """The same rows in any order (a rerun may order them differently); floats to 1e-9."""
    plain = [f for f in want.schema if not (pa.types.is_list(f.type) or pa.types.is_floating(f.type))]
    keys = [(f.name, "ascending") for f in plain]
    got, want = got.sort_by(keys), want.sort_by(keys)
    assert got.num_rows == want.num_rows > 0, what
    for name in want.column_names:
        if pa.types.is_floating(want.schema.field(name).type):
            np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=1e-9, err_msg=what)
        else:
            assert got[name].equals(want[name]), f"{what}: column {name}"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_the_manifest_names_a_missing_a_changed_and_an_added_file(tmp_path):
    # Given a finished output directory: a parquet table and a small JSON file
    out = tmp_path / "stage"
    with atomic_dir(out) as tmp:
        pq.write_table(pa.table({"x": list(range(100))}), tmp / "part-00000.parquet")
        (tmp / "meta.json").write_text('{"a": 1}')
    assert jio.verify_manifest(out) is None

    # When a byte changes but the size does not, Then the file is named
    (out / "meta.json").write_text('{"a": 2}')
    assert jio.verify_manifest(out) == f"{out / 'meta.json'}: content differs from the manifest's (same size, 8 bytes)"
    (out / "meta.json").write_text('{"a": 1}')

    # When a file appears that the writer did not write (a reader would pick it up)
    pq.write_table(pa.table({"x": [1]}), out / "part-00001.parquet")
    assert (
        jio.verify_manifest(out)
        == f"{out / 'part-00001.parquet'}: not in the manifest (added after the directory was finished)"
    )
    (out / "part-00001.parquet").unlink()

    # When the table's file is deleted
    (out / "part-00000.parquet").unlink()
    assert jio.verify_manifest(out) == f"{out / 'part-00000.parquet'}: missing"


def test_a_truncated_validate_table_reruns_validate_and_its_dependants(smoke_copy, smoke_done):
    # Given a finished run whose validated interactions were cut to 1,000 bytes after the run
    part = sorted((smoke_copy / "validate" / "interactions").glob("*.parquet"))[0]
    size = part.stat().st_size
    with open(part, "r+b") as fh:
        fh.truncate(1000)

    # When the run is resumed (up to the stage after validate)
    rc, out = _sail_run(smoke_copy, "--until", "mine")

    # Then validate reruns, naming the file, and so does mine, which reads it; the outputs are the original ones
    assert rc == 0, out
    assert "[1/11] data: up to date, skipped" in out
    assert (
        f"[2/11] validate: outputs not reusable, running again: {part}: 1,000 bytes, the manifest records {size:,}"
        in out
    )
    assert "[2/11] validate: done in" in out
    assert "[3/11] mine: outputs not reusable, running again: upstream stage(s) validate changed" in out
    assert "[3/11] mine: done in" in out
    for table in ("interactions", "items", "feed_requests"):
        assert _table(smoke_copy / "validate" / table).equals(_table(smoke_done / "validate" / table)), table
    for table in ("train/i2i_pairs", "train/q2i_pairs", "heldout/i2i_pairs", "full/seq2item"):
        _assert_same_rows(_table(smoke_copy / "mine" / table), _table(smoke_done / "mine" / table), table)
    assert jio.verify_manifest(smoke_copy / "validate") is None


def test_an_emptied_data_table_reruns_the_data_stage(smoke_copy, smoke_done):
    # Given a finished run whose generated items table was emptied (a zero-row file of the same schema)
    items = smoke_copy / "data" / "items"
    parts = sorted(items.glob("*.parquet"))
    schema = pq.read_schema(parts[0])
    for p in parts:
        p.unlink()
    pq.write_table(schema.empty_table(), items / "part-00000.parquet")

    # When the run is resumed
    rc, out = _sail_run(smoke_copy, "--until", "validate")

    # Then the data stage reruns, naming the table's file, and validate after it; the items are back
    assert rc == 0, out
    assert f"[1/11] data: outputs not reusable, running again: {items / 'part-00000.parquet'}: " in out
    assert "[1/11] data: done in" in out and "[2/11] validate: done in" in out
    assert _table(items).num_rows == _table(smoke_done / "data" / "items").num_rows > 0
    assert _table(smoke_copy / "validate" / "items").equals(_table(smoke_done / "validate" / "items"))


def test_a_marker_without_a_manifest_is_not_trusted(smoke_copy):
    # Given a stage finished by an older version: an empty _SUCCESS marker
    (smoke_copy / "data" / "_SUCCESS").write_text("")

    rc, out = _sail_run(smoke_copy, "--until", "data")

    assert rc == 0, out
    assert f"[1/11] data: outputs not reusable, running again: {smoke_copy / 'data' / '_SUCCESS'} holds no file" in out
    assert jio.verify_manifest(smoke_copy / "data") is None


def test_new_code_reruns_the_stages(smoke_copy, monkeypatch):
    cfg = load_config("smoke", run_dir=str(smoke_copy))
    monkeypatch.setattr(pipeline, "code_hash", lambda: "0123456789abcdef")
    lines: list[str] = []
    res = run_pipeline(cfg, echo=lines.append, until="validate")
    assert [v["status"] for v in res.stages.values()] == ["ran", "ran"]
    assert "[1/11] data: outputs not reusable, running again: the code changed" in lines
    assert json.loads((smoke_copy / "run.json").read_text())["code"]["hash"] == "0123456789abcdef"


def test_a_moved_run_directory_resumes_in_place(smoke_copy, smoke_done):
    # Given a copy of a finished run at another path (the original must stay untouched)
    before = _snapshot(smoke_done)
    cfg = load_config("smoke", run_dir=str(smoke_copy))

    # When it is rerun as is, Then every stage is reused (the same code, the same settings)
    again = run_pipeline(cfg, echo=lambda s: None)
    assert {v["status"] for v in again.stages.values()} == {"skipped"}

    # When stages that read paths recorded by earlier stages rerun (the retrieval table reads the embedding's work
    # folder, the A/B simulation the exported features)
    from dataclasses import replace

    changed = replace(cfg, retrieval=replace(cfg.retrieval, n_boot=20), ab=replace(cfg.ab, n_boot=20))
    third = run_pipeline(changed, echo=lambda s: None)
    assert [k for k, v in third.stages.items() if v["status"] == "ran"] == ["eval_retrieval", "ab", "report"]

    # Then nothing the driver records names the original location, the recorded paths resolve in the copy, and
    # nothing in the original changed
    recorded = [smoke_copy / "run.json", smoke_copy / "timings.json", *smoke_copy.glob("*/stage.json")]
    for path in recorded:
        assert str(smoke_done) not in path.read_text(), path
    metrics = {s: json.loads((smoke_copy / s / "stage.json").read_text())["metrics"] for s in STAGE_NAMES}
    assert (smoke_copy / metrics["train_embedding"]["work_dir"]).is_dir()
    assert (smoke_copy / metrics["ranking_samples"]["item_features"] / "_SUCCESS").exists()
    assert metrics["report"]["report"] == "report/report.html"
    assert _snapshot(smoke_done) == before


def test_leftovers_of_a_killed_run_are_removed(smoke_copy):
    # Given a run killed while writing mine and while checkpointing
    leftover = smoke_copy / ".mine.tmp-123"
    (leftover / "train").mkdir(parents=True)
    (leftover / "train" / "part-00000.parquet").write_bytes(b"half")
    work = next((smoke_copy / "work").glob("train_embedding-*"))
    checkpoint = work / ".step-0000005.tmp-ab12cd34"
    checkpoint.mkdir()

    lines: list[str] = []
    res = run_pipeline(load_config("smoke", run_dir=str(smoke_copy)), echo=lines.append, until="data")

    assert not leftover.exists() and not checkpoint.exists()
    assert lines[0].startswith("removed 2 temporary folder(s) an interrupted run left behind: .mine.tmp-123")
    assert res.stages["data"]["status"] == "skipped" and (smoke_copy / "mine" / "_SUCCESS").exists()


def test_a_second_run_while_one_holds_the_directory_exits_2_naming_it(smoke_copy, capsys):
    # Given another process holding the run directory
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom jobs.pipeline import lock_run_dir\n"
            "with lock_run_dir(Path(sys.argv[1])):\n    print('locked', flush=True)\n    sys.stdin.read()\n",
            str(smoke_copy),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        # When a second run starts there, Then it exits 2 with one line naming the holder, and touches nothing
        before = _snapshot(smoke_copy)
        assert main(["run", "--config", "smoke", "--run-dir", str(smoke_copy)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(
            f"sail: error: run directory {smoke_copy} is in use by another sail run (pid {holder.pid} "
        )
        assert socket.gethostname() in err[0] and str(smoke_copy / ".lock") in err[0]
        assert _snapshot(smoke_copy) == before
    finally:
        holder.kill()  # a killed holder leaves no lock behind
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
    res = run_pipeline(load_config("smoke", run_dir=str(smoke_copy)), echo=lambda s: None, until="data")
    assert res.stages["data"]["status"] == "skipped"
