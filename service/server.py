"""Running the app: in the foreground (``sa2crq serve``) or on a background thread (demo, tests)."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from service.app import create_app
from service.runtime import InsertItems
from service.settings import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings, insert_items: InsertItems | None = None) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM and runs the shutdown)."""
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings, insert_items), host=settings.host, port=settings.port, log_level=settings.log_level.lower())


class BackgroundServer:
    """The app on a uvicorn server in a daemon thread; ``url`` once started. Port 0 picks a free one."""

    def __init__(self, settings: Settings, insert_items: InsertItems | None = None, startup_timeout: float = 300.0):
        self.app = create_app(settings, insert_items)
        config = uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.startup_timeout = startup_timeout
        self._thread = threading.Thread(target=self.server.run, name="sa2crq-server", daemon=True)

    @property
    def runtime(self):
        return self.app.state.runtime

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the service failed to start (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the service did not start within {self.startup_timeout} s")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
