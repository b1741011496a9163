"""Could any content feature make the +both ranker's gain larger on cold-start items in the generated world?

The ranker's SAIL features are swapped for item features built from the world's hidden truth, and the TorchRec
control and +both variants are trained and put through the same slice-gain test as `benchmarks/ranker_cold_start`:

- "true topics": each item's topics as its embedding (primary 1, secondary 0.5). This is everything that any
  modality of an item reveals in this world, so it bounds what a content embedding can add.
- "true topics + collaborative latent + quality": what the world's user response also depends on but no modality
  shows (what item ids learn for warm items). Content cannot carry this; it shows what the test measures when a
  feature does carry it.

Semantic IDs are residual k-means codes of those vectors (3 levels of 32), rows are stamped at the item's creation,
and ranking samples are rebuilt from the run's validated data with the same point-in-time join.

    python benchmarks/ranker_truth_features.py --run-dir runs/demo [--work /tmp/truth_features] [--n-boot 200]

Writes benchmarks/results/ranker_truth_features.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402
from benchmarks.ranker_cold_start import control_vs_both, markdown  # noqa: E402
from benchmarks.retrieval_ceiling import truth_vectors  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ranker_truth_features.json"
TRUTH_VERSION = "world-truth-v0"
FEATURE_SETS = {"true topics": False, "true topics + collaborative latent + quality": True}


def truth_item_features(items: pa.Table, truth: pa.Table, hidden: bool, codebook_size: int = 32) -> pa.Table:
    """ITEM_FEATURES rows for every catalogue item from its truth row: the topic block (primary 1, secondary 0.5,
    L2-normalised), with `hidden` also the collaborative latent (L2-normalised) and the standardised quality.

    Raises ValueError naming the first catalogue item that has no truth row.
    """
    from recsys.standin import item_features_table, residual_kmeans_codes

    t = truth.to_pydict()
    row = {int(i): k for k, i in enumerate(t["item_id"])}
    ids = items.column("item_id").to_pylist()
    missing = [i for i in ids if int(i) not in row]
    if missing:
        raise ValueError(f"{len(missing)} catalogue items have no truth row (first: item_id {missing[0]})")
    collab = np.asarray([t["collab_latent"][row[int(i)]] for i in ids], dtype=np.float64)
    quality = np.asarray([t["quality"][row[int(i)]] for i in ids], dtype=np.float64)
    w = 1.0 if hidden else 0.0
    v = truth_vectors([t["topics"][row[int(i)]] or [] for i in ids], collab, quality, np.zeros(len(ids)), w, w, 0.0)
    # [topics | collab | quality | popularity (weight 0)]: keep the topics, and with `hidden` collab and quality
    emb = v[:, :-1] if hidden else v[:, : v.shape[1] - collab.shape[1] - 2]
    return item_features_table(items, emb, residual_kmeans_codes(emb, 3, codebook_size), TRUTH_VERSION)


def main(argv=None) -> int:
    from core.contracts import ITEM_FEATURES, ITEM_TRUTH, ITEMS
    from core.io import read_table, write_table
    from jobs.pipeline import load_config, ranker_train_kwargs
    from recsys.samples import SamplesConfig, run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a finished `sail run` directory of a generated world")
    p.add_argument("--config", default="demo", help="the run's config (its ranker section)")
    p.add_argument("--work", type=Path, default=Path("/tmp/sail_truth_features"))
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    truth_dir, data_dir = args.run_dir / "data" / "truth" / "item_truth", args.run_dir / "validate"
    if not truth_dir.exists() or not data_dir.exists():
        raise SystemExit(f"{args.run_dir}: needs data/truth/item_truth and validate/ (a generated-world run)")
    cfg = load_config(args.config)
    r, kw = cfg.ranker, ranker_train_kwargs(cfg)
    items, truth = read_table(data_dir / "items", ITEMS), read_table(truth_dir, ITEM_TRUTH)
    info = describe_machine("torch")
    rows = []
    for k, (name, hidden) in enumerate(FEATURE_SETS.items()):
        t0 = time.perf_counter()
        work = args.work / f"f{k}"
        write_table(truth_item_features(items, truth, hidden), ITEM_FEATURES, work / "item_features")
        samples = run(
            SamplesConfig(
                data_dir=data_dir,
                out_dir=work / "samples",
                item_features_dir=work / "item_features",
                model_version=TRUTH_VERSION,
                recent_len=r.recent_len,
                valid_days=r.valid_days,
                test_days=r.test_days,
            )
        )
        rows.append(control_vs_both(name, samples.ext_path, work / "ranker", kw, args.n_boot, started=t0))
    result = {
        "benchmark": "ranker_truth_features",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "run_dir": str(args.run_dir),
        "interaction": r.interaction,  # the ranker's, from the config's [ranker] section
        "n_boot": args.n_boot,
        "rows": rows,
    }
    write_results(args.out, result, markdown(rows, f"{args.run_dir} rebuilt with world-truth item features"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
