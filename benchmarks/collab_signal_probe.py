"""How much of the generated world's collaborative latent do its audio and frames show, as `collab_in_content` grows?

For the `small` world (seed 7) at each rho in --rhos, the media of a fixed random sample of items (the same items
at every rho) are rendered in memory with `render_media` (nothing is written), and a ridge probe is fitted from
simple hand-made features to each item's collaborative latent (`Catalogue.collab_latent`, 8 dims):

- audio: per mel bin, the mean and the standard deviation over time of the log-mel spectrogram that the embedding
  model's front end computes (`embedding.preprocess.log_mel_chunks`: 8 kHz, 32 mel bins, 20 ms hop), first chunk;
- frames: over the cover and every frame, the mean RGB of the outer 2-pixel border and of the pixel ring inside it
  (where the author's style mark is drawn), a 4x4x4 colour histogram of those 3 pixels of border, and one of the
  whole image;
- audio + frames together;
- text: TF-IDF of the titles, and of titles + OCR + ASR + tags (which must show nothing of the latent);
- truth: the latent's part that the sound and style carry, sqrt(rho / 2) * (sound latent + style latent) (the
  ceiling of any content feature: its R^2 is about rho).

R^2 is 5-fold cross-validated (shuffled folds, the same at every rho), averaged over the 8 latent dimensions, of a
ridge regression on standardised features whose penalty is chosen inside each training fold (RidgeCV). Also
reported: how much of the sound latent the audio features recover, and of the author style latent the frame
features recover (what the signatures encode, whatever rho).

The default sample is 1500 items (about 80 s per rho on 2 cores): with 600, the probe's estimation error on ~200
features eats a large part of the R^2 at small rho (the figures grow with the sample up to what the signatures
encode; see the last table).

    .venv/bin/python benchmarks/collab_signal_probe.py [--rhos 0,0.25,0.5,0.75] [--sample 1500] [--seed 7]

Writes benchmarks/results/collab_signal_probe.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.machine import describe_machine, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "collab_signal_probe.json"
ALPHAS = np.logspace(-2, 4, 13)
BORDER_PX = 2


def probe_r2(x, y: np.ndarray, seed: int = 0) -> float:
    """Mean 5-fold cross-validated R^2 (averaged over y's columns) of a ridge regression of y on standardised x."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = x.toarray() if hasattr(x, "toarray") else x  # RidgeCV's leave-one-out path is far faster on dense input
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    folds = KFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(model, x, y, cv=folds, scoring="r2").mean())


@lru_cache(maxsize=1)
def _mel_bank() -> np.ndarray:
    """(n_fft // 2 + 1, n_mels): the embedding model's mel filters."""
    from embedding.config import PreprocessConfig
    from embedding.preprocess import mel_filterbank

    cfg = PreprocessConfig()
    return mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate).numpy().astype(np.float64)


def audio_features(wav: bytes) -> np.ndarray:
    """(64,) mean and standard deviation over time of each log-mel bin of the first 10 s, computed as the
    embedding model's front end does (`embedding.preprocess.log_mel_chunks`: Hann 256, hop 160, 32 HTK mel bins),
    in numpy (the 8 kHz clips need no resampling)."""
    from embedding.config import PreprocessConfig
    from embedding.preprocess import decode_wav

    cfg = PreprocessConfig()
    samples, rate = decode_wav(wav)
    if rate != cfg.sample_rate:
        raise ValueError(f"expected {cfg.sample_rate} Hz audio, got {rate}")
    x = np.pad(samples[: cfg.chunk_samples].astype(np.float64), cfg.n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft)[:: cfg.hop_length]  # (T, n_fft)
    power = np.abs(np.fft.rfft(frames * np.hanning(cfg.n_fft + 1)[:-1], axis=1)) ** 2  # (T, n_freq), periodic Hann
    log_mel = np.log(power @ _mel_bank() + 1e-6)  # (T, M)
    return np.concatenate([log_mel.mean(axis=0), log_mel.std(axis=0)])


def _histogram(px: np.ndarray) -> np.ndarray:
    """(64,) share of pixels in each cell of a 4x4x4 RGB grid; px: (n, 3) uint8."""
    q = px.astype(np.int64) // 64
    return np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / len(px)


def frame_features(images: list[bytes]) -> np.ndarray:
    """(3 + 3 + 64 + 64,) averaged over the images: mean RGB of the outer 2-pixel border and of the pixel ring inside
    it (where the style mark is drawn), a colour histogram of those 3 pixels of border, and one of the whole image."""
    from PIL import Image

    rows = []
    for data in images:
        px = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        y, x = np.mgrid[0 : px.shape[0], 0 : px.shape[1]]
        edge = np.minimum(np.minimum(y, x), np.minimum(px.shape[0] - 1 - y, px.shape[1] - 1 - x))
        outer, ring = px[edge < BORDER_PX], px[edge == BORDER_PX]
        rows.append(
            np.concatenate(
                [
                    outer.mean(axis=0) / 255.0,
                    ring.mean(axis=0) / 255.0,
                    _histogram(px[edge <= BORDER_PX]),
                    _histogram(px.reshape(-1, 3)),
                ]
            )
        )
    return np.mean(rows, axis=0)


