"""Feature-store export: item embeddings + semantic IDs -> a Feast repository, one feature view per model version.

Repository layout (generated on first publish; the embedded default is all local files):

    <repo>/feature_store.yaml          provider local, registry data/registry.db, online store SQLite, offline file
    <repo>/offline/<view>/             the version's offline table (parquet, written atomically with _SUCCESS)
    <repo>/versions/<view>.json        a published version's record (rows, time range, consistency check)
    <repo>/current.json                the pointer readers follow: {"version", "feature_view", ...}
    <repo>/sail_features.py            the same definitions as code, for people who use the `feast` CLI

Every path the repository records is relative to the repository folder (`feature_store.yaml`, the FileSources in
the registry and in `sail_features.py`: `offline/<view>`; `versions/*.json`), and Feast resolves relative paths
against the `repo_path` a FeatureStore is opened with, so a repository works wherever it is copied or moved (the
`sail run` stage writes it in a temporary folder that is then renamed).

The offline table is the ITEM_FEATURES contract plus `sid_1..sid_L` (int64, one column per semantic-ID level, as
Feast features cannot index into a list). The Feast objects: entity `item` (join key `item_id`), and per version a
`FileSource` and a `FeatureView` named `sail_item_v<version>` with `embedding: Array(Float32)`, `sid_l: Int64` and
`model_version: String` (no TTL).

Publishing a version: (1) refuse a table that holds rows of another or of several versions (MixedVersionError naming
them); (2) write its offline table to its own directory atomically; (3) register its feature view and materialise
it into the online store; (4) record the version and write `sail_features.py`; (5) check, on a copy of the repository
at another path (as it will be read once moved), Feast's online and point-in-time values against the parquet table
for a sample of items, and that no file names the repository's own absolute path (a failure removes the record
again); (6) only then switch `current.json` (an atomic file replace). Until step 6, readers of `current` keep reading
the previous version, whose offline table, feature view and online rows are untouched.

Offline reads go through `get_historical_item_features`: Feast's point-in-time join drops an entity row whose
timestamp is before every feature row of its item (its file offline store filters such rows out rather than
returning nulls); the helper returns every entity row, in order, with null features for those.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.contracts import ITEM_FEATURES, Column, TableSchema
from core.io import is_complete, read_table, write_json_atomic, write_table, write_text_atomic
from embedding.batch_infer import MixedVersionError, check_single_version

PROJECT = "sail"
ENTITY = "item"
JOIN_KEY = "item_id"
CURRENT_FILE = "current.json"

__all__ = [
    "MixedVersionError",
    "PublishResult",
    "VersionExistsError",
    "check_online_offline",
    "feast_table_schema",
    "feature_view_name",
    "get_historical_item_features",
    "get_online_item_features",
    "init_repo",
    "main",
    "publish_version",
    "read_current",
]


class VersionExistsError(RuntimeError):
    """The version is already published (pass overwrite=True to replace it)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_feast_output(call) -> None:
    """Runs `call`; what Feast prints on stdout (coloured progress) goes to the "feast" logger at INFO instead.

    Stdout stays the CLI's JSON, and the console filter of `sail` keeps library INFO lines in the stage log only.
    """
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        call()
    said = " ".join(_ANSI.sub("", buf.getvalue()).split())
    if said:
        logging.getLogger("feast").info("%s", said)


def feature_view_name(version: str) -> str:
    """`sail_item_v<version>` with characters Feast does not allow in names replaced by '_'."""
    if not version:
        raise ValueError("model_version must be a non-empty string")
    safe = re.sub(r"[^A-Za-z0-9_]", "_", version)
    return f"sail_item_{safe}" if safe.startswith("v") else f"sail_item_v{safe}"


def feast_table_schema(levels: int) -> TableSchema:
    """ITEM_FEATURES plus one int64 column per semantic-ID level (`sid_1..sid_L`)."""
    sids = tuple(Column(f"sid_{i}", "int64", doc=f"semantic-ID code of level {i}") for i in range(1, levels + 1))
    return TableSchema(
        name="item_features_feast",
        columns=(*ITEM_FEATURES.columns, *sids),
        key=ITEM_FEATURES.key,
        doc="ITEM_FEATURES with expanded semantic-ID columns, the offline source of a Feast feature view.",
    )


