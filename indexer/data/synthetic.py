"""A seedable long-tail catalog: hierarchical topics, Zipf popularity, readable titles, vectors.

Popularity is Zipf both across leaf topics and within a topic, so whole niches are tail, as in
real catalogs; that is what makes head and tail regions of the embedding space differ in density.
Vectors (optional) follow the topic tree: category centre + subcategory offset + leaf offset +
item noise, L2-normalised, so quantizers see the same hierarchy the titles express.
Items also carry catalog attributes to filter on: ``category`` and ``brand`` (the ones in the
title), a ``price`` (log-normal, by product type) and ``available`` (90% in stock); they come from
their own random stream, so adding them changed no title, popularity or vector.
Everything is vectorised; a million items take a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.data.catalog import Catalog
from sidcore.errors import DataError
from sidcore.index.attributes import Attributes

CATEGORIES = {
    "Kitchen": ["Skillet", "Kettle", "Blender", "Knife Set", "Cutting Board", "Toaster", "Mixing Bowl", "Spatula"],
    "Garden": ["Hose", "Pruner", "Planter", "Trowel", "Sprinkler", "Rake", "Seed Kit", "Wheelbarrow"],
    "Electronics": ["Headphones", "Charger", "Speaker", "Webcam", "Keyboard", "Mouse", "Monitor", "Router"],
    "Toys": ["Puzzle", "Building Blocks", "Plush Bear", "Race Car", "Doll House", "Kite", "Yo-Yo", "Robot Kit"],
    "Sports": ["Yoga Mat", "Dumbbell", "Tennis Racket", "Soccer Ball", "Jump Rope", "Water Bottle", "Helmet", "Gloves"],
    "Books": ["Cookbook", "Novel", "Atlas", "Field Guide", "Biography", "Workbook", "Comic", "Dictionary"],
    "Beauty": ["Shampoo", "Face Cream", "Lipstick", "Hair Dryer", "Nail Kit", "Perfume", "Sunscreen", "Brush Set"],
    "Automotive": ["Car Wax", "Floor Mats", "Jump Starter", "Tire Gauge", "Seat Cover", "Wiper Blades", "Dash Cam", "Air Filter"],
    "Office": ["Stapler", "Notebook", "Desk Lamp", "Pen Set", "Binder", "Label Maker", "Whiteboard", "Paper Shredder"],
    "Pets": ["Dog Leash", "Cat Tree", "Pet Bed", "Chew Toy", "Litter Box", "Aquarium", "Bird Feeder", "Grooming Brush"],
    "Games": ["Board Game", "Controller", "Card Deck", "Chess Set", "Game Console", "Dice Set", "Arcade Stick", "VR Headset"],
    "Scientific": ["Microscope", "Beaker Set", "Multimeter", "Lab Scale", "Filament Spool", "Soldering Iron", "Caliper", "Test Tubes"],
}
ADJECTIVES = [
    "Compact", "Deluxe", "Portable", "Classic", "Wireless", "Heavy-Duty", "Eco", "Premium", "Mini", "Pro",
    "Vintage", "Smart", "Ergonomic", "Foldable", "Rechargeable", "Stainless", "Waterproof", "Lightweight",
    "Digital", "Handmade", "Adjustable", "Magnetic", "Modular", "Organic",
]
COLORS = ["Black", "White", "Red", "Blue", "Green", "Silver", "Walnut", "Graphite", "Teal", "Amber"]
_SYLLABLES = ["ka", "lo", "vi", "tra", "mon", "zen", "pix", "ora", "nu", "bel", "qua", "rix", "sol", "tek", "fa", "dor"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of a generated catalog.

    Args:
        num_items: catalog size.
        subtopics: leaf topics per (category, product type) pair; leaves = 12 * 8 * subtopics.
        zipf_topic: Zipf exponent of popularity across leaf topics (bigger = more skewed niches).
        zipf_item: Zipf exponent of popularity within a leaf topic.
        interactions_per_item: mean interactions, sets the scale of the popularity counts.
        dim: vector dimension; 0 generates no vectors (text is embedded instead).
        seed: everything is a function of it.
    """

    num_items: int = 10_000
    subtopics: int = 4
    zipf_topic: float = 1.1
    zipf_item: float = 1.0
    interactions_per_item: float = 20.0
    dim: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise DataError("num_items must be positive")
        if self.subtopics < 1 or self.dim < 0 or self.interactions_per_item <= 0:
            raise DataError("subtopics >= 1, dim >= 0 and interactions_per_item > 0 are required")


