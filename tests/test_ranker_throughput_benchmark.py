"""benchmarks/ranker_throughput: the plain model has the TorchRec model's shape, and every mode runs and records."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import ranker_throughput as rt  # noqa: E402
from recsys.model import RankerConfig, build_ranker  # noqa: E402

CFG = RankerConfig(embedding_dim=8, dense_layers=(16,), cross_layers=1, cross_rank=4, over_layers=(16, 8))


def test_plain_sparse_arch_pools_like_the_embedding_bag_collection():
    rows = {**rt.ROWS, "user_recent_items": rt.ROWS["item_id"]}
    model = build_ranker(CFG, rt.SPEC, rows, 8)
    plain = rt.PlainSparseArch(rt.ROWS, CFG.embedding_dim)
    tables = model.sparse_arch.ebc.embedding_bags
    with torch.no_grad():
        plain.bags["item_id"].weight.copy_(tables["t_item"].weight)
        for f in ("user_id", "author_id", "category", "hour"):
            plain.bags[f].weight.copy_(tables[f"t_{f}"].weight)
    batch = rt.make_batches(1, 64)[0]
    want = model.sparse_arch(batch.sparse)  # (B, F, D), the bag sharing the item table
    assert want.shape == (64, len(rt.FEATURES), CFG.embedding_dim)
    torch.testing.assert_close(plain(batch.sparse), want)


TINY = ["--batch-size", "64", "--block", "1", "--rounds", "2", "--warmup", "1"]


@pytest.mark.parametrize(("arch", "part"), [("dcn", "all"), ("dlrm", "sparse"), ("dcn_dot", "all")])
def test_main_times_both_models_and_records_the_setup(tmp_path, arch, part):
    out = tmp_path / "r.json"
    assert rt.main([*TINY, "--arch", arch, "--part", part, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    (run,) = r["runs"]
    assert set(run["examples_per_s"]) == {"plain", "torchrec"}
    assert all(len(v) == 2 and min(v) > 0 for v in run["examples_per_s"].values())
    med = run["median_examples_per_s"]
    assert run["speedup_torchrec_over_plain"] == pytest.approx(med["torchrec"] / med["plain"], rel=1e-2)
    assert r["speedup_torchrec_over_plain"] == run["speedup_torchrec_over_plain"] and r["median_examples_per_s"] == med
    assert r["setup"]["interaction"].startswith("DLRM" if arch == "dlrm" else "DCNv2")
    assert ("DLRM" in r["setup"]["interaction"]) == (arch != "dcn")
    assert r["setup"]["timed"].startswith("sparse" if part == "sparse" else "whole")


def test_repeat_runs_each_comparison_in_a_fresh_process_and_reports_the_spread(tmp_path):
    out = tmp_path / "r.json"
    assert rt.main([*TINY, "--part", "sparse", "--repeat", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    speedups = [x["speedup_torchrec_over_plain"] for x in r["runs"]]
    assert len(speedups) == 3 and r["setup"]["runs"] == 3
    assert r["speedup_torchrec_over_plain"] == sorted(speedups)[1]
    assert r["speedup_range"] == [min(speedups), max(speedups)]
    assert r["runs_at_or_above_target"] == sum(x >= 1.3 for x in speedups)


def test_repeat_below_one_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        rt.main(["--repeat", "0", "--out", str(tmp_path / "r.json")])