def _feast():
    os.environ.setdefault("FEAST_USAGE", "False")
    import feast

    return feast


def init_repo(repo: str | os.PathLike) -> Path:
    """Creates the repository's directories and `feature_store.yaml` (kept when it exists)."""
    repo = Path(repo).resolve()
    (repo / "data").mkdir(parents=True, exist_ok=True)
    cfg = repo / "feature_store.yaml"
    if not cfg.exists():
        text = (
            f"project: {PROJECT}\n"
            "provider: local\n"
            "registry: data/registry.db\n"
            "online_store:\n"
            "  type: sqlite\n"
            "  path: data/online_store.db\n"
            "offline_store:\n"
            "  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        tmp = cfg.with_name(f".{cfg.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(cfg)
    return repo


def offline_path(version: str) -> str:
    """The version's offline table, relative to the repository (`offline/<view>`): what the FileSource records."""
    return f"offline/{feature_view_name(version)}"


def feast_objects(version: str, levels: int) -> tuple[Any, Any, Any]:
    """(entity, file source, feature view) of one version; the source's path is relative to the repository."""
    feast = _feast()
    from feast.types import Array, Float32, Int64, String

    name = feature_view_name(version)
    entity = feast.Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=feast.ValueType.INT64, description="an item")
    source = feast.FileSource(
        name=f"{name}_source",
        path=offline_path(version),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    schema = [
        feast.Field(name="embedding", dtype=Array(Float32)),
        *[feast.Field(name=f"sid_{i}", dtype=Int64) for i in range(1, levels + 1)],
        feast.Field(name="model_version", dtype=String),
    ]
    view = feast.FeatureView(
        name=name,
        entities=[entity],
        ttl=timedelta(0),
        schema=schema,
        source=source,
        online=True,
        tags={"model_version": version, "sid_levels": str(levels)},
    )
    return entity, source, view


def _with_sid_columns(features: pa.Table, levels: int, source: str) -> pa.Table:
    sids = features.column("semantic_ids").combine_chunks()
    lengths = sids.value_lengths().to_numpy(zero_copy_only=False)
    if len(lengths) and not (lengths == levels).all():
        raise ValueError(f"{source}: semantic_ids lengths {sorted(set(lengths.tolist()))}, expected {levels}")
    codes = sids.flatten().to_numpy().astype(np.int64).reshape(len(features), levels)
    for i in range(levels):
        features = features.append_column(f"sid_{i + 1}", pa.array(codes[:, i], pa.int64()))
    return features


@dataclass
class PublishResult:
    version: str
    feature_view: str
    offline_dir: Path
    rows: int
    check: dict[str, Any]  # check_online_offline's report
    seconds: float


def _version_record_path(repo: Path, view: str) -> Path:
    return repo / "versions" / f"{view}.json"


def publish_version(
    features: str | os.PathLike | pa.Table,
    repo: str | os.PathLike,
    version: str | None = None,
    *,
    overwrite: bool = False,
    check_sample: int = 100,
    seed: int = 0,
) -> PublishResult:
    """Publishes one model version's ITEM_FEATURES to the Feast repository and switches `current` to it.

    version: the version expected in the table (None: whatever single version it holds). Raises
    MixedVersionError when the table holds several versions or another one, VersionExistsError when the version is
    already published and `overwrite` is False, RuntimeError when, on a copy of the repository at another path, online
    or offline values disagree with the table or a file names the repository's absolute path (the pointer is then not
    switched and the version not recorded).
    """
    t0 = time.perf_counter()
    source_name = str(features) if not isinstance(features, pa.Table) else "<table>"
    table = features if isinstance(features, pa.Table) else read_table(features, ITEM_FEATURES)
    table = table.select(ITEM_FEATURES.names)
    version = check_single_version(table.column("model_version").unique().to_pylist(), source_name, version)
    if len(table.column("item_id").unique()) != table.num_rows:
        raise ValueError(f"{source_name}: duplicate item_id rows for model version {version!r}")
    levels = _levels(table, source_name)
    repo = init_repo(repo)
    view = feature_view_name(version)
    record_path = _version_record_path(repo, view)
    if record_path.exists():
        old = json.loads(record_path.read_text())
        if old.get("version") != version:
            raise MixedVersionError(
                f"versions {old.get('version')!r} and {version!r} map to the same feature view {view!r}; "
                "choose another version string"
            )
        if not overwrite:
            raise VersionExistsError(f"model version {version!r} is already published as {view!r} in {repo}")

    # (2) offline table, atomically, in the version's own directory
    offline_dir = repo / offline_path(version)
    write_table(_with_sid_columns(table, levels, source_name), feast_table_schema(levels), offline_dir)

    # (3) register and materialise this version's view only
    feast = _feast()
    store = feast.FeatureStore(repo_path=str(repo))
    entity, source, fv = feast_objects(version, levels)
    store.apply([entity, source, fv])
    ts = table.column("event_timestamp").to_numpy()
    start = pd.Timestamp(ts.min()).tz_localize("UTC").to_pydatetime() - timedelta(seconds=1)
    end = pd.Timestamp(ts.max()).tz_localize("UTC").to_pydatetime() + timedelta(seconds=1)
    _log_feast_output(lambda: store.materialize(start_date=start, end_date=end, feature_views=[view]))

    # (4) record the version (paths relative to the repository) and write the definitions
    record = {
        "version": version,
        "feature_view": view,
        "offline_dir": offline_path(version),
        "levels": levels,
        "rows": table.num_rows,
        "event_timestamp_min": str(start + timedelta(seconds=1)),
        "event_timestamp_max": str(end - timedelta(seconds=1)),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    old_record = record_path.read_text() if record_path.exists() else None
    write_json_atomic(record_path, record)
    _write_definitions(repo)

    # (5) on a copy at another path: online == offline == parquet on a sample, and no file names this folder
    check = check_moved_copy(repo, version, sample=check_sample, seed=seed)
    if not check["ok"]:
        if old_record is None:
            record_path.unlink()
        else:
            write_text_atomic(record_path, old_record)
        _write_definitions(repo)
        raise RuntimeError(f"feature view {view!r} fails its check on a moved copy of {repo}: {check}")
    write_json_atomic(record_path, {**record, "check": check})

    # (6) switch the pointer
    write_json_atomic(repo / CURRENT_FILE, {k: record[k] for k in ("version", "feature_view", "levels", "rows")})
    return PublishResult(version, view, offline_dir, table.num_rows, check, round(time.perf_counter() - t0, 3))


def _levels(table: pa.Table, source: str) -> int:
    if table.num_rows == 0:
        raise ValueError(f"{source}: no rows to publish")
    lengths = table.column("semantic_ids").combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max() or lengths.min() < 1:
        raise ValueError(f"{source}: semantic_ids of different lengths {sorted(set(lengths.tolist()))}")
    return int(lengths[0])


def read_current(repo: str | os.PathLike) -> dict[str, Any] | None:
    """The current pointer ({"version", "feature_view", "levels", "rows"}), None when nothing is published."""
    path = Path(repo) / CURRENT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def published_versions(repo: str | os.PathLike) -> list[dict[str, Any]]:
    """Every published version's record, oldest first."""
    records = [json.loads(p.read_text()) for p in sorted((Path(repo) / "versions").glob("*.json"))]
    return sorted(records, key=lambda r: r["published_at"])


def _record(repo: Path, version: str | None) -> dict[str, Any]:
    if version is None:
        current = read_current(repo)
        if current is None:
            raise FileNotFoundError(f"no version is published in {repo} (no {CURRENT_FILE})")
        version = current["version"]
    path = _version_record_path(repo, feature_view_name(version))
    if not path.exists():
        raise FileNotFoundError(f"model version {version!r} is not published in {repo}")
    return json.loads(path.read_text())


def _feature_refs(view: str, levels: int) -> list[str]:
    return [f"{view}:embedding", *[f"{view}:sid_{i}" for i in range(1, levels + 1)], f"{view}:model_version"]


def get_online_item_features(
    repo: str | os.PathLike, item_ids: Sequence[int], version: str | None = None, store: Any = None
) -> pd.DataFrame:
    """Online features of `item_ids` for `version` (None: the current one): item_id, embedding, sid_*, version.

    Unknown items come back with nulls.
    """
    repo = Path(repo).resolve()
    record = _record(repo, version)
    store = store or _feast().FeatureStore(repo_path=str(repo))
    res = store.get_online_features(
        features=_feature_refs(record["feature_view"], record["levels"]),
        entity_rows=[{JOIN_KEY: int(i)} for i in item_ids],
    ).to_dict()
    cols = [JOIN_KEY, "embedding", *[f"sid_{i}" for i in range(1, record["levels"] + 1)], "model_version"]
    return pd.DataFrame({c: res[c] for c in cols})


def get_historical_item_features(
    repo: str | os.PathLike, entity_df: pd.DataFrame, version: str | None = None, store: Any = None
) -> pd.DataFrame:
    """Point-in-time features of `entity_df` rows (`item_id`, `event_timestamp`) for `version` (None: the current one).

    Every entity row comes back, in its order, with its other columns and `embedding`, `sid_*`, `model_version`
    (`event_timestamp` as UTC). A row timed before every feature row of its item, or of an unknown item, gets null
    features (None, and <NA> for `sid_*`): Feast's file offline store drops the former, so they are re-added here.
    """
    missing = [c for c in (JOIN_KEY, "event_timestamp") if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks the column(s) {missing}; it needs {JOIN_KEY!r} and 'event_timestamp'")
    repo = Path(repo).resolve()
    record = _record(repo, version)
    levels = record["levels"]
    sid_cols = [f"sid_{i}" for i in range(1, levels + 1)]
    feature_cols = ["embedding", *sid_cols, "model_version"]
    rows = entity_df.drop(columns=[c for c in feature_cols if c in entity_df.columns])
    rows = rows.assign(event_timestamp=pd.to_datetime(rows["event_timestamp"], utc=True))
    keys = rows[[JOIN_KEY, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
    store = store or _feast().FeatureStore(repo_path=str(repo))
    got = store.get_historical_features(entity_df=keys, features=_feature_refs(record["feature_view"], levels)).to_df()
    got = got.assign(event_timestamp=pd.to_datetime(got["event_timestamp"], utc=True))
    got = got[[JOIN_KEY, "event_timestamp", *feature_cols]].drop_duplicates([JOIN_KEY, "event_timestamp"])
    out = rows.merge(got, on=[JOIN_KEY, "event_timestamp"], how="left", validate="many_to_one")
    out.index = entity_df.index
    for c in sid_cols:
        out[c] = out[c].astype("Int64")
    for c in ("embedding", "model_version"):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def check_online_offline(
    repo: str | os.PathLike, version: str | None = None, sample: int = 100, seed: int = 0, store: Any = None
) -> dict[str, Any]:
    """Compares, for a sample of items, the online store and Feast's offline retrieval with the parquet table.

    Returns counts of items missing online and of mismatching embeddings / semantic IDs / versions, the largest
    absolute embedding difference, the count of entity rows timed before their item's feature row that did not come
    back from the offline retrieval with null features (`offline_retrieval_early_not_null`), and `ok` (True when
    everything agrees exactly).
    """
    repo = Path(repo).resolve()
    if version is None:
        current = read_current(repo)
        if current is None:
            raise FileNotFoundError(f"no version is published in {repo} (no {CURRENT_FILE})")
        version = current["version"]
    view = feature_view_name(version)
    offline_dir = repo / "offline" / view
    if not is_complete(offline_dir):
        raise FileNotFoundError(f"offline table of {version!r} is missing or incomplete: {offline_dir}")
    table = read_table(offline_dir, ITEM_FEATURES)
    levels = _levels(table, str(offline_dir))
    full = read_table(offline_dir, feast_table_schema(levels))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(full.num_rows, size=min(sample, full.num_rows), replace=False))
    part = full.take(pa.array(rows))
    ids = part.column(JOIN_KEY).to_numpy()
    offline_emb = part.column("embedding").to_pylist()
    sid_cols = [f"sid_{i}" for i in range(1, levels + 1)]
    offline_sids = np.stack([part.column(c).to_numpy() for c in sid_cols], axis=1)

    feast = _feast()
    store = store or feast.FeatureStore(repo_path=str(repo))
    online = store.get_online_features(
        features=_feature_refs(view, levels), entity_rows=[{JOIN_KEY: int(i)} for i in ids]
    ).to_dict()
    latest = pd.Timestamp(full.column("event_timestamp").to_numpy().max()).tz_localize("UTC")
    own_ts = pd.to_datetime(part.column("event_timestamp").to_numpy()).tz_localize("UTC")
    entity_df = pd.DataFrame(  # each item at the latest time (its row), then just before its own row (nulls)
        {
            JOIN_KEY: np.concatenate([ids, ids]),
            "event_timestamp": [latest] * len(ids) + list(own_ts - pd.Timedelta(seconds=1)),
        }
    )
    both = get_historical_item_features(repo, entity_df, version, store=store)
    hist, early = both.iloc[: len(ids)], both.iloc[len(ids) :]

    report = {"version": version, "feature_view": view, "sample": len(ids)}
    report.update(_compare("online", online, ids, offline_emb, offline_sids, sid_cols, version))
    hist_dict = {c: hist[c].tolist() for c in ["embedding", *sid_cols, "model_version"]}
    report.update(_compare("offline_retrieval", hist_dict, ids, offline_emb, offline_sids, sid_cols, version))
    early_null = early[["embedding", *sid_cols, "model_version"]].isna().all(axis=1)
    report["offline_retrieval_rows_in"] = len(entity_df)
    report["offline_retrieval_rows_out"] = len(both)
    report["offline_retrieval_early_not_null"] = int((~early_null).sum())
    report["ok"] = (
        all(report[f"{p}_{k}"] == 0 for p in ("online", "offline_retrieval") for k in ("missing", "mismatches"))
        and report["offline_retrieval_early_not_null"] == 0
        and len(both) == len(entity_df)
    )
    return report


def _mentions(repo: Path, needle: str) -> list[str]:
    """Files of `repo` (outside the offline tables) whose bytes contain `needle`, relative to `repo`."""
    found = []
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if path.is_file() and rel.parts[0] != "offline" and needle.encode() in path.read_bytes():
            found.append(str(rel))
    return found


def _definition_sources(repo: Path) -> dict[str, str]:
    """Feature view -> the FileSource path that `sail_features.py` gives it."""
    namespace: dict[str, Any] = {}
    exec(compile((repo / "sail_features.py").read_text(), str(repo / "sail_features.py"), "exec"), namespace)
    fv_type = _feast().FeatureView
    return {v.name: v.batch_source.path for v in namespace.values() if isinstance(v, fv_type)}


def check_moved_copy(repo: str | os.PathLike, version: str, sample: int = 100, seed: int = 0) -> dict[str, Any]:
    """`check_online_offline` on a copy of the repository at another path, plus what proves the repository holds
    no path of its own location: the files naming its absolute path (`absolute_path_mentions`, registry and online
    store included) and the views whose `sail_features.py` source is absolute, or, for `version`, does not resolve
    to its table inside the copy (`definitions_unresolved`). `ok` needs all three clean.

    The copy holds the configuration, `data/`, `versions/`, `sail_features.py` and this version's offline table.
    """
    repo = Path(repo).resolve()
    view = feature_view_name(version)

    def skip(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == repo / "offline":
            return [n for n in names if n != view]
        return [n for n in names if ".tmp-" in n]

    with tempfile.TemporaryDirectory(prefix="sail-feast-check-") as tmp:
        moved = Path(tmp) / "moved_repo"
        shutil.copytree(repo, moved, ignore=skip)
        report = check_online_offline(moved, version, sample=sample, seed=seed)
        report["absolute_path_mentions"] = _mentions(moved, str(repo))
        sources = _definition_sources(moved)
        report["definitions_unresolved"] = sorted(  # other versions' tables are not copied: their paths are relative
            v
            for v, path in sources.items()
            if Path(path).is_absolute() or (v == view and not is_complete(moved / path))
        )
        if view not in sources:
            report["definitions_unresolved"].append(view)
    report["checked_at"] = "a copy of the repository at another path"
    report["ok"] = report["ok"] and not report["absolute_path_mentions"] and not report["definitions_unresolved"]
    return report


def _compare(
    prefix: str,
    got: dict[str, list],
    ids: np.ndarray,
    offline_emb: list,
    offline_sids: np.ndarray,
    sid_cols: list[str],
    version: str,
) -> dict[str, Any]:
    missing = mismatches = 0
    max_diff = 0.0
    for i in range(len(ids)):
        emb = got["embedding"][i]
        if emb is None or (isinstance(emb, float) and np.isnan(emb)):
            missing += 1
            continue
        a = np.asarray(emb, dtype=np.float32)
        b = np.asarray(offline_emb[i], dtype=np.float32)
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        max_diff = max(max_diff, diff)
        sids = [got[c][i] for c in sid_cols]
        same_sids = all(
            s is not None and not pd.isna(s) and int(s) == int(o) for s, o in zip(sids, offline_sids[i], strict=True)
        )
        if diff != 0.0 or not same_sids or got["model_version"][i] != version:
            mismatches += 1
    return {f"{prefix}_missing": missing, f"{prefix}_mismatches": mismatches, f"{prefix}_max_abs_diff": max_diff}


_DEFINITIONS = '''"""Generated by export.export_features: Feast objects of the published SAIL item versions."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

item = Entity(name="{entity}", join_keys=["{join_key}"], value_type=ValueType.INT64, description="an item")
# (feature view, model version, semantic-ID levels, offline directory relative to this repository: Feast resolves
# it against the repo_path of the FeatureStore, so the repository works wherever it is moved)
VERSIONS = {versions!r}

for _view, _version, _levels, _path in VERSIONS:
    globals()[_view] = FeatureView(
        name=_view,
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name="embedding", dtype=Array(Float32)),
            *[Field(name=f"sid_{{i}}", dtype=Int64) for i in range(1, _levels + 1)],
            Field(name="model_version", dtype=String),
        ],
        source=FileSource(
            name=f"{{_view}}_source", path=_path, timestamp_field="event_timestamp", created_timestamp_column="created"
        ),
        online=True,
        tags={{"model_version": _version, "sid_levels": str(_levels)}},
    )
'''


def _write_definitions(repo: Path) -> None:
    versions = [
        (r["feature_view"], r["version"], r["levels"], offline_path(r["version"])) for r in published_versions(repo)
    ]
    text = _DEFINITIONS.format(entity=ENTITY, join_key=JOIN_KEY, versions=versions)
    path = repo / "sail_features.py"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sail export", description="Publish item features to the Feast repository.")
    p.add_argument("--features", required=True, type=Path, help="ITEM_FEATURES table (output of sail build-sids)")
    p.add_argument("--repo", required=True, type=Path, help="Feast repository directory (created when absent)")
    p.add_argument("--version", default=None, help="model version expected in the table (default: the one it holds)")
    p.add_argument("--overwrite", action="store_true", help="republish a version that is already published")
    p.add_argument("--check-sample", type=int, default=100, help="items compared online vs offline")
    args = p.parse_args(argv)
    res = publish_version(
        args.features, args.repo, args.version, overwrite=args.overwrite, check_sample=args.check_sample
    )
    print(
        json.dumps(
            {
                "version": res.version,
                "feature_view": res.feature_view,
                "offline_dir": str(res.offline_dir),
                "rows": res.rows,
                "check_ok": res.check["ok"],
                "seconds": res.seconds,
            },
            indent=2,
        )
    )
    return 0
