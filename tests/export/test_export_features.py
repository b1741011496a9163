"""Feature-store export against a real Feast repository (local provider, SQLite online store, file offline store)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.contracts import ITEM_FEATURES
from core.io import is_complete, write_table
from export.export_features import (
    MixedVersionError,
    VersionExistsError,
    check_online_offline,
    feature_view_name,
    get_historical_item_features,
    get_online_item_features,
    main,
    publish_version,
    read_current,
)

N, D, L = 30, 8, 2
TS = datetime(2024, 5, 1, 12, tzinfo=UTC)


def features(version: str | list[str], seed: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N, D)).astype(np.float32)
    codes = rng.integers(0, 16, (N, L)).astype(np.int32)
    versions = version if isinstance(version, list) else [version] * N
    table = pa.table(
        {
            "item_id": pa.array(np.arange(N) + 500, pa.int64()),
            "embedding": pa.array(list(emb), pa.list_(pa.float32())),
            "semantic_ids": pa.array(list(codes), pa.list_(pa.int32())),
            "model_version": versions,
            "event_timestamp": pa.array([TS] * N, pa.timestamp("us", tz="UTC")),
            "created": pa.array([TS] * N, pa.timestamp("us", tz="UTC")),
        }
    )
    return table, emb, codes


def assert_online_equals(repo, version, emb, codes, ids=(500, 507, 529), expected_version=None):
    got = get_online_item_features(repo, list(ids), version=version)
    assert got["item_id"].tolist() == list(ids)
    for row, item in zip(got.itertuples(), ids, strict=True):
        np.testing.assert_array_equal(np.asarray(row.embedding, np.float32), emb[item - 500])
        assert [row.sid_1, row.sid_2] == codes[item - 500].tolist()
        assert row.model_version == (expected_version or version)


def test_publish_versions_atomically(tmp_path, monkeypatch):
    import feast

    repo = tmp_path / "repo"
    # Given version v1 published from an ITEM_FEATURES table directory
    t1, emb1, codes1 = features("v1", seed=1)
    write_table(t1, ITEM_FEATURES, tmp_path / "f1")
    res = publish_version(tmp_path / "f1", repo)
    assert res.feature_view == "sail_item_v1" and res.rows == N and res.check["ok"]
    assert (repo / "feature_store.yaml").exists() and is_complete(repo / "offline" / "sail_item_v1")
    assert read_current(repo)["version"] == "v1"
    # Then online reads equal the vectors and codes that went in, and unknown items come back empty
    assert_online_equals(repo, None, emb1, codes1, expected_version="v1")
    assert get_online_item_features(repo, [10_000])["embedding"].tolist() == [None]

    # When publishing v2 fails half way (after its offline table, during materialisation)
    t2, emb2, codes2 = features("v2", seed=2)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(feast.FeatureStore, "materialize", broken)
        with pytest.raises(OSError, match="disk full"):
            publish_version(t2, repo, "v2")
    # Then readers still get v1
    assert read_current(repo)["version"] == "v1"
    assert_online_equals(repo, None, emb1, codes1, expected_version="v1")

    # When v2 publishes for real
    publish_version(t2, repo, "v2")
    # Then current moves to v2 and v1 stays readable, unchanged
    assert read_current(repo)["version"] == "v2"
    assert_online_equals(repo, None, emb2, codes2, expected_version="v2")
    assert_online_equals(repo, "v1", emb1, codes1)
    report = check_online_offline(repo, "v1", sample=10)
    assert report["ok"] and report["sample"] == 10 and report["online_max_abs_diff"] == 0.0

    # A version is not silently republished; the generated definitions list both versions
    with pytest.raises(VersionExistsError):
        publish_version(t1, repo, "v1")
    namespace: dict = {}
    exec(compile((repo / "sail_features.py").read_text(), "sail_features.py", "exec"), namespace)
    assert {"sail_item_v1", "sail_item_v2"} <= set(namespace)


def test_mixing_versions_is_refused(tmp_path):
    mixed, _, _ = features(["v1"] * 20 + ["v3"] * 10, seed=3)
    with pytest.raises(MixedVersionError, match=r"\['v1', 'v3'\]"):
        publish_version(mixed, tmp_path / "repo")
    t, _, _ = features("v1", seed=3)
    with pytest.raises(MixedVersionError, match="'v1'.*'v9'"):
        publish_version(t, tmp_path / "repo", "v9")
    assert read_current(tmp_path / "repo") is None


def test_feature_view_names():
    assert feature_view_name("v1") == "sail_item_v1"
    assert feature_view_name("2024.05-a") == "sail_item_v2024_05_a"


def test_cli_export(tmp_path, capsys, caplog):
    t, emb, codes = features("v5", seed=5)
    write_table(t, ITEM_FEATURES, tmp_path / "f")
    with caplog.at_level(logging.INFO, logger="feast"):
        assert main(["--features", str(tmp_path / "f"), "--repo", str(tmp_path / "repo"), "--check-sample", "5"]) == 0
    printed = capsys.readouterr()
    out = json.loads(printed.out)  # stdout is the JSON alone
    assert out["feature_view"] == "sail_item_v5" and out["check_ok"]
    # Feast's coloured materialisation progress is a log record (stage logs), printed nowhere
    said = [r.getMessage() for r in caplog.records if r.name == "feast" and "Materializing" in r.getMessage()]
    assert said and "sail_item_v5" in said[0] and "\x1b" not in said[0]
    assert "Materializing" not in printed.err
    assert_online_equals(tmp_path / "repo", "v5", emb, codes)


def test_an_entity_row_before_its_item_s_feature_row_comes_back_with_nulls(tmp_path):
    t, emb, codes = features("v1", seed=4)
    repo = tmp_path / "repo"
    publish_version(t, repo)
    # Given five entity rows: four after their item's feature row, one a day before it, plus extra columns
    day = timedelta(days=1)
    entity_df = pd.DataFrame(
        {
            "item_id": [503, 500, 529, 500, 511],
            "event_timestamp": [TS + day, TS + day, TS, TS + day, TS - day],
            "label": [1, 0, 1, 1, 0],
        }
    )
    # When reading them offline: five rows out, in order, with their columns
    got = get_historical_item_features(repo, entity_df)
    assert len(got) == 5 and got["item_id"].tolist() == [503, 500, 529, 500, 511]
    assert got["label"].tolist() == [1, 0, 1, 1, 0]
    for i, item in enumerate([503, 500, 529, 500]):
        np.testing.assert_array_equal(np.asarray(got["embedding"][i], np.float32), emb[item - 500])
        assert [got["sid_1"][i], got["sid_2"][i]] == codes[item - 500].tolist()
        assert got["model_version"][i] == "v1"
    # Then the row timed before its item's feature row has null features
    assert got["embedding"][4] is None and got["model_version"][4] is None
    assert pd.isna(got["sid_1"][4]) and pd.isna(got["sid_2"][4])
    with pytest.raises(ValueError, match="event_timestamp"):
        get_historical_item_features(repo, entity_df.drop(columns="event_timestamp"))


def test_a_repository_naming_its_own_absolute_path_is_not_published(tmp_path, monkeypatch):
    import export.export_features as ef

    repo = tmp_path / "repo"
    real = ef.feast_objects

    def absolute_source(version, levels):
        entity, source, view = real(version, levels)
        source.file_options.uri = str(repo.resolve() / source.path)  # the FileSource names where the repository is now
        return entity, source, view

    monkeypatch.setattr(ef, "feast_objects", absolute_source)
    t, _, _ = features("v1", seed=6)
    with pytest.raises(RuntimeError, match=r"moved copy.*'absolute_path_mentions': \['data/registry.db'\]"):
        publish_version(t, repo)
    # Nothing points at the version and it is not recorded as published
    assert read_current(repo) is None and not (repo / "versions" / "sail_item_v1.json").exists()