def rho_row(size: str, seed: int, rho: float, sample: np.ndarray) -> dict:
    """Features of the sampled items of the world at `rho` and every probe's R^2."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from sources.world import WorldConfig
    from sources.world.catalogue import build_catalogue, item_texts
    from sources.world.media import render_media

    cfg = WorldConfig.for_size(size, seed=seed, collab_in_content=rho)
    t0 = time.perf_counter()
    cat = build_catalogue(cfg)
    audio, frames = [], []
    for idx in sample.tolist():
        m = render_media(cfg, cat, idx)
        audio.append(audio_features(m["audio"]))
        frames.append(frame_features([m["cover"], *m["frames"]]))
    render_s = time.perf_counter() - t0
    a, f = np.array(audio), np.array(frames)
    y = cat.collab_latent[sample].astype(np.float64)
    sound = cat.sound_latent[cat.sound_id[sample] - 1].astype(np.float64)
    style = cat.style_latent[cat.author_id[sample] - 1].astype(np.float64)
    texts = item_texts(cfg, cat)
    titles = [texts["title"][i] for i in sample.tolist()]
    all_text = [
        " ".join([texts["title"][i], texts["ocr_text"][i] or "", texts["asr_text"][i] or "", *texts["tags"][i]])
        for i in sample.tolist()
    ]
    row = {
        "collab_in_content": rho,
        "r2": {
            "audio": probe_r2(a, y, seed),
            "frames": probe_r2(f, y, seed),
            "audio + frames": probe_r2(np.hstack([a, f]), y, seed),
            "title TF-IDF": probe_r2(TfidfVectorizer().fit_transform(titles), y, seed),
            "title + OCR + ASR + tags TF-IDF": probe_r2(TfidfVectorizer().fit_transform(all_text), y, seed),
            "truth: sound + style latents (ceiling)": probe_r2(np.sqrt(rho / 2) * (sound + style), y, seed)
            if rho > 0
            else 0.0,
        },
        "signature_r2": {
            "audio -> sound latent": probe_r2(a, sound, seed),
            "frames -> author style latent": probe_r2(f, style, seed),
        },
        "render_and_feature_seconds": round(render_s, 1),
    }
    print(f"rho={rho}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["r2"].items()), flush=True)
    return row


def markdown(result: dict) -> str:
    cols = list(result["rows"][0]["r2"])
    sig_cols = list(result["rows"][0]["signature_r2"])
    out = [
        "# Collaborative signal in the generated world's media, by `collab_in_content`",
        "",
        f"`{result['size']}` world, seed {result['seed']}, {result['sample']} sampled items (media rendered in memory)."
        " Held-out R^2 of a ridge probe (5-fold CV, mean over the 8 latent dimensions) of each item's collaborative"
        " latent; the ceiling is the probe from the truth part that sounds and styles carry (about rho).",
        "",
        "| rho | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in result["rows"]:
        out.append(f"| {r['collab_in_content']} | " + " | ".join(f"{r['r2'][c]:.3f}" for c in cols) + " |")
    out += [
        "",
        "What the signatures encode (R^2 of the sound latent from audio features, of the author style latent from"
        " frame features; at rho = 0 the media carry no signature):",
        "",
        "| rho | " + " | ".join(sig_cols) + " |",
        "|---|" + "---|" * len(sig_cols),
    ]
    for r in result["rows"]:
        out.append(
            f"| {r['collab_in_content']} | " + " | ".join(f"{r['signature_r2'][c]:.3f}" for c in sig_cols) + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", help="world preset")
    p.add_argument("--seed", type=int, default=7, help="world seed (also the sample's and the folds' seed)")
    p.add_argument("--rhos", default="0,0.25,0.5,0.75", help="comma-separated collab_in_content values")
    p.add_argument("--sample", type=int, default=1500, help="items whose media are rendered and probed")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from sources.world import WorldConfig

    n_items = WorldConfig.for_size(args.size, seed=args.seed).n_items
    sample = np.sort(np.random.default_rng(args.seed).choice(n_items, min(args.sample, n_items), replace=False))
    t0 = time.perf_counter()
    rows = [rho_row(args.size, args.seed, float(r), sample) for r in args.rhos.split(",")]
    result = {
        "benchmark": "collab_signal_probe",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine("numpy", "sklearn", "PIL", "torch"),
        "size": args.size,
        "seed": args.seed,
        "sample": len(sample),
        "n_sounds": WorldConfig.for_size(args.size, seed=args.seed).sound_count,
        "probe": "RidgeCV (alphas 1e-2..1e4) on standardised features, 5-fold shuffled KFold, R^2 averaged over dims",
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
