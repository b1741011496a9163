"""Does a run's item embedding group the items that share a background sound or an author, as the world's content does?

In the generated world (`data.collab_in_content` > 0) items share sounds and authors' visual styles, and a sound's
or a style's latent is part of its items' collaborative latent (`truth/item_signals`). For each finished run given,
this probe reports the share of every item's 10 nearest neighbours (cosine) that share its sound / its author, for

- the run's exported SAIL + CRE embedding (`embed/item_embeddings`);
- a fixed audio feature: each item's log-mel spectrogram averaged over time (mean and standard deviation per mel
  band, standardised over the catalogue) — no training at all;

against chance (the share of all other items that share it). A trained embedding at chance on sounds, while the
fixed feature is above it, does not read the sound its audio carries.

    python benchmarks/signal_neighbours.py runs/demo [more run directories]

Writes benchmarks/results/signal_neighbours.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "signal_neighbours.json"
K = 10
SIGNALS = ("sound_id", "author_id")


def neighbour_share(vectors: np.ndarray, labels: np.ndarray, k: int = K) -> float:
    """The share of each row's k nearest other rows by cosine that carry its label, averaged over rows."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def chance_share(labels: np.ndarray) -> float:
    """The share of all other rows that carry a row's label, averaged over rows (ordered pairs of equal labels)."""
    counts = np.unique(labels, return_counts=True)[1].astype(np.float64)
    n = len(labels)
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def mel_features(run_dir: Path, items) -> tuple[np.ndarray, dict[str, int]]:
    """(n, 2M) per-item [mean | std] of the log-mel spectrogram over time, standardised per column (0 for an item
    without readable audio), and the media counts (decoded, skipped by reason) of the preprocessor that read them."""
    from embedding.config import PreprocessConfig
    from embedding.preprocess import Preprocessor

    cfg = PreprocessConfig()
    pre = Preprocessor(cfg, run_dir / "data" / "media")
    out = np.zeros((len(items), 2 * cfg.n_mels), np.float32)
    for i, ref in enumerate(items["audio_path"]):
        audio = pre.audio({"audio_path": ref})
        if audio is not None:
            chunks = audio[0].float()  # (C, M, T)
            out[i] = np.concatenate([chunks.mean(dim=(0, 2)).numpy(), chunks.std(dim=(0, 2)).numpy()])
    return (out - out.mean(0)) / (out.std(0) + 1e-6), pre.stats.as_dict()


def run_row(run_dir: Path) -> dict:
    import pyarrow.parquet as pq

    signals = pq.read_table(run_dir / "data" / "truth" / "item_signals").to_pandas()
    emb = pq.read_table(run_dir / "embed" / "item_embeddings", columns=["item_id", "embedding"]).to_pandas()
    items = pq.read_table(run_dir / "data" / "items", columns=["item_id", "audio_path"]).to_pandas()
    m = signals.merge(emb, on="item_id").merge(items, on="item_id")
    if m.empty:
        raise SystemExit(f"{run_dir}: no item has both truth signals and an exported embedding")
    mel, media = mel_features(run_dir, m)
    features = {"SAIL + CRE": np.stack(m["embedding"].to_numpy()).astype(np.float32), "log-mel mean/std": mel}
    run = json.loads((run_dir / "run.json").read_text())
    row = {
        "run_dir": str(run_dir),
        "code": run["code"],
        "collab_in_content": run["config"]["data"]["collab_in_content"],
        "items": len(m),
        "audio": media,
        "k": K,
    }
    for signal in SIGNALS:
        labels = m[signal].to_numpy()
        row[signal] = {name: neighbour_share(x, labels) for name, x in features.items()}
        row[signal]["chance"] = chance_share(labels)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        f"# Items sharing a sound / an author among each item's {K} nearest neighbours (cosine)",
        "",
        "| run | knob | items | sound: SAIL + CRE / log-mel / chance | author: SAIL + CRE / log-mel / chance |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            " / ".join(f"{100 * r[s][c]:.1f}%" for c in ("SAIL + CRE", "log-mel mean/std", "chance")) for s in SIGNALS
        ]
        commit = str(r["code"].get("commit", "?"))[:7]
        lines.append(
            f"| {r['run_dir']} ({commit}) | {r['collab_in_content']:g} | {r['items']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "log-mel: each item's log-mel spectrogram averaged over time (mean and std per band), no training.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished `sail run` directories of a generated world")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = [run_row(r.resolve()) for r in args.runs]
    payload = {"benchmark": "signal_neighbours", "machine": describe_machine(), "runs": rows}
    write_results(args.out, payload, markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
