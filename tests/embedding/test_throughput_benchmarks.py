"""The embedding benchmarks run and report what they measured: throughput rows per setting, and (with CUDA) the
staged trainer's GPU check against the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import embedding_cuda_check, embedding_throughput, hn_refresh


def test_throughput_benchmark_reports_one_row_per_setting(tiny_world_and_work, tmp_path):
    world, _, _ = tiny_world_and_work
    out = tmp_path / "tp.json"
    # When timing the tiny model at two batch sizes, fp32 and bf16 on the CPU
    embedding_throughput.main(
        ["--world", str(world), "--steps", "1", "--items", "16", "--models", "tiny", "--threads", "1"]
        + ["--batch-sizes", "4,8", "--cpu-precisions", "fp32,bf16", "--out", str(out)]
    )
    # Then there is one measured row per setting, in the JSON and in its Markdown twin
    rows = json.loads(out.read_text())["results"]
    peer = rows.pop()  # and the simpler peer, MiniLM forward-only, timed in the same run
    assert peer["model"] == "MiniLM forward-only (peer)" and peer["infer_items"] == 16 and peer["infer_items_per_s"] > 0
    assert [(r["precision"], r["batch_pairs"]) for r in rows] == [("fp32", 4), ("fp32", 8), ("bf16", 4), ("bf16", 8)]
    for r in rows:
        assert r["device"] == "cpu" and r["text_weights"] == "tiny random tower"
        assert np.isfinite(r["train_pairs_per_s"]) and r["train_pairs_per_s"] > 0 and r["infer_items_per_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert md.count("| tiny | cpu |") == 4 and md.count("| MiniLM forward-only (peer) | cpu | fp32 | 1 | - | - |") == 1


def test_hn_refresh_benchmark_reports_each_way_and_the_rows_agreement(tiny_world_and_work, tmp_path):
    world, _, _ = tiny_world_and_work
    out = tmp_path / "hn.json"
    # When timing the three refreshes once on the tiny world (its world / pairs / work directories)
    hn_refresh.main(
        ["--world-dir", str(world.parent), "--repeats", "1", "--pool", "60", "--refresh-every", "3"]
        + ["--batch-size", "8", "--out", str(out)]
    )
    # Then each way has a timing and its embedding counts, and the drawn rows got the full refresh's negatives
    res = json.loads(out.read_text())
    assert [r["way"] for r in res["results"]] == ["full", "rows", "pool"]
    assert all(r["seconds_median"] > 0 and r["items_embedded"] > 0 for r in res["results"])
    full, rows, pool = res["results"]
    assert full["items_embedded"] == rows["items_embedded"] == res["settings"]["items"]
    assert pool["items_embedded"] < full["items_embedded"] and res["rows_equal_full_on_drawn_rows"] is True
    assert "| pool | 60 |" in out.with_suffix(".md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_check_trains_every_stage_on_the_gpu(tiny_world_and_work, tmp_path):
    world, work, pairs = tiny_world_and_work
    out = tmp_path / "check.json"
    embedding_cuda_check.main(
        ["--world", str(world), "--work", str(work), "--steps", "4,2,3,4", "--batch-size", "8"]
        + ["--devices", "cuda,cpu", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    )
    res = json.loads(out.read_text())
    assert [(r["device"], r["precision"]) for r in res["runs"]] == [("cuda", "bf16"), ("cuda", "fp32"), ("cpu", "fp32")]
    assert all(r["completed"] and r["all_losses_finite"] and r["steps"] == 13 for r in res["runs"])
    assert res["resume"]["completed"] and res["resume"]["max_loss_diff"] < 0.05
    assert res["embeddings"]["cuda fp32"]["min_cosine"] > 0.999
    assert res["embeddings"]["cuda bf16"]["min_cosine"] > 0.98
