"""A clearly-labelled stand-in for the SAIL feature export: content-only text vectors with residual k-means SIDs.

Until the SAIL model's ITEM_FEATURES export exists, the ranker experiments use this: TF-IDF of title + tags
(+ OCR / ASR text), reduced by truncated SVD to `dim` dimensions and L2-normalised, quantised into `levels`
semantic-ID levels by residual k-means. It carries no collaborative signal and no vision / audio. Rows are stamped
with event_timestamp = the item's created_ts (a content vector can be computed once the item is published) and
model_version STANDIN_VERSION, so every result built on it says so.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.contracts import ITEM_FEATURES, ITEMS
from core.io import read_table, write_table

STANDIN_VERSION = "standin-tfidf-svd-v0"


def residual_kmeans_codes(x: np.ndarray, levels: int, codebook_size: int, seed: int = 0) -> np.ndarray:
    """(N, levels) int32 codes: level l clusters the residual left by levels < l."""
    from sklearn.cluster import KMeans

    resid = x.astype(np.float64).copy()
    codes = np.zeros((x.shape[0], levels), dtype=np.int32)
    for level in range(levels):
        k = min(codebook_size, x.shape[0])
        km = KMeans(n_clusters=k, n_init=1, random_state=seed + level, max_iter=100).fit(resid)
        codes[:, level] = km.labels_
        resid -= km.cluster_centers_[km.labels_]
    return codes


def text_vectors(items: pa.Table, dim: int, seed: int = 0) -> np.ndarray:
    """(N, dim) float32 L2-normalised TF-IDF + SVD vectors of title, tags, OCR and ASR text."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    cols = items.to_pydict()
    docs = [
        " ".join([t, " ".join(tags), o or "", a or ""])
        for t, tags, o, a in zip(cols["title"], cols["tags"], cols["ocr_text"], cols["asr_text"], strict=True)
    ]
    tfidf = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(docs)
    k = max(1, min(dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1))
    z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf)
    if k < dim:
        z = np.pad(z, ((0, 0), (0, dim - k)))
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z.astype(np.float32)


def build_standin_features(
    items: pa.Table, dim: int = 32, levels: int = 3, codebook_size: int = 32, seed: int = 0
) -> pa.Table:
    """ITEM_FEATURES rows of the stand-in for every catalogue item."""
    emb = text_vectors(items, dim, seed)
    return item_features_table(items, emb, residual_kmeans_codes(emb, levels, codebook_size, seed), STANDIN_VERSION)


def item_features_table(items: pa.Table, emb: np.ndarray, codes: np.ndarray, version: str) -> pa.Table:
    """ITEM_FEATURES rows for `items` (row i: emb[i], codes[i]) under `version`, each valid from the item's
    creation (a content vector exists once the item is published)."""
    n = items.num_rows
    return pa.table(
        {
            "item_id": items.column("item_id"),
            "embedding": pa.array(list(emb), type=pa.list_(pa.float32())),
            "semantic_ids": pa.array(list(codes), type=pa.list_(pa.int32())),
            "model_version": pa.array([version] * n),
            "event_timestamp": items.column("created_ts"),
            "created": pa.array([dt.datetime.now(dt.UTC)] * n, type=pa.timestamp("us", tz="UTC")),
        }
    )


def write_standin_features(
    data_dir: Path, out_dir: Path, dim: int = 32, levels: int = 3, codebook_size: int = 32
) -> int:
    """Reads data_dir/items, writes the stand-in ITEM_FEATURES table to out_dir; returns its rows."""
    items = read_table(data_dir / "items", ITEMS)
    return write_table(build_standin_features(items, dim, levels, codebook_size), ITEM_FEATURES, out_dir)