ATTRIBUTES = (("category", "categorical"), ("brand", "categorical"), ("price", "numeric"), ("available", "boolean"))
"""The attributes ``write`` puts in items.jsonl, as ``sa2crq index build --attributes`` declares them."""


@dataclass(frozen=True)
class SyntheticCatalog:
    catalog: Catalog
    leaf: np.ndarray  # leaf topic per item
    leaf_weight: np.ndarray  # popularity share of each leaf topic
    attributes: dict[str, list]  # ATTRIBUTES' values per item

    def with_attributes(self) -> Catalog:
        """The catalog with its ``ATTRIBUTES`` and a ``title`` payload, as ``load_items`` reads
        ``write``'s items.jsonl with ``--attributes category,brand,price,available --fields title``."""
        rows = [dict(zip(self.attributes, values)) for values in zip(*self.attributes.values())]
        payload = tuple({"title": t} for t in self.catalog.texts)
        return dataclasses.replace(self.catalog, attributes=Attributes.from_values(ATTRIBUTES, rows), payload=payload)


def _brands(rng: np.random.Generator, n: int) -> list[str]:
    parts = rng.integers(0, len(_SYLLABLES), size=(n, 2))
    return ["".join(_SYLLABLES[a] + _SYLLABLES[b]).capitalize() for a, b in parts]


