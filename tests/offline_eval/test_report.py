"""The run report: schema validation, the self-contained HTML (every figure decodes, nothing external), the
Markdown summary, atomic rewrites, and rendering in headless Chromium (marker `browser`)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from core.machine import describe_machine
from offline_eval import report as report_mod
from offline_eval.ab_sim import ABConfig, Arm, LoggedPolicyScorer, OracleScorer, RandomScorer, run_ab
from offline_eval.data_report import write_data_report
from offline_eval.report import (
    SIMULATED_NOTE,
    ab_result_to_dict,
    compute_ranker_calibration,
    describe_data_source,
    load_schema,
    validate_summary,
    write_run_report,
)
from offline_eval.run_summary import read_data_source
from sources.validate import ValidationConfig, validate_dataset
from sources.world import WorldConfig, generate_world

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TINY = WorldConfig.for_size("tiny", seed=7, write_media=False)
TITLE = "Run <b>tiny</b> & friends"
PAPER = {"paper_lt7_lift_pct": 0.158, "paper_auc_gain_pct": 0.08}


# ---------------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory) -> Path:
    """The tiny world (generated without media), validated: tables and the copied manifest."""
    base = tmp_path_factory.mktemp("report_data")
    generate_world(TINY, base / "world")
    validate_dataset(base / "world", base / "valid", ValidationConfig())
    return base / "valid"


@pytest.fixture(scope="module")
def data_section(valid_dir) -> dict:
    """The real data report of the tiny world."""
    return write_data_report(valid_dir, valid_dir.parent / "data_report", title="tiny")


@pytest.fixture(scope="module")
def ab_run():
    """A real three-arm A/B simulation on the tiny world: 7 days, 100 bootstrap resamples (about a second)."""
    arms = [
        Arm("control", LoggedPolicyScorer(), share=0.34),
        Arm("oracle", OracleScorer(), share=0.33),
        Arm("random", RandomScorer(), share=0.33),
    ]
    return run_ab(TINY, arms, ABConfig(days=7, n_boot=100))


def _write_scores(path: Path, sharpness: float, seed: int) -> Path:
    """Test scores in recsys.evaluate.load_scores' layout; labels drawn from the scores (well calibrated)."""
    rng = np.random.default_rng(seed)
    n = 3000
    arrays = {"test_user": rng.integers(0, 200, n), "test_item": rng.integers(0, 300, n)}
    arrays["test_cold"] = rng.random(n) < 0.3
    arrays["test_new"] = arrays["test_cold"] & (rng.random(n) < 0.3)
    for task in ("click", "finish"):
        p = 1.0 / (1.0 + np.exp(-sharpness * rng.normal(size=n)))
        arrays[f"test_{task}"] = p.astype(np.float32)
        arrays[f"test_label_{task}"] = (rng.random(n) < p).astype(np.float32)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def scores_files(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("scores")
    return {
        "torchrec/control": str(_write_scores(base / "control.npz", 1.0, 1)),
        "torchrec/both": str(_write_scores(base / "both.npz", 1.5, 2)),
    }


def _run_section() -> dict:
    return {
        "name": "tiny",
        "config": {"name": "tiny", "data": {"size": "tiny", "seed": 7}},
        "finished": datetime(2025, 5, 1, 12, 0, tzinfo=UTC).isoformat(),
        "machine": describe_machine("numpy"),
        "timings": {"data": 1.25, "validate": 0.5, "mine": 3.0, "report": 0.75},
    }


def _summary(data: dict, ab: dict, scores: dict[str, str]) -> dict:
    """Every section: the recorded retrieval and ranker results, a real A/B run, headline figures."""
    ranker = json.loads((RESULTS / "ranker_small_standin.json").read_text())
    lt7 = ab["lifts"]["oracle"]["lt7"]
    auc = ranker["differences"]["torchrec/both-control"]["all"]["click"]["auc"]
    return {
        "schema_version": 1,
        "run": _run_section(),
        "data": data,
        "retrieval": json.loads((RESULTS / "retrieval_small.json").read_text()),
        "ranker": ranker,
        "ranker_scores": scores,
        "ab": ab,
        "headline": [
            {
                "name": "LT7 lift, oracle vs control <sim>",
                "value": 100 * lt7["value"],
                "low": 100 * lt7["low"],
                "high": 100 * lt7["high"],
                "unit": "%",
                "source": "ab",
            },
            {
                "name": "click AUC difference, torchrec both - control",
                "value": auc["value"],
                "low": auc["low"],
                "high": auc["high"],
                "unit": "AUC",
                "source": "ranker",
            },
            {"name": "items", "value": data["items"], "low": None, "high": None, "unit": "", "source": "data"},
        ],
        "reference": dict(PAPER),
    }


def _minimal(data: dict) -> dict:
    return {"schema_version": 1, "run": _run_section(), "data": data}


@pytest.fixture(scope="module")
def full(tmp_path_factory, data_section, ab_run, scores_files):
    """(summary given, paths) of one report with every section, written once for the module."""
    summary = _summary(data_section, ab_result_to_dict(ab_run), scores_files)
    paths = write_run_report(summary, tmp_path_factory.mktemp("report") / "out", TITLE)
    return summary, paths


class _Images(HTMLParser):
    """Collects every <img> (src, data-section) and every tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs))


def _parse(html_text: str) -> _Images:
    p = _Images()
    p.feed(html_text)
    return p


# ------------------------------------------------------------------------------------------------ A/B section


def test_ab_result_to_dict_keeps_every_arm_lift_and_day(ab_run):
    d = ab_result_to_dict(ab_run)
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert d["control"] == "control"
    assert d["config"] == {"days": 7, "salt": "sail-ab-1", "n_boot": 100, "seed": 0}
    assert [a["name"] for a in d["arms"]] == ["control", "oracle", "random"]
    for arm, res in zip(d["arms"], ab_run.arms, strict=True):
        assert arm["users"] == res.users
        assert (
            set(arm["metrics"])
            == set(res.metrics)
            == {
                "lt7",
                "dau_share",
                "clicks_per_active_day",
                "watch_s_per_active_day",
                "satisfaction",
            }
        )  # 7 days: no LT14
        iv = res.metrics["lt7"]
        assert arm["metrics"]["lt7"] == {
            "value": iv.estimate,
            "low": iv.low,
            "high": iv.high,
            "level": 0.95,
            "n_boot": 100,
            "n_failed": 0,
        }
    assert set(d["lifts"]) == {"oracle", "random"}
    assert d["lifts"]["random"]["satisfaction"]["value"] == ab_run.lifts["random"]["satisfaction"].estimate
    assert len(d["daily"]) == 3 * 7
    first = d["daily"][0]
    assert set(first) == {"arm", "day", "active_users", "impressions", "clicks", "satisfaction"}
    assert isinstance(first["active_users"], int) and isinstance(first["day"], int)


# ------------------------------------------------------------------------------------------------ the schema


def test_schema_is_valid_draft_2020_12_and_ships_with_the_package():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'offline_eval = ["summary.schema.json"]' in pyproject  # package-data: the wheel carries it


def test_the_recorded_results_and_a_real_run_validate(data_section, ab_run, scores_files):
    validate_summary(_summary(data_section, ab_result_to_dict(ab_run), scores_files))
    validate_summary(_minimal(data_section))
    validate_summary({**_minimal(data_section), "retrieval": None, "ranker": None, "ab": None, "headline": None})


def _break(summary: dict, path: list, value=None, delete: bool = False) -> dict:
    out = copy.deepcopy(summary)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "delete", "named"),
    [
        (["headline", 0, "value"], "3.1", False, "summary.headline[0].value"),
        (["run", "name"], None, True, "summary.run.name"),
        (["ab", "lifts", "oracle", "lt7", "low"], None, True, "summary.ab.lifts.oracle.lt7.low"),
        (["ab", "arms", 1, "users"], -3, False, "summary.ab.arms[1].users"),
        (["data", "lifetime", "lt7_mean"], None, True, "summary.data.lifetime.lt7_mean"),
        (["retrieval", "table", "SAIL + CRE", "q2i", "recall"], "high", False, 'summary.retrieval.table["SAIL + CRE"]'),
        (
            ["ranker", "models", "torchrec/both", "all", "click", "auc", "value"],
            None,
            True,
            'summary.ranker.models["torchrec/both"].all.click.auc.value',
        ),
        (["run", "finished"], "yesterday", False, "summary.run.finished"),
        (["schema_version"], 2, False, "summary.schema_version"),
        (["retreival"], {}, False, "'retreival' was unexpected"),
    ],
)
def test_an_invalid_summary_raises_naming_the_path_and_writes_nothing(
    tmp_path, data_section, ab_run, scores_files, path, value, delete, named
):
    bad = _break(_summary(data_section, ab_result_to_dict(ab_run), scores_files), path, value, delete)
    with pytest.raises(ValueError, match="does not match") as err:
        write_run_report(bad, tmp_path / "out", TITLE)
    assert named in str(err.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ the report


def test_every_figure_decodes_and_each_present_section_has_its_figures(full):
    summary, paths = full
    page = _parse(paths.html.read_text())
    per_section: dict[str, int] = {}
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix) :], validate=True))) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
        assert img["alt"]
        per_section[img["data-section"]] = per_section.get(img["data-section"], 0) + 1
    trainers = {name.split("/")[0] for name in summary["ranker"]["models"]}
    assert trainers == {"torchrec", "lgbm"}
    assert per_section == {
        "retrieval": 1,  # Recall@K bars
        "ranker": 3 * len(trainers),  # per trainer: AUC / GAUC by variant, the cold-start slices, the differences
        "calibration": 1,  # control vs +both: scores were given for torchrec only
        "ab": 2,  # lifts, daily DAU / cumulative active days
    }
    # the ranker's slices are defined on the page, next to their sizes
    from offline_eval.report import SLICE_DEFINITIONS

    text = paths.html.read_text()
    assert SLICE_DEFINITIONS.replace("'", "&#x27;") in text or SLICE_DEFINITIONS in text
    assert "no impression in the ranker" in SLICE_DEFINITIONS and "created on or after" in SLICE_DEFINITIONS


def test_the_page_is_self_contained_and_escapes_text(full):
    summary, paths = full
    text = paths.html.read_text()
    assert "http://" not in text and "https://" not in text
    page = _parse(text)
    assert not page.tags & {"link", "script", "iframe", "object", "embed"}
    # the title and a headline name carry markup characters: shown as text, never as tags
    assert "Run &lt;b&gt;tiny&lt;/b&gt; &amp; friends" in text and "<b>tiny</b>" not in text
    assert "oracle vs control &lt;sim&gt;" in text
    # the paper's figures stand beside ours, with the simulated / online distinction spelled out
    assert "+0.158%" in text and "+0.08%" in text
    assert "SAIL-Embedding paper" in text and "not an online test" in text
    # the ranker's stand-in note and the stage timings are on the page
    assert "STAND-IN" in text
    for stage in summary["run"]["timings"]:
        assert f"<td>{stage}</td>" in text


def test_summary_json_round_trips_with_calibration_from_the_scores(full, scores_files):
    summary, paths = full
    written = json.loads(paths.summary_json.read_text())
    validate_summary(written)
    given = json.loads(json.dumps(summary))
    assert "data_source" not in given  # an older summary: the source is inferred from data.dataset ("generated")
    assert {k: v for k, v in written.items() if k != "ranker_calibration"} == {**given, "data_source": GENERATED}
    cal = written["ranker_calibration"]
    assert set(cal) == set(scores_files)
    for per_task in cal.values():
        assert set(per_task) == {"click", "finish"}
        for table in per_task.values():
            assert sum(b["count"] for b in table["buckets"]) == 3000
            assert table["ece"] < 0.05  # labels were drawn from the scores


def test_markdown_has_headline_lifts_ranker_difference_and_timings(full):
    summary, paths = full
    md = paths.markdown.read_text()
    lt7 = summary["headline"][0]
    assert f"| {lt7['name']} | {lt7['value']:+.2f}% | [{lt7['low']:+.2f}%, {lt7['high']:+.2f}%] |" in md
    d = summary["headline"][1]
    assert f"| {d['name']} | {d['value']:+.4f} AUC | [{d['low']:+.4f}, {d['high']:+.4f}] | ranker |" in md
    assert "| items | 300 | n/a | data |" in md
    assert "LT7 +0.158% and AUC +0.08%" in md and "simulated world" in md
    lift = summary["ab"]["lifts"]["random"]["satisfaction"]
    assert f"| random | satisfaction | {100 * lift['value']:+.2f}% [" in md
    auc = summary["ranker"]["differences"]["torchrec/both-control"]["all"]["click"]["auc"]
    assert f"| torchrec | click | {auc['value']:+.4f} [{auc['low']:+.4f}, {auc['high']:+.4f}] |" in md
    assert "| mine | 3.0 |" in md and "| total | 5.5 |" in md


def test_absent_sections_are_left_out_with_a_note(tmp_path, data_section):
    paths = write_run_report({**_minimal(data_section), "ab": None, "headline": None}, tmp_path, "minimal")
    text = paths.html.read_text()
    assert _parse(text).images == []
    for note in (
        "Retrieval: not run",
        "Ranker: not run",
        "Calibration: no ranker scores given",
        "A/B simulation: not run",
        "No headline figures",
    ):
        assert note in text
    md = paths.markdown.read_text()
    assert "No +both vs control comparison" in md and "Not run." in md
    written = json.loads(paths.summary_json.read_text())
    assert written["ab"] is None and "retrieval" not in written


def test_calibration_buckets_match_a_hand_computed_case(tmp_path):
    # two score levels, 50 rows each, observed rates equal to the scores: two non-empty buckets on the diagonal
    p = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    y = np.r_[np.ones(10), np.zeros(40), np.ones(40), np.zeros(10)]
    arrays = {"test_click": p, "test_label_click": y, "test_user": np.arange(100), "test_item": np.arange(100)}
    np.savez(tmp_path / "s.npz", **arrays)
    cal = compute_ranker_calibration({"lgbm/control": tmp_path / "s.npz"})["lgbm/control"]
    assert list(cal) == ["click"]  # no finish arrays: no finish table
    rows = [(b["mean_predicted"], b["observed_rate"], b["count"]) for b in cal["click"]["buckets"]]
    assert rows == [(pytest.approx(0.2), pytest.approx(0.2), 50), (pytest.approx(0.8), pytest.approx(0.8), 50)]
    assert cal["click"]["ece"] == pytest.approx(0.0) and cal["click"]["ratio"] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="lgbm/both"):
        compute_ranker_calibration({"lgbm/both": tmp_path / "missing.npz"})


def test_a_failed_rewrite_leaves_the_previous_report_whole(tmp_path, data_section, monkeypatch):
    paths = write_run_report(_minimal(data_section), tmp_path, "first")
    before = {p: p.read_bytes() for p in (paths.html, paths.markdown, paths.summary_json)}

    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(report_mod, "render_markdown", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        write_run_report({**_minimal(data_section), "run": {**_run_section(), "name": "second"}}, tmp_path, "second")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "summary.json", "summary.md"]


def test_interval_objects_reject_unknown_fields(data_section, ab_run, scores_files):
    summary = _summary(data_section, ab_result_to_dict(ab_run), scores_files)
    summary["ab"]["arms"][0]["metrics"]["lt7"]["estimate"] = 1.0
    with pytest.raises(ValueError, match=r"summary\.ab\.arms\[0\]\.metrics\.lt7: Additional properties"):
        validate_summary(summary)


def test_ab_config_in_the_section_is_the_run_config(ab_run):
    assert ab_result_to_dict(ab_run)["config"] == dataclasses.asdict(ab_run.config)


# ------------------------------------------------------------------------------------------------ in a browser

_PROBE = """<script>
window.addEventListener("load", () => {
  const ok = Array.from(document.images).filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.decoded = String(ok);
  document.body.dataset.broken = String(document.images.length - ok);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.browser
def test_the_report_renders_in_headless_chromium(full, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary found (looked for chromium, chromium-browser, google-chrome on PATH)")
    _, paths = full
    base = [exe, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,4000", paths.html.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert shot.stat().st_size > 0
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 4000)
        assert len(set(im.convert("L").resize((64, 200)).getdata())) > 10  # drawn, not a blank page

    # The DOM after load, from a copy of the page with a probe that counts the images the browser decoded.
    n_images = len(_parse(paths.html.read_text()).images)
    probe = tmp_path / "probe.html"
    probe.write_text(paths.html.read_text().replace("</body>", _PROBE + "</body>"))
    run = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dom = _parse(run.stdout)
    assert len(dom.images) == n_images == 10
    assert f'data-decoded="{n_images}"' in run.stdout and 'data-broken="0"' in run.stdout


def test_headline_figures_are_signed_where_they_are_differences_and_carry_their_unit_once():
    fig = {"name": "x", "source": "s"}
    assert report_mod.fmt_headline({**fig, "value": 3.6551, "low": -0.5, "high": 5.1, "unit": "%"}) == (
        "+3.66%",
        "[-0.50%, +5.10%]",
    )
    assert report_mod.fmt_headline({**fig, "value": 0.017354, "low": 0.01569, "high": 0.01891, "unit": "AUC"}) == (
        "+0.0174 AUC",
        "[+0.0157, +0.0189]",
    )
    assert report_mod.fmt_headline({**fig, "value": 21.5, "low": 20.793, "high": 22.209, "unit": "recall x 100"}) == (
        "21.5 recall x 100",
        "[20.79, 22.21]",
    )
    assert report_mod.fmt_headline({**fig, "value": 12345, "low": None, "high": None, "unit": ""}) == ("12,345", "n/a")
    assert report_mod.fmt_headline({**fig, "value": float("nan"), "low": 1.0, "high": None, "unit": "AUC"}) == (
        "n/a",
        "n/a",
    )


# ------------------------------------------------------------------------------------------------ data source

GENERATED = {
    "kind": "generated world",
    "dataset": "generated",
    "name": "generated",
    "impressions": "simulated",
    "negatives": None,
    "label": "generated world (simulated users and impressions)",
}
SHOP_NEGATIVES = {
    "per_positive": 4,
    "sampler": "popularity",
    "alpha": 0.75,
    "seed": 11,
    "sampled": 1196,
    "short": 1,
    "positives": 300,
}
SHOP = {"dataset": "logs", "name": "shop", "impressions": "sampled", "negatives": SHOP_NEGATIVES, "now": "2025-01-01"}
SHOP_LABEL = "real logs: shop (AUC against sampled negatives: 4 per positive, popularity^0.75)"


def _real_logs_summary(data: dict, manifest: dict, tmp_path: Path) -> dict:
    """A run on real logs as the pipeline writes it: no A/B simulation, `data_source` read from the validated
    manifest."""
    (tmp_path / "validate").mkdir()
    (tmp_path / "validate" / "manifest.json").write_text(json.dumps(manifest))
    ranker = json.loads((RESULTS / "ranker_small_standin.json").read_text())
    auc = ranker["differences"]["torchrec/both-control"]["all"]["click"]["auc"]
    headline = {"name": "click AUC difference, torchrec both - control", "unit": "AUC", "source": "ranker"}
    return {
        "schema_version": 1,
        "run": _run_section(),
        "data": {**data, "dataset": manifest.get("dataset"), "size": None, "seed": None},
        "data_source": read_data_source(tmp_path / "validate"),
        "retrieval": json.loads((RESULTS / "retrieval_small.json").read_text()),
        "ranker": ranker,
        "ab": None,
        "headline": [{**headline, "value": auc["value"], "low": auc["low"], "high": auc["high"]}],
        "reference": dict(PAPER),
    }


def _section_html(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def _markdown_section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n## ", start + 1)
    return md[start : end if end >= 0 else len(md)]


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({"dataset": "generated", "size": "tiny", "seed": 7}, GENERATED),
        (
            {"dataset": "movielens", "positive_rating": 4.0},  # a manifest from before name / impressions / negatives
            {
                "kind": "real logs",
                "dataset": "movielens",
                "name": "movielens",
                "impressions": "logged",
                "negatives": None,
                "label": "real logs: movielens (logged impressions)",
            },
        ),
        (
            {"dataset": "unknown"},  # validation of a data set without a manifest
            {
                "kind": "real logs",
                "dataset": "unknown",
                "name": "unknown",
                "impressions": "logged",
                "negatives": None,
                "label": "real logs: unknown (logged impressions)",
            },
        ),
        (
            SHOP,
            {
                "kind": "real logs",
                "dataset": "logs",
                "name": "shop",
                "impressions": "sampled",
                "negatives": SHOP_NEGATIVES,
                "label": SHOP_LABEL,
            },
        ),
        (
            {
                "dataset": "movielens",
                "impressions": "logged+sampled",
                "negatives": {"per_positive": 2, "sampler": "uniform", "alpha": None, "seed": 0},
            },
            {
                "kind": "real logs",
                "dataset": "movielens",
                "name": "movielens",
                "impressions": "logged+sampled",
                "negatives": {"per_positive": 2, "sampler": "uniform", "alpha": None, "seed": 0},
                "label": "real logs: movielens (AUC against logged and sampled negatives: 2 per positive, uniform)",
            },
        ),
    ],
)
def test_the_data_source_comes_from_the_manifest_with_missing_fields_inferred(
    manifest, expected, data_section, tmp_path
):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    source = read_data_source(tmp_path)
    assert source == expected
    validate_summary({**_minimal(data_section), "data_source": source})


def test_the_data_source_rejects_an_unknown_impressions_value_and_a_mislabelled_kind(data_section):
    with pytest.raises(ValueError, match="impressions must be one of"):
        describe_data_source({"dataset": "logs", "impressions": "imagined"})
    mislabelled = {**describe_data_source({"dataset": "logs", "name": "shop"}), "kind": "generated world"}
    with pytest.raises(ValueError, match=r"summary\.data_source"):
        validate_summary({**_minimal(data_section), "data_source": mislabelled})


def test_a_generated_world_report_keeps_the_simulated_world_disclaimer(full, valid_dir):
    # Given the report of the tiny generated world, whose validated manifest says dataset "generated"
    assert read_data_source(valid_dir) == GENERATED
    _, paths = full
    page, md = paths.html.read_text(), paths.markdown.read_text()
    # Then the banner names the generated world and both pages carry the disclaimer
    assert "Data source: generated world (simulated users and impressions)." in page
    assert "Data source: generated world (simulated users and impressions)." in md
    assert SIMULATED_NOTE in page and f"> {SIMULATED_NOTE}" in md
    assert "This run: simulated world, offline" in page
    assert "the figures above come from a simulated world." in md
    assert "sampled negatives" not in page and "sampled negatives" not in md
    assert json.loads(paths.summary_json.read_text())["data_source"] == GENERATED


def test_a_real_logs_report_with_sampled_negatives_names_its_logs_and_says_so_at_the_ranker(tmp_path, data_section):
    # Given a run on positive-only real logs whose manifest records the sampled negatives
    summary = _real_logs_summary(data_section, SHOP, tmp_path)
    assert summary["data_source"]["label"] == SHOP_LABEL
    # When the report is written
    paths = write_run_report(summary, tmp_path / "report", "shop")
    page, md = paths.html.read_text(), paths.markdown.read_text()
    written = json.loads(paths.summary_json.read_text())
    validate_summary(written)
    assert written["data_source"] == summary["data_source"]
    # Then the banner names the real logs and nothing says the figures are simulated
    assert f"Data source: {SHOP_LABEL}." in page and f"Data source: {SHOP_LABEL}." in md
    assert "the real logs &#x27;shop&#x27;" in page and "the real logs 'shop'" in md
    assert "This run: real logs (shop), offline" in page
    for text in (page, md):
        assert "simulated" not in text.lower() and "generated world" not in text.lower()
    # And every ranker table and figure says its AUC is against sampled negatives
    ranker = _section_html(page, "ranker")
    assert "<h2>Ranker: AUC and GAUC against sampled negatives</h2>" in ranker
    assert "<h3>Metrics per slice, task and model: AUC and GAUC against sampled negatives</h3>" in ranker
    assert "<h3>Paired differences, treatment - control: AUC and GAUC against sampled negatives</h3>" in ranker
    captions = [img["alt"] for img in _parse(ranker).images]
    assert captions and all("against sampled negatives" in c for c in captions)
    assert "ranker (against sampled negatives)" in _section_html(page, "headline")
    assert "4 per positive, popularity^0.75" in _section_html(page, "data")
    assert "against sampled negatives" in _markdown_section(md, "## Ranker")
    assert "## Ranker: +both vs control (all test items), AUC against sampled negatives" in md
    assert "| ranker (against sampled negatives) |" in md


def test_an_old_movielens_manifest_gives_logged_impressions_and_no_sampling_caveat(tmp_path, data_section):
    manifest = {"dataset": "movielens", "media": {"root": None, "mode": "none"}, "positive_rating": 4.0}
    summary = _real_logs_summary(data_section, manifest, tmp_path)
    paths = write_run_report(summary, tmp_path / "report", "movielens")
    page, md = paths.html.read_text(), paths.markdown.read_text()
    validate_summary(json.loads(paths.summary_json.read_text()))
    assert "Data source: real logs: movielens (logged impressions)." in page
    assert "Data source: real logs: movielens (logged impressions)." in md
    for text in (page, md):
        assert "simulated" not in text.lower() and "sampled negatives" not in text
    assert "<h2>Ranker</h2>" in page


def test_an_older_summary_without_data_source_is_labelled_from_its_dataset(tmp_path, data_section):
    summary = {**_minimal(data_section), "data": {**data_section, "dataset": "movielens"}}
    paths = write_run_report(summary, tmp_path, "old")
    written = json.loads(paths.summary_json.read_text())
    assert written["data_source"]["label"] == "real logs: movielens (logged impressions)"
    assert SIMULATED_NOTE not in paths.html.read_text()
