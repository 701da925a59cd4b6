"""The served index: versions in Redis, a compact in-memory trie kept in sync, and the decode mask.

    from service.index import RedisIndex, TrieSync, TrieMask, SIDVocab, connect
    index = RedisIndex(connect())             # --redis / SA2CRQ_REDIS_URL / embedded server
    index.publish(Store("store"), activate=True)
    sync = TrieSync().start(); sync.wait_ready(30)
    mask = TrieMask(sync.trie, SIDVocab(sync.trie.sizes, base=first_sid_token_id))
"""

from service.index.coldstart import InsertResult, add_items, frozen_quantizer
from service.index.embedded import EmbeddedRedis, EmbeddedRedisError, connect, resolve_url, running_embedded
from service.index.keys import Keys, VersionKeys
from service.index.mask import FINISHED, INVALID, SIDVocab, TrieMask
from service.index.redis_index import PublishResult, RedisIndex, VersionInfo
from service.index.sync import SyncState, TrieSync
from service.index.trie import Trie

__all__ = [
    "FINISHED",
    "INVALID",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "InsertResult",
    "Keys",
    "PublishResult",
    "RedisIndex",
    "SIDVocab",
    "SyncState",
    "Trie",
    "TrieMask",
    "TrieSync",
    "VersionInfo",
    "VersionKeys",
    "add_items",
    "connect",
    "frozen_quantizer",
    "resolve_url",
    "running_embedded",
]
