"""The subscribed trie: follows activations and inserts across processes, survives Redis outages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from indexer.coldstart import add_items
from service.sync import TrieSync
from sidcore.index import EmbeddedRedis, RedisIndex


def wait_for(condition, timeout: float = 10.0, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def own_server():
    """A server of this test's own, free to be stopped and restarted."""
    with EmbeddedRedis() as server:
        yield server


def test_sync_follows_activations_and_inserts(index, redis_url, small_store, artifact, renamed, new_items):
    with TrieSync(redis_url) as sync:
        assert not sync.wait_ready(0.3)  # nothing active yet
        assert wait_for(lambda: sync.state().connected)
        assert sync.trie is None and sync.state().version is None

        index.publish(small_store, activate=True, progress=False)
        assert sync.wait_ready(10)
        state = sync.state()
        assert (state.version, state.num_items, state.last_error) == (artifact.version, len(artifact.item_ids), None)
        assert state.num_sids == artifact.table().num_sids and state.last_sync is not None

        result = add_items(index, new_items(3, copy_of=(11,)), progress=False)
        wait_for(lambda: sync.trie.node_of_item("new-2") >= 0)
        for item, sid in result.items:
            assert sync.trie.sid_of(sync.trie.node_of_item(item)) == sid
        assert sync.state().num_items == len(artifact.item_ids) + 3

        other = renamed("next")
        index.publish_artifact(other, activate=True, progress=False)
        wait_for(lambda: sync.state().version == other.version)
        assert sync.trie.node_of_item("new-0") == -1  # inserts belonged to the previous version
        assert sync.state().num_items == len(artifact.item_ids)


def test_insert_by_another_process_is_visible_within_a_second(index, redis_url, small_store, new_items, items_file):
    index.publish(small_store, activate=True, progress=False)
    items, vectors = items_file(new_items(2, prefix="remote"))
    script = textwrap.dedent(f"""
        import time, redis
        from indexer.data.catalog import load_items, load_vectors
        from sidcore.index import RedisIndex
        from indexer.coldstart import add_items
        catalog = load_items({str(items)!r})
        catalog = catalog.with_vectors(load_vectors({str(vectors)!r}, len(catalog)))
        index = RedisIndex(redis.Redis.from_url({redis_url!r}))
        add_items(index, catalog, progress=False)
        print(time.time(), flush=True)
    """)
    with TrieSync(redis_url) as sync:
        assert sync.wait_ready(10)
        writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        wait_for(lambda: sync.trie.node_of_item("remote-1") >= 0, timeout=120, interval=0.001)
        seen = time.time()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    inserted = float(out.strip())
    assert seen - inserted < 1.0, f"visible {seen - inserted:.3f} s after the insert returned"
    assert sync.trie.node_of_item("remote-0") >= 0


def test_sync_serves_through_an_outage_and_recovers(own_server, small_store, artifact, new_items):
    index = RedisIndex(own_server.client())
    index.publish(small_store, activate=True, progress=False)
    with TrieSync(own_server.url, backoff=(0.05, 0.2)) as sync:
        assert sync.wait_ready(10)
        served = sync.trie

        own_server.stop(keep_data=True)
        wait_for(lambda: not sync.state().connected)
        state = sync.state()
        assert state.version == artifact.version and "unreachable" in state.last_error
        assert sync.trie is served and served.node_of_item(str(artifact.item_ids[0])) >= 0  # still serving

        own_server.start()
        wait_for(lambda: sync.state().connected)
        assert sync.state().last_error is None and sync.trie is served  # same version: nothing reloaded
        add_items(index, new_items(1), progress=False)
        wait_for(lambda: sync.trie.node_of_item("new-0") >= 0)


def test_resync_replays_inserts_and_flips_missed_while_disconnected(own_server, small_store, artifact, renamed, new_items):
    index = RedisIndex(own_server.client())
    index.publish(small_store, activate=True, progress=False)
    other = renamed("other")
    index.publish_artifact(other, progress=False)
    with TrieSync(own_server.url, backoff=(1.0, 1.0)) as sync:
        assert sync.wait_ready(10)

        # Drop the subscriber's connections; what happens before it is back is never delivered to it.
        assert index.r.client_kill_filter(_type="pubsub") >= 1
        add_items(index, new_items(2), progress=False)
        assert sync.trie.node_of_item("new-0") == -1
        wait_for(lambda: sync.trie.node_of_item("new-1") >= 0)  # replayed from the insert log

        index.r.client_kill_filter(_type="pubsub")
        index.activate(other.version)
        wait_for(lambda: sync.state().version == other.version)  # reloaded on reconnection
        assert sync.state().connected


def test_foreign_messages_on_the_channel_are_ignored(index, redis_url, small_store, new_items):
    index.publish(small_store, activate=True, progress=False)
    with TrieSync(redis_url) as sync:
        assert sync.wait_ready(10)
        for junk in ("not json", "42", '{"type": "insert"}', '["activate"]'):
            index.r.publish(index.keys.channel, junk)
        add_items(index, new_items(1), progress=False)
        wait_for(lambda: sync.trie.node_of_item("new-0") >= 0)
        assert sync.state().connected and sync.state().last_error is None