def generate(cfg: SyntheticConfig) -> SyntheticCatalog:
    rng = np.random.default_rng(cfg.seed)
    cats = list(CATEGORIES)
    n_types = len(CATEGORIES[cats[0]])
    n_leaves = len(cats) * n_types * cfg.subtopics
    leaf_cat = np.arange(n_leaves) // (n_types * cfg.subtopics)
    leaf_type = (np.arange(n_leaves) // cfg.subtopics) % n_types

    # Items spread over leaves in proportion to a mild Zipf, so popular niches also hold more items.
    leaf_weight = 1.0 / np.arange(1, n_leaves + 1) ** cfg.zipf_topic
    leaf_weight = rng.permutation(leaf_weight / leaf_weight.sum())
    size_share = np.sqrt(leaf_weight) / np.sqrt(leaf_weight).sum()
    leaf = rng.choice(n_leaves, size=cfg.num_items, p=size_share)
    order = np.argsort(leaf, kind="stable")
    leaf = leaf[order]
    starts = np.searchsorted(leaf, np.arange(n_leaves))
    rank_in_leaf = np.arange(cfg.num_items) - starts[leaf]
    score = leaf_weight[leaf] / (rank_in_leaf + 1.0) ** cfg.zipf_item
    popularity = rng.multinomial(int(cfg.interactions_per_item * cfg.num_items), score / score.sum())

    brands = _brands(rng, n_leaves * 3)
    brand = rng.integers(0, 3, size=cfg.num_items) + 3 * leaf
    adj = rng.integers(0, len(ADJECTIVES), size=cfg.num_items)
    color = rng.integers(0, len(COLORS), size=cfg.num_items)
    model_no = rng.integers(100, 1000, size=cfg.num_items)
    texts = [
        f"{brands[b]} {ADJECTIVES[a]} {CATEGORIES[cats[c]][t]} {m} - {COLORS[k]} - {cats[c]}"
        for b, a, c, t, m, k in zip(
            brand, adj, leaf_cat[leaf], leaf_type[leaf], model_no, color, strict=True
        )
    ]

    vectors = None
    if cfg.dim:
        d = cfg.dim
        cat_c = rng.normal(size=(len(cats), d))
        type_c = cat_c[np.arange(len(cats) * n_types) // n_types] + 0.6 * rng.normal(size=(len(cats) * n_types, d))
        leaf_c = type_c[np.arange(n_leaves) // cfg.subtopics] + 0.35 * rng.normal(size=(n_leaves, d))
        vectors = (leaf_c[leaf] + 0.2 * rng.normal(size=(cfg.num_items, d))).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    # A stream of its own: drawing these from ``rng`` would have changed everything above.
    extra = np.random.default_rng([cfg.seed, 1])
    type_price = np.exp(extra.uniform(np.log(5), np.log(500), size=len(cats) * n_types))
    price = np.round(type_price[leaf_cat[leaf] * n_types + leaf_type[leaf]] * extra.lognormal(0, 0.35, cfg.num_items), 2)
    attributes = {
        "category": [cats[c] for c in leaf_cat[leaf]],
        "brand": [brands[b] for b in brand],
        "price": price.tolist(),
        "available": (extra.random(cfg.num_items) < 0.9).tolist(),
    }

    ids = [str(i) for i in range(cfg.num_items)]
    catalog = Catalog(ids, texts, popularity.astype(np.float64), vectors)
    return SyntheticCatalog(catalog=catalog, leaf=leaf, leaf_weight=leaf_weight, attributes=attributes)


def sample_sequences(
    synth: SyntheticCatalog, num_users: int, seed: int = 0, min_len: int = 5, max_len: int = 15
) -> list[list[str]]:
    """User histories that stay within a category, drawn by popularity (oldest first)."""
    rng = np.random.default_rng(seed)
    cat = synth.catalog
    pop = cat.popularity + 1.0
    leaf = synth.leaf
    n_leaves = len(synth.leaf_weight)
    starts = np.searchsorted(leaf, np.arange(n_leaves + 1))
    user_leaf = rng.choice(n_leaves, size=num_users, p=synth.leaf_weight)
    out = []
    for u_leaf in user_leaf:
        # Users drift to neighbouring leaves of the same product type now and then.
        length = int(rng.integers(min_len, max_len + 1))
        leaves = np.where(rng.random(length) < 0.7, u_leaf, u_leaf ^ 1)
        leaves = np.clip(leaves, 0, n_leaves - 1)
        seq = []
        for lf in leaves:
            lo, hi = starts[lf], starts[lf + 1]
            if hi == lo:
                continue
            p = pop[lo:hi] / pop[lo:hi].sum()
            seq.append(cat.item_ids[lo + int(rng.choice(hi - lo, p=p))])
        if len(seq) >= 2:
            out.append(seq)
    return out


def write(synth: SyntheticCatalog, out: str | Path, num_users: int = 0, seed: int = 0) -> dict[str, Path]:
    """Write items.jsonl (+ vectors.npy, sequences.jsonl) in the layouts the loaders read; items
    carry their title and the ``ATTRIBUTES``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cat = synth.catalog
    paths = {"items": out / "items.jsonl"}
    names = [name for name, _ in ATTRIBUTES]
    with open(paths["items"], "w", encoding="utf-8") as f:
        for i, (item, text) in enumerate(zip(cat.item_ids, cat.texts, strict=True)):
            row = {"item_id": int(item), "title": text, **{n: synth.attributes[n][i] for n in names}}
            f.write(json.dumps(row) + "\n")
    if cat.vectors is not None:
        paths["vectors"] = out / "vectors.npy"
        np.save(paths["vectors"], cat.vectors)
    if num_users:
        paths["sequences"] = out / "sequences.jsonl"
        with open(paths["sequences"], "w", encoding="utf-8") as f:
            for u, seq in enumerate(sample_sequences(synth, num_users, seed=seed)):
                f.write(json.dumps({"user_id": u, "item_ids": [int(i) for i in seq]}) + "\n")
    return paths
