"""Stage III hard-negative refresh cost: one whole refresh (embedding with the current model + threshold + faiss
search) timed three ways on the same trainer, model and catalogue:

- full: what a refresh did before it knew the sampler's rows: the whole catalogue and every query of every
  hard-negative source embedded, every row mined;
- rows: only the rows the stage's sampler draws before the next refresh mined (whole catalogue; the threshold still
  fitted on every row, so their negatives are the full refresh's);
- pool: the drawn rows searched in a seeded sample of `--pool` catalogue items (`hn_catalogue_pool`).

Items come from a generated world (`tiny` preset with `--items` catalogue items; generated and mined once into
`--world-dir`, reused when it is there), preprocessed once outside the timings. Each way is timed `--repeats` times
(the median is reported) with the stage's sampler at stage step 0, refresh_every steps of batch_size pairs. The
embedded item / query counts and, for `rows`, the agreement with the full refresh's negatives are recorded.

    .venv/bin/python benchmarks/hn_refresh.py [--items 3000] [--model tiny] [--pool 600] [--refresh-every 30]
        [--batch-size 64] [--threads 1] [--repeats 3] [--world-dir DIR] [--out benchmarks/results/hn_refresh.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "hn_refresh.json"


def prepare_world(world_dir: Path, n_items: int, seed: int = 7) -> tuple[Path, Path]:
    """A generated world of `n_items` items and its pairs mined (polars) at half the log; reused when present."""
    from core.timeline import embedding_cutoff
    from mining.mine_pairs import log_time_range, run_periods
    from mining.mining_config import CovisitConfig, MiningConfig, Q2IConfig, SwingConfig
    from sources.world import WorldConfig, generate_world

    world, pairs = world_dir / "world", world_dir / "pairs"
    if not (world / "items").exists():
        generate_world(WorldConfig.for_size("tiny", seed=seed, n_items=n_items), world)
    if not pairs.exists():
        cfg = MiningConfig(
            data_dir=str(world),
            out_dir=str(pairs),
            engine="polars",
            covisit=CovisitConfig(top_k=50),
            swing=SwingConfig(top_k=50),
            q2i=Q2IConfig(min_clicks=1),
        )
        run_periods(cfg, embedding_cutoff(*log_time_range(world), 0.5))
    return world, pairs


class Counting:
    """Wraps the trainer's embedding functions: items and queries embedded during one refresh."""

    def __init__(self, trainer) -> None:
        self.trainer, self.items, self.queries = trainer, 0, 0
        self.embed_rows, self.embed_queries = trainer.embed_rows, trainer.embed_queries

    def __enter__(self) -> Counting:
        inside = []

        def rows(r):
            self.items += 0 if inside else len(r)  # item queries go through embed_rows too
            return self.embed_rows(r)

        def queries(src, r):
            self.queries += len(r)
            inside.append(1)
            try:
                return self.embed_queries(src, r)
            finally:
                inside.pop()

        self.trainer.embed_rows, self.trainer.embed_queries = rows, queries
        return self

    def __exit__(self, *exc) -> None:
        del self.trainer.embed_rows, self.trainer.embed_queries  # back to the class's methods


def full_refresh(trainer, miner) -> None:
    """The refresh over everything: the whole catalogue and every query of every source embedded, every row mined."""
    from embedding.negatives import SourceEmbeddings

    catalogue = trainer.embed_rows(np.arange(len(trainer.data.store)))

    def source(name: str) -> SourceEmbeddings:
        src = trainer.data.sources[name]
        ms = trainer.mining_source(name, lambda idx: catalogue[idx])
        return SourceEmbeddings(trainer.embed_queries(src, np.arange(len(src))), catalogue, ms.positives)

    miner.refresh(0, source)


