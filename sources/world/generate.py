"""`generate_world`: writes a whole generated data set (logs, catalogue, media, ground truth, manifest).

Layout under `out_dir`:
    items/ interactions/ feed_requests/ searches/ user_activity/      the logs (core.contracts schemas)
    media/items/NNN/<item_id>/{cover.png,frame_K.png,audio.wav}       media files ("files" mode only)
    truth/item_truth/ truth/item_signals/ truth/user_truth/ truth/daily_satisfaction/ truth/user_state_end/
    truth/world.json
    manifest.json                                                     written last: the data set is complete
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.contracts import FEED_REQUESTS, INTERACTIONS, ITEM_TRUTH, ITEMS, SEARCHES, USER_ACTIVITY, USER_TRUTH
from core.io import atomic_dir, write_json_atomic, write_table
from sources.world.catalogue import (
    DAY_US,
    ITEM_SIGNALS,
    build_catalogue,
    item_signals_table,
    item_texts,
    item_truth_table,
    items_table,
    start_us,
    world_vocabulary,
)
from sources.world.config import WorldConfig
from sources.world.media import (
    MARK_BAND_PX,
    MARK_DASH_PX,
    SOUND_AMP_RANGE,
    SOUND_BANDS_HZ,
    SOUND_RHYTHM_HZ,
    signature_projections,
    style_dict,
    write_media_files,
)
from sources.world.search import SearchIndex
from sources.world.simulate import DAILY_SATISFACTION, USER_STATE_END, Simulator
from sources.world.sinks import TableStreams
from sources.world.users import build_population, user_truth_table

LOG_STREAMS = {
    "interactions": INTERACTIONS,
    "feed_requests": FEED_REQUESTS,
    "searches": SEARCHES,
    "user_activity": USER_ACTIVITY,
}


@dataclass(frozen=True)
class WorldResult:
    out_dir: Path  # the data set's root
    paths: dict[str, Path]  # table / file name -> path (tables, truth tables, media root, world.json, manifest)
    counts: dict[str, int]  # rows per table (+ media_files / media_bytes in files mode)
    seconds: float  # wall time of the whole generation
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _log(progress: bool, msg: str, t0: float) -> None:
    if progress:
        print(f"[world {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def content_signals(cfg: WorldConfig) -> dict:
    """How much of the collaborative latent and of quality the media show, and how (world.json's `content_signals`)."""
    return {
        "collab_in_content": cfg.collab_in_content,
        "collab_latent": "sqrt(1 - rho) * own + sqrt(rho / 2) * sound_latent + sqrt(rho / 2) * style_latent, "
        "rho = collab_in_content (truth/item_signals: each item's sound_id, author_id and the two latents)",
        "n_sounds": cfg.sound_count,
        "sound_signature": {
            "shown": cfg.collab_in_content > 0,
            "partial_bands_hz": [list(b) for b in SOUND_BANDS_HZ],
            "partial_amp_range": list(SOUND_AMP_RANGE),
            "rhythm_hz_range": list(SOUND_RHYTHM_HZ),
            "projections": signature_projections(cfg.seed, "sound-signature", cfg.collab_dim).round(6).tolist(),
            "map": "u = Phi(projections @ sound_latent); partial k at lo_k * (hi_k / lo_k) ** u[k], amplitude from "
            "u[3 + k], rhythm from u[6]",
        },
        "style_mark": {
            "shown": cfg.collab_in_content > 0,
            "band_px": MARK_BAND_PX,
            "dash_period_px": MARK_DASH_PX,
            "projections": signature_projections(cfg.seed, "style-signature", cfg.collab_dim).round(6).tolist(),
            "map": "u = Phi(projections @ style_latent); outer RGB 30 + 195 * u[0:3], inner ring RGB 30 + 195 * "
            "u[3:6], dash share 0.15 + 0.7 * u[6]",
        },
        "quality_in_frames": cfg.quality_in_frames,
    }


def world_description(cfg: WorldConfig) -> dict:
    """truth/world.json: vocabularies, topic styles and every parameter a simulator needs."""
    vocab = world_vocabulary(cfg)
    return {
        "seed": cfg.seed,
        "size": cfg.size,
        "start_date": cfg.start_date,
        "days": cfg.days,
        "n_topics": cfg.n_topics,
        "content_dim": cfg.content_dim,
        "collab_dim": cfg.collab_dim,
        "vocabulary": vocab.to_dict(),
        "topic_styles": style_dict(cfg.seed, cfg.n_topics),
        "content_signals": content_signals(cfg),
        "response_params": cfg.to_dict()["response"],
        "policy_params": cfg.to_dict()["policy"],
        "drift": {"sigma": cfg.interest_drift_sigma, "pull": cfg.interest_pull},
        "response_module": "sources.world.response",
        "notes": {
            "ids": "item ids 1..n_items, user ids 1..n_users",
            "availability": "an item may be served from the day after its creation",
            "lt7": "active days among t0..t6 for a user active on t0 (truth/daily_satisfaction has every day)",
        },
    }


def generate_world(cfg: WorldConfig, out_dir: Path, progress: bool = False) -> WorldResult:
    """Generates the world described by `cfg` into `out_dir`; the manifest is written last."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    counts: dict[str, int] = {}
    paths: dict[str, Path] = {}

    def stage(name: str, t_start: float) -> float:
        now = time.perf_counter()
        stages[name] = round(now - t_start, 3)
        _log(progress, f"{name} done in {now - t_start:.1f}s", t0)
        return now

    t = time.perf_counter()
    cat = build_catalogue(cfg)
    texts = item_texts(cfg, cat)
    vocab = world_vocabulary(cfg)
    paths["items"], paths["item_truth"] = out / "items", out / "truth" / "item_truth"
    counts["items"] = write_table(items_table(cfg, cat, texts), ITEMS, paths["items"])
    counts["item_truth"] = write_table(item_truth_table(cat), ITEM_TRUTH, paths["item_truth"])
    paths["item_signals"] = out / "truth" / "item_signals"
    counts["item_signals"] = write_table(item_signals_table(cat), ITEM_SIGNALS, paths["item_signals"])
    pop = build_population(cfg)
    paths["user_truth"] = out / "truth" / "user_truth"
    counts["user_truth"] = write_table(user_truth_table(cfg, pop), USER_TRUTH, paths["user_truth"])
    index = SearchIndex.build(texts["title"], texts["tags"])
    del texts
    t = stage("catalogue", t)

    if cfg.write_media:
        paths["media"] = out / "media"
        with atomic_dir(paths["media"]) as tmp:
            counts.update(write_media_files(cfg, tmp, cfg.media_workers))
        t = stage("media", t)

    sim = Simulator(cfg, cat, pop, vocab, index)
    tables = {name: (schema, out / name) for name, schema in LOG_STREAMS.items()}
    tables["daily_satisfaction"] = (DAILY_SATISFACTION, out / "truth" / "daily_satisfaction")
    with TableStreams(tables) as sinks:
        for day in range(cfg.days):
            o = sim.run_day(day)
            sinks.put("interactions", o.interactions)
            sinks.put("feed_requests", o.feed_requests)
            sinks.put("searches", o.searches)
            sinks.put("user_activity", o.user_activity)
            sinks.put("daily_satisfaction", o.daily_satisfaction)
            n = o.interactions.num_rows if o.interactions is not None else 0
            _log(progress, f"day {day + 1}/{cfg.days}: {n} impressions", t0)
    counts.update(sinks.rows)
    paths.update({name: p for name, (_, p) in tables.items()})
    paths["user_state_end"] = out / "truth" / "user_state_end"
    counts["user_state_end"] = write_table(sim.end_state_table(), USER_STATE_END, paths["user_state_end"])
    t = stage("simulation", t)

    paths["world"] = out / "truth" / "world.json"
    write_json_atomic(paths["world"], world_description(cfg))
    seconds = time.perf_counter() - t0
    paths["manifest"] = out / "manifest.json"
    write_json_atomic(
        paths["manifest"],
        {
            "dataset": "generated",
            "size": cfg.size,
            "seed": cfg.seed,
            "start_date": cfg.start_date,
            "days": cfg.days,
            "now": _iso(start_us(cfg) + cfg.days * DAY_US),
            "catalogue_start": _iso(int(cat.created_us.min())),
            "media": {"root": "media", "mode": "files" if cfg.write_media else "on_demand"},
            "counts": counts,
            "config": cfg.to_dict(),
        },
    )
    return WorldResult(out, paths, counts, seconds, stages)
