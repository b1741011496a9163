"""Writes the `shop` example: a small purchase log with product photos, shaped like a real retailer's export.

    python examples/shop/make_shop.py            # rewrites articles.csv, transactions.csv and images/ here

The files are committed; this script only documents how they were made (seeded, so it rewrites them identically).
They look like what a retailer exports, not like the pipeline's contracts:

- `articles.csv`: article_id as text with leading zeros, prod_name, product_type_name, colour_group_name,
  detail_desc, and image (a path under images/, empty for articles without a photo);
- `transactions.csv`: t_dat (a calendar day, no time), customer_id (a 16-character hex hash), article_id, price.
  It holds purchases only: no impressions, no negatives;
- `images/`: 32 x 32 PNG photos for about two thirds of the articles (the colour and a pattern of the type).

Customers have a taste for a few product types and colours and buy mostly within it, so co-purchase carries
structure that the titles only partly show.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
TYPES = ["T-shirt", "Trousers", "Dress", "Sweater", "Jacket", "Shorts", "Skirt", "Socks"]
COLOURS = {
    "Black": (20, 20, 20),
    "White": (240, 240, 240),
    "Dark Blue": (20, 40, 110),
    "Light Pink": (245, 190, 200),
    "Beige": (220, 200, 160),
    "Dark Green": (20, 90, 40),
}
FABRIC = ["cotton", "jersey", "wool blend", "denim", "linen"]
FIT = ["regular fit", "relaxed fit", "slim fit", "oversized"]
N_ARTICLES, N_CUSTOMERS, DAYS, START = 180, 260, 70, dt.date(2024, 3, 1)


def _photo(colour: tuple[int, int, int], kind: int, rng: np.random.Generator) -> Image.Image:
    img = np.zeros((32, 32, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    stripe = 3 + kind  # the product type shows as a stripe pattern
    img[:, ::stripe] = np.clip(img[:, ::stripe].astype(int) + 40, 0, 255).astype(np.uint8)
    noise = rng.integers(-12, 13, size=img.shape)
    return Image.fromarray(np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8))


def main() -> None:
    rng = np.random.default_rng(2024)
    (HERE / "images").mkdir(exist_ok=True)
    articles = []
    for k in range(N_ARTICLES):
        t, c = int(rng.integers(len(TYPES))), int(rng.integers(len(COLOURS)))
        colour = list(COLOURS)[c]
        aid = f"0{108775015 + 7919 * k:09d}"
        fabric, fit = FABRIC[int(rng.integers(len(FABRIC)))], FIT[int(rng.integers(len(FIT)))]
        name = f"{fit.split()[0].title()} {TYPES[t].lower()}"
        image = ""
        if rng.random() < 0.67:
            image = f"images/{aid[:3]}/{aid}.png"
            (HERE / image).parent.mkdir(parents=True, exist_ok=True)
            _photo(COLOURS[colour], t, rng).save(HERE / image)
        desc = f"{TYPES[t]} in {fabric}, {fit}." + (" Soft brushed inside." if rng.random() < 0.3 else "")
        articles.append(
            {
                "article_id": aid,
                "prod_name": name,
                "product_type_name": TYPES[t],
                "colour_group_name": colour,
                "detail_desc": desc,
                "image": image,
                "_type": t,
                "_colour": c,
                "_launch": int(rng.integers(0, DAYS - 10)) if k % 5 == 0 else 0,
            }
        )
    with open(HERE / "articles.csv", "w", newline="") as f:
        w = csv.DictWriter(f, [k for k in articles[0] if not k.startswith("_")], extrasaction="ignore")
        w.writeheader()
        w.writerows(articles)

    types = np.array([a["_type"] for a in articles])
    colours = np.array([a["_colour"] for a in articles])
    launch = np.array([a["_launch"] for a in articles])
    rows = []
    for u in range(N_CUSTOMERS):
        cid = hashlib.sha256(f"customer-{u}".encode()).hexdigest()[:16]
        like_t = rng.choice(len(TYPES), size=2, replace=False)
        like_c = rng.choice(len(COLOURS), size=2, replace=False)
        affinity = 0.2 + 2.0 * np.isin(types, like_t) + 1.5 * np.isin(colours, like_c)
        for _ in range(int(rng.integers(1, 6))):  # shopping trips
            day = int(rng.integers(0, DAYS))
            avail = launch <= day
            p = np.where(avail, affinity, 0.0)
            n = min(int(rng.integers(1, 5)), int(avail.sum()))
            for a in rng.choice(N_ARTICLES, size=n, replace=False, p=p / p.sum()):
                price = round(float(rng.choice([9.99, 14.99, 19.99, 29.99, 49.99])), 2)
                rows.append(((START + dt.timedelta(days=day)).isoformat(), cid, articles[a]["article_id"], price))
    rows.sort()
    with open(HERE / "transactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_dat", "customer_id", "article_id", "price"])
        w.writerows(rows)
    print(f"{len(articles)} articles ({sum(bool(a['image']) for a in articles)} with a photo), {len(rows)} purchases")


if __name__ == "__main__":
    main()
