"""The online side: the Redis index, its in-memory trie and decode mask, and (later) the HTTP service."""
