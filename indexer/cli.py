"""The offline commands of ``sa2crq`` (``data``, ``index``, ``decoder``): thin shells over the
indexer, the store and the Redis index. ``sa2crq.cli`` mounts them.

Bad input raises ``DataError`` (exit 2 with a one-line message naming the problem); nothing is written.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from indexer.collab import DEFAULT_VIEWS
from indexer.sarq import SARQConfig
from indexer.training.options import base_model_option, train_config, train_options
from model_store import Store


def _sizes(_ctx, _param, value: str | None):
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 256,512,1024, got {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter("codebook sizes must be positive integers")
    return sizes


def _budget(_ctx, _param, value: str | None):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected a number of nats (or one per checked layer), got {value!r}") from None
    return parts[0] if len(parts) == 1 else parts


def sarq_shape_options(f):
    """``--min-length`` and ``--max-group``, the SARQ rule's shape: one definition for ``index build``
    and ``eval``, so the two commands cannot drift apart."""
    d = SARQConfig()
    f = click.option("--max-group", type=click.IntRange(min=1), default=d.max_group,
                     help="SARQ: the most items a shortened SID may hold (default: no bound).")(f)
    return click.option("--min-length", type=click.IntRange(min=1), default=d.min_length, show_default=True, help="SARQ: the shortest SID.")(f)


def collab_views_option(f):
    """``--collab-views``: one definition for ``index build`` and ``eval``."""

    def parse(_ctx, _param, value: str) -> tuple[str, ...]:
        from indexer.collab import parse_views
        from sidcore.errors import DataError

        try:
            return parse_views(value)
        except DataError as e:
            raise click.BadParameter(str(e)) from None

    return click.option("--collab-views", callback=parse, default=",".join(DEFAULT_VIEWS), show_default=True, metavar="VIEW,...",
                        help="What the collaborative vectors say, one block each, concatenated: 'together' (items in the same histories), "
                             "'after' (items that come after the same items), 'before' (items followed by the same items; docs/indexing.md).")(f)


def _attributes(_ctx, _param, value: str | None):
    from sidcore.errors import DataError
    from sidcore.index.attributes import parse_attribute_option

    try:
        return parse_attribute_option(value or "")
    except DataError as e:
        raise click.BadParameter(str(e)) from None


def _names(_ctx, _param, value: str | None) -> tuple[str, ...]:
    names = tuple(v.strip() for v in (value or "").split(",") if v.strip())
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a name appears twice in {value!r}")
    return names


@click.group()
def data() -> None:
    """Data sets: generate synthetic catalogs, split training queries, shift histories one item back."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--items", "num_items", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--users", type=click.IntRange(min=0), default=0, show_default=True, help="Also write sequences.jsonl.")
