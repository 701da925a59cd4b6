"""The index in its forms: the artifact a build writes (``artifact``), the versions in Redis
(``redis_index``, key layout in ``keys``, a private server in ``embedded``), the compact
in-memory trie (``trie``) and the constrained-decoding kernel over it (``mask``); item
attributes and filters (``attributes``), a request's item mask (``item_mask``) and the snapshot
a replica serves (``snapshot``).

    from sidcore.index import RedisIndex, Trie, TrieMask, connect
    index = RedisIndex(connect())                       # --redis / SA2CRQ_REDIS_URL / embedded server
    index.publish(store, activate=True)
    trie, _ = index.load_trie()
    mask = TrieMask(trie, decoder.spec.vocab)
"""

from sidcore.index.artifact import IndexArtifact, load_index
from sidcore.index.attributes import Attributes, Condition, Filter
from sidcore.index.embedded import EmbeddedRedis, EmbeddedRedisError, connect, resolve_url, running_embedded
from sidcore.index.item_mask import ItemMask
from sidcore.index.keys import Keys, VersionKeys
from sidcore.index.mask import FINISHED, INVALID, TrieMask
from sidcore.index.redis_index import InsertResult, PublishResult, RedisIndex, UpdateResult, VersionInfo
from sidcore.index.snapshot import IndexSnapshot
from sidcore.index.trie import Trie

__all__ = [
    "FINISHED",
    "INVALID",
    "Attributes",
    "Condition",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "Filter",
    "IndexArtifact",
    "IndexSnapshot",
    "InsertResult",
    "ItemMask",
    "Keys",
    "PublishResult",
    "RedisIndex",
    "Trie",
    "TrieMask",
    "UpdateResult",
    "VersionInfo",
    "VersionKeys",
    "connect",
    "load_index",
    "resolve_url",
    "running_embedded",
]