def main(argv=None) -> int:
    from embedding.balancing import StochasticSpecialisationSampler
    from embedding.trainer import TrainConfig, Trainer, load_training_data, resolve_model_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=3000, help="catalogue size of the generated world")
    p.add_argument("--model", default="tiny")
    p.add_argument("--pool", type=int, default=600, help="hn_catalogue_pool of the pool way")
    p.add_argument("--refresh-every", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--world-dir", type=Path, default=None, help="where the world and its pairs are (made if absent)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine_start = describe_machine()

    with tempfile.TemporaryDirectory() as tmp:
        world_dir = args.world_dir or Path(tmp) / "w"
        t0 = time.perf_counter()
        world, pairs = prepare_world(world_dir, args.items)
        cfg = TrainConfig(
            model=args.model,
            batch_size=args.batch_size,
            refresh_every=args.refresh_every,
            threads=args.threads,
            progress=False,
        )
        mcfg = resolve_model_config(cfg.model, cfg)
        data = load_training_data(cfg, world, pairs, world_dir / "work", mcfg)
        trainer = Trainer(cfg, data, Path(tmp) / "out", mcfg)
        setup_s = time.perf_counter() - t0
        names = trainer._stage_sources("III")
        sources = trainer.miner.sources
        sampler = StochasticSpecialisationSampler(
            {s: len(data.sources[s]) for s in names},
            dict.fromkeys(names, 1.0),
            cfg.batch_size,
            cfg.steps_iii,
            seed=0,
        )
        trainer.embed_rows(np.arange(min(256, len(data.store))))  # warm-up (allocator, first-call costs)

        def miner(pool: int):
            return dataclasses.replace(trainer.miner, catalogue_pool=pool, negatives={}, thresholds={}, f1={})

        ways = {
            "full": lambda m: full_refresh(trainer, m),
            "rows": lambda m: m.refresh(0, trainer.mining_sources(), trainer.refresh_rows(sampler, 0, cfg.steps_iii)),
            "pool": lambda m: m.refresh(0, trainer.mining_sources(), trainer.refresh_rows(sampler, 0, cfg.steps_iii)),
        }
        pools = {"full": 0, "rows": 0, "pool": args.pool}
        rows = []
        mined = {}
        for name, run in ways.items():
            times = []
            for _ in range(args.repeats):
                m = miner(pools[name])
                with Counting(trainer) as c:
                    t = time.perf_counter()
                    run(m)
                    times.append(time.perf_counter() - t)
                mined[name] = m
            rows.append(
                {
                    "way": name,
                    "catalogue_pool": pools[name],
                    "seconds_median": float(np.median(times)),
                    "seconds": times,
                    "items_embedded": c.items,
                    "queries_embedded": c.queries,
                }
            )
        drawn = trainer.refresh_rows(sampler, 0, cfg.steps_iii)
        same = all(
            np.array_equal(
                mined["rows"].negatives_for(s, drawn[s]).indices, mined["full"].negatives_for(s, drawn[s]).indices
            )
            for s in sources
        )

    result = {
        "benchmark": "hn_refresh",
        "machine": machine_start,
        "machine_end": describe_machine(),
        "settings": {
            "items": len(data.store),
            "model": args.model,
            "threads": args.threads,
            "batch_size": cfg.batch_size,
            "refresh_every": cfg.refresh_every,
            "num_negatives": cfg.num_negatives,
            "hn_range_max": cfg.hn_range_max,
            "repeats": args.repeats,
            "sources": {s: len(data.sources[s]) for s in sources},
            "rows_drawn": {s: int(len(drawn[s])) for s in sources},
        },
        "setup_seconds": setup_s,
        "rows_equal_full_on_drawn_rows": bool(same),
        "results": rows,
    }
    commit = str((machine_start.get("code") or {}).get("commit"))[:7]
    full_s = rows[0]["seconds_median"]
    md = [
        "# Hard-negative refresh: whole refresh time",
        "",
        f"Commit {commit}; {args.model} model, {len(data.store)} items, {args.threads} thread(s); stage III sources "
        + ", ".join(f"{s} {len(data.sources[s])} rows ({len(drawn[s])} drawn)" for s in sources)
        + f"; refresh_every {cfg.refresh_every} x batch {cfg.batch_size}; median of {args.repeats}.",
        "",
        "| way | catalogue pool | seconds (median) | vs full | items embedded | queries embedded |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['way']} | {r['catalogue_pool'] or 'whole'} | {r['seconds_median']:.2f} | "
            f"{full_s / r['seconds_median']:.1f}x | {r['items_embedded']} | {r['queries_embedded']} |"
        )
    md += ["", f"Drawn rows' negatives of `rows` equal to `full`'s: {same}.", ""]
    write_results(args.out, result, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