@click.option("--dim", type=click.IntRange(min=0), default=0, show_default=True, help="Also write vectors.npy of this dimension.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth(out: Path, num_items: int, users: int, dim: int, seed: int) -> None:
    """Write a Zipf long-tail catalog (items.jsonl, optional sequences.jsonl, vectors.npy)."""
    from indexer.data.synthetic import SyntheticConfig, generate, write

    paths = write(generate(SyntheticConfig(num_items=num_items, dim=dim, seed=seed)), out, num_users=users, seed=seed)
    for name, p in paths.items():
        click.echo(f"{name}: {p}")


@data.command("split-queries")
@click.option("--data", "src", type=click.Path(path_type=Path), required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output BEIR folder (qrels/train.tsv + qrels/test.tsv).")
@click.option("--heldout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Share of the training queries held out as test cases.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_split_queries(src: Path, out: Path, heldout: float, seed: int) -> None:
    """Split a BEIR folder's training queries by query into train and test (e.g. scifact's claims,
    whose official test split is kept elsewhere); prints the output folder."""
    from indexer.data.splits import split_queries

    click.echo(split_queries(src, out, heldout, seed))


@data.command("drop-last")
@click.option("--data", "src", type=click.Path(path_type=Path), required=True, help="History folder (items.jsonl, sequences.jsonl).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output history folder.")
def data_drop_last(src: Path, out: Path) -> None:
    """Copy a history folder with the last item of every sequence dropped, so that an eval on it
    tests on the validation items (e.g. games, whose test items are kept elsewhere); prints the
    output folder."""
    from indexer.data.splits import drop_last

    click.echo(drop_last(src, out))


@click.group()
def index() -> None:
    """Build and inspect index versions; publish them to Redis and serve them."""


@index.command("build")
@click.option("--items", type=click.Path(path_type=Path), required=True, help="Items JSONL (item_id, title/text).")
@click.option("--interactions", type=click.Path(path_type=Path), help="sequences.jsonl or BEIR qrels .tsv for popularity.")
@click.option("--holdout-last", type=click.IntRange(min=0), default=0, show_default=True, help="Ignore the last N items of each sequence when counting popularity.")
@click.option("--method", type=click.Choice(["rq-kmeans", "rq-vae", "acrq", "sarq", "sa2crq", "acrq-kmeans", "sa2crq-kmeans"]), default="sa2crq", show_default=True)
@click.option("--codebook-sizes", callback=_sizes, help="Per-layer codebook sizes, e.g. 256,512,1024. Default: from the catalog "
              "(M, 2M, 4M with 2.5 items a last-layer codeword, at most 512,1024,2048, as on games and scifact).")
@click.option("--budget", callback=_budget, help="SARQ budget in nats (one, or one per checked layer); default: the median head-path information at each checked layer.")
@sarq_shape_options
@click.option("--direction", type=click.Choice(["dense-longer", "dense-shorter"]), default="dense-longer", show_default=True)
@click.option("--split-by", type=click.Choice(["interactions", "items"]), default="interactions", show_default=True)
@click.option("--head-share", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True)
@click.option("--extension", type=click.FloatRange(0, 4), default=None,
              help="ACRQ new codewords per layer, share of head size. Default: 0.25, more where the head is under a fifth of the catalog (docs/indexing.md).")
@click.option("--anchor-share", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="ACRQ's first stage fits on at least this share of the catalog, and on at least the last codebook's size: the head, "
                   "topped up with a seeded tail sample (0: the head alone where it is that large, as in the paper; docs/indexing.md).")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True, help="RQ-VAE epochs (per ACRQ stage).")
@click.option("--dedup", is_flag=True, help="TIGER-style collision suffix (fixed-length methods).")
@click.option("--collab-weight", type=click.FloatRange(min=0),
              help="Append this weight x collaborative vectors (--collab-views of the --interactions sequences, minus --holdout-last) "
                   "to the item embeddings. Default: 1 with a sequences file, else 0.")
@collab_views_option
@click.option("--vectors", type=click.Path(path_type=Path), help="Precomputed item vectors (.npy, rows in items order).")
@click.option("--attributes", "attributes", callback=_attributes, metavar="NAME[:KIND],...",
              help="Item fields requests can filter on; KIND is categorical, numeric or boolean (default: inferred from the values), "
                   "e.g. category,brand,price:numeric,available:boolean. Updatable later with `index set-attributes`.")
@click.option("--fields", "fields", callback=_names, default="title", show_default=True, metavar="NAME,...",
              help="Item fields stored with the index and returned on request (`fields` of /retrieve); '' for none.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--store", type=click.Path(path_type=Path), required=True, help="Artifact store directory.")
@click.option("--activate", is_flag=True, help="Make the new version the active index of the store.")
@click.option("--quiet", is_flag=True, help="No progress bars or table.")
def index_build(items, interactions, holdout_last, method, codebook_sizes, budget, min_length, direction, max_group, split_by,
                head_share, extension, anchor_share, epochs, dedup, collab_weight, collab_views, vectors, attributes, fields, seed, store, activate, quiet) -> None:
    """Build a new index version and print its id."""
    from indexer.build import BuildConfig, build_index
    from indexer.data.catalog import count_popularity, load_items, load_sequences, load_vectors
    from indexer.quantizers import QuantizerConfig
    from indexer.report import print_report
    from indexer.split import SplitConfig

    sequences = None
    if interactions and Path(interactions).suffix != ".tsv":
        sequences = [s[: len(s) - holdout_last] if holdout_last else s for s in load_sequences(interactions)]
    if collab_weight and not sequences:
        raise click.BadParameter("needs --interactions with a sequences JSONL (co-occurrences come from histories)", param_hint="--collab-weight")
    cfg = BuildConfig(
        method=method,
        quantizer=QuantizerConfig(sizes=codebook_sizes, seed=seed, epochs=epochs, extension=extension, anchor_share=anchor_share),
        sarq=SARQConfig(budget=budget, min_length=min_length, direction=direction, max_group=max_group),
        split=SplitConfig(by=split_by, head_share=head_share),
        dedup=dedup,
        collab_weight=(1.0 if sequences else 0.0) if collab_weight is None else collab_weight,
        collab_views=collab_views,
    )
    catalog = load_items(items, attributes, fields)
    if interactions:
        catalog = catalog.with_popularity(count_popularity(catalog, interactions, holdout_last))
    if vectors:
        catalog = catalog.with_vectors(load_vectors(vectors, len(catalog)))
    st = Store(store)
    version, report = build_index(catalog, cfg, st, progress=not quiet, sequences=sequences)
    if activate:
        st.activate("index", version)
    if not quiet:
        print_report(report, title=f"{method} {version}")
    click.echo(version)


@index.command("report")
@click.option("--store", type=click.Path(path_type=Path), required=True)
@click.option("--version", help="Default: the active version, else the newest.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def index_report(store: Path, version: str | None, as_json: bool) -> None:
    """Print the quality report of an index version."""
    from indexer.report import print_report

    st = Store(store)
    v = st.open(st.resolve("index", version), kind="index")
    report = v.json("report.json")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report, title=f"{v.manifest.config['method']} {v.id}")


def redis_option(f):
    return click.option(
        "--redis",
        "redis_url",
        metavar="URL",
        help="Redis URL (redis://host:6379/0, unix:///path/redis.sock). Default: $SA2CRQ_REDIS_URL, else an "
        "embedded redis-server started for this command only: its data is lost when the command exits.",
    )(f)


@contextmanager
def redis_index(url: str | None):
    """A RedisIndex on the chosen Redis; Redis failures become one-line errors."""
    import redis

    from sidcore.index import EmbeddedRedisError, RedisIndex, resolve_url, running_embedded

    try:
        resolved = resolve_url(url)
    except EmbeddedRedisError as e:
        raise click.ClickException(str(e)) from None
    if running_embedded():
        click.echo(f"started an embedded Redis at {resolved}; its data is discarded when this command exits", err=True)
    try:
        client = redis.Redis.from_url(resolved)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--redis / SA2CRQ_REDIS_URL") from None
    try:
        yield RedisIndex(client)
    except redis.RedisError as e:
        raise click.ClickException(f"Redis at {resolved}: {e}") from None
    finally:
        client.close()


@index.command("publish")
@click.option("--store", type=click.Path(path_type=Path), required=True, help="Artifact store directory.")
@click.option("--version", help="Store version to publish. Default: the store's active index, else its newest.")
@redis_option
@click.option("--activate", is_flag=True, help="Make it the active version once it is complete.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index_publish(store: Path, version: str | None, redis_url: str | None, activate: bool, quiet: bool) -> None:
    """Write an index version to Redis under its own namespace and print its id.

    The active version is untouched until the new one is complete and --activate flips to it; a
    failed or interrupted publish leaves a partial version that `index gc` removes.
    """
    with redis_index(redis_url) as idx:
        result = idx.publish(Store(store), version, activate=activate, progress=not quiet)
    if not quiet:
        done = f"published in {result.seconds:.1f} s" if result.published else "already published"
        click.echo(f"{done}: {result.num_sids} SIDs, {result.num_items} items{', active' if result.activated else ''}", err=True)
    click.echo(result.version)


@index.command("activate")
@click.argument("version")
@redis_option
def index_activate(version: str, redis_url: str | None) -> None:
    """Serve VERSION: one atomic flip of sa2crq:active, announced on sa2crq:events.

    With a release active, VERSION must fit its decoder (the same quantizer fingerprint); the pair
    becomes a release of its own. An index built with another quantizer is refused: publish it
    with its own decoder (`sa2crq release publish`) instead.
    """
    with redis_index(redis_url) as idx:
        previous = idx.activate(version)
    click.echo(f"active: {version} (was {previous or 'none'})")


@index.command("versions")
@redis_option
def index_versions(redis_url: str | None) -> None:
    """List index versions in Redis, oldest first; * marks the active one."""
    from datetime import datetime

    with redis_index(redis_url) as idx:
        infos = idx.versions()
    if not infos:
        click.echo("no index versions in Redis")
        return
    click.echo(f"  {'version':<40} {'state':<10} {'method':<10} {'SIDs':>9} {'items':>10}  published")
    for i in infos:
        when = datetime.fromtimestamp(i.published).strftime("%Y-%m-%d %H:%M:%S") if i.published else "-"
        click.echo(f"{'*' if i.active else ' '} {i.version:<40} {i.state:<10} {i.method or '-':<10} "
                   f"{i.num_sids if i.num_sids is not None else '-':>9} {i.num_items if i.num_items is not None else '-':>10}  {when}")


@index.command("gc")
@click.option("--keep", type=click.IntRange(min=0), required=True, help="Keep the N newest complete versions (the active one is always kept too).")
@redis_option
def index_gc(keep: int, redis_url: str | None) -> None:
    """Delete older and partial versions, unused decoders and their releases from Redis.

    Never the active version, one being published, the active release and the N before it, nor
    anything a live replica serves (replicas heartbeat what they serve).
    """
    with redis_index(redis_url) as idx:
        removed = idx.gc(keep)
    for v in removed:
        click.echo(f"removed {v}")
    click.echo(f"{len(removed)} version(s) removed", err=True)


@index.command("export-inserts")
@click.option("--version", help="Index version (default: the active one).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for items.jsonl (and vectors.npy).")
@redis_option
def index_export_inserts(version: str | None, out: Path, redis_url: str | None) -> None:
    """Write a version's cold-start items as an items JSONL (plus vectors.npy when they had vectors),
    to include in the next `index build`. (`release activate` also carries them over by itself.)"""
    from indexer.coldstart import inserted_catalog

    with redis_index(redis_url) as idx:
        version = idx.require_complete(version)
        found = inserted_catalog(idx, version)
    out.mkdir(parents=True, exist_ok=True)
    catalog, vectors = found if found is not None else (None, None)
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        for i, item in enumerate(catalog.item_ids if catalog else []):
            f.write(json.dumps({"item_id": item, "title": catalog.texts[i], "popularity": float(catalog.popularity[i])}) + "\n")
    if vectors is not None:
        np.save(out / "vectors.npy", vectors)
    click.echo(f"{len(catalog) if catalog else 0} cold-start item(s) of {version} in {out / 'items.jsonl'}", err=True)


@index.command("add-items")
@click.option("--items", type=click.Path(path_type=Path), required=True, help="New items JSONL (item_id, title/text, optional popularity).")
@click.option("--vectors", type=click.Path(path_type=Path), help="Their vectors (.npy, rows in items order); needed when the index was built from vectors.")
@redis_option
@click.option("--quiet", is_flag=True, help="No progress bar or per-item lines.")
def index_add_items(items: Path, vectors: Path | None, redis_url: str | None, quiet: bool) -> None:
    """Cold start: encode new items with the active version's frozen quantizer and insert them.

    Existing items keep their SIDs; new ones go to the end of their SID's list or make new SIDs.
    Item ids already in the index are refused.
    """
    from indexer.coldstart import add_items
    from indexer.data.catalog import load_items, load_vectors

    catalog = load_items(items)
    if vectors:
        catalog = catalog.with_vectors(load_vectors(vectors, len(catalog)))
    with redis_index(redis_url) as idx:
        result = add_items(idx, catalog, progress=not quiet)
    if not quiet:
        for item, sid in result.items:
            click.echo(f"{item}\t{'-'.join(map(str, sid))}")
    click.echo(f"added {len(result.items)} item(s) to {result.version}: {result.new_sids} new SID(s)", err=True)


@index.command("set-attributes")
@click.option("--items", type=click.Path(path_type=Path), required=True,
              help='JSONL of updates: item_id plus the attributes to set, null clears one: {"item_id": "1042", "available": false, "price": 17.5}.')
@click.option("--version", help="Index version to update. Default: the active one.")
@redis_option
def index_set_attributes(items: Path, version: str | None, redis_url: str | None) -> None:
    """Set attributes of items in place, without a rebuild (availability, prices change hourly).

    Every update is checked first (known item, declared attribute, value of its kind); then they are
    written 10,000 items per atomic step, each logged and announced, so serving replicas apply them
    within a second, as they do cold-start inserts.
    """
    from indexer.data.catalog import load_attribute_updates

    updates = load_attribute_updates(items)
    with redis_index(redis_url) as idx:
        result = idx.set_attributes(version, updates)
    click.echo(f"updated {result.items} item(s) of {result.version} (log entry {result.log_id})", err=True)


@click.group()
def release() -> None:
    """Releases: an index and the decoder trained for it, activated (and rolled back) together."""


@release.command("publish")
@click.option("--store", type=click.Path(path_type=Path), required=True, help="Artifact store directory.")
@click.option("--decoder", "decoder_version", help="Decoder version (default: the store's active decoder, else its newest).")
@click.option("--index-version", help="Index version (default: the one the decoder was trained for).")
@click.option("--name", help="Release name (default: release-<utc time>-<random>).")
@redis_option
@click.option("--activate", is_flag=True, help="Activate it once published (cold-start items are carried over).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def release_publish(store: Path, decoder_version: str | None, index_version: str | None, name: str | None,
                    redis_url: str | None, activate: bool, quiet: bool) -> None:
    """Publish a decoder and its index to Redis as a release and print its name.

    Refused (exit 2) when the decoder was trained for another quantizer than the index's: the
    message names both fingerprints.
    """
    from indexer.coldstart import activate_release

    with redis_index(redis_url) as idx:
        rel = idx.publish_release(Store(store), index_version, decoder_version, name, progress=not quiet)
        if activate:
            previous, carried = activate_release(idx, rel.name)
            click.echo(f"active: {rel.name} (was {previous.name if previous else 'none'}); {carried} cold-start item(s) carried over", err=True)
    click.echo(rel.name)


@release.command("activate")
@click.argument("name")
@redis_option
def release_activate(name: str, redis_url: str | None) -> None:
    """Serve release NAME: its index and its decoder flip together; replicas load the pair in the
    background and swap between batches. Cold-start items of the served index that NAME's index
    lacks are encoded with the new quantizer and carried over first."""
    from indexer.coldstart import activate_release

    with redis_index(redis_url) as idx:
        previous, carried = activate_release(idx, name)
    click.echo(f"active: {name} (was {previous.name if previous else 'none'}); {carried} cold-start item(s) carried over")


@release.command("rollback")
@redis_option
def release_rollback(redis_url: str | None) -> None:
    """Activate the release that was active before the current one."""
    from indexer.coldstart import rollback_release

    with redis_index(redis_url) as idx:
        current = idx.active_release()
        target, carried = rollback_release(idx)
    click.echo(f"active: {target.name} (was {current.name if current else 'none'}); {carried} cold-start item(s) carried over")


@release.command("list")
@redis_option
def release_list(redis_url: str | None) -> None:
    """Releases, oldest first; * marks the active one; and the replicas serving each."""
    from datetime import datetime

    with redis_index(redis_url) as idx:
        rels, active, live = idx.releases(), idx.active_release(), idx.live_replicas()
    if not rels:
        click.echo("no releases in Redis")
        return
    serving: dict[str, list[str]] = {}
    for replica, state in live.items():
        serving.setdefault(state.get("release"), []).append(replica)
    click.echo(f"  {'release':<36} {'index':<32} {'decoder':<34} {'fingerprint':<16}  created              replicas")
    for r in rels:
        when = datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M:%S")
        mark = "*" if active is not None and r.name == active.name else " "
        click.echo(f"{mark} {r.name:<36} {r.index_version:<32} {r.decoder_version:<34} {r.fingerprint:<16}  {when}  "
                   f"{','.join(sorted(serving.get(r.name, []))) or '-'}")


@click.group()
def decoder() -> None:
    """Train the Qwen3 decoder that maps queries and histories to SIDs."""


@decoder.command("train")
@click.option("--store", type=click.Path(path_type=Path), required=True, help="Artifact store directory.")
@click.option("--index-version", help="Index to train for. Default: the store's active index, else its newest.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with items.jsonl + sequences.jsonl, and/or a BEIR corpus.jsonl + queries.jsonl + qrels/train.tsv.")
@base_model_option
@train_options(epochs_flag="--epochs")
@click.option("--checkpoints", type=click.Path(path_type=Path),
              help="Checkpoint folder (one per epoch; an interrupted run resumes). Default: STORE/checkpoints/decoder-INDEX.")
@click.option("--restart", is_flag=True, help="Discard the checkpoints of an interrupted run instead of resuming it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Embedding cache (default: $SA2CRQ_CACHE_DIR or ~/.cache/sa2crq).")
@click.option("--activate", is_flag=True, help="Make the new version the active decoder of the store.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def decoder_train(store, index_version, data_dir, base_model, train_opts, checkpoints, restart, seed, cache_dir, activate, quiet) -> None:
    """Train a decoder for an index version and print the new decoder version id."""
    from indexer.training.trainer import train_decoder

    cfg = train_config(train_opts, seed, base_model is not None)
    st = Store(store)
    log = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    version, summary = train_decoder(st, data_dir, cfg, index_version=index_version, base_model=base_model, progress=not quiet,
                                     cache_dir=cache_dir, checkpoints=checkpoints, restart=restart, log=log)
    if activate:
        st.activate("decoder", version)
    if not quiet:
        click.echo(json.dumps(summary))
    click.echo(version)
