"""`sa2crq serve`: the service in the foreground, settings from SA2CRQ_* / .env, flags on top."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from model_store import Store, StoreError


@click.command("serve")
@click.option("--store", type=click.Path(path_type=Path), help="Artifact store [SA2CRQ_STORE].")
@click.option("--redis", "redis_url", help="Redis URL of the index [SA2CRQ_REDIS_URL]; default: embedded.")
@click.option("--engine", type=click.Choice(["torch", "vllm"]), help="Decoding engine [SA2CRQ_ENGINE].")
@click.option("--device", help="Torch engine device [SA2CRQ_DEVICE].")
@click.option("--host", help="Bind address [SA2CRQ_HOST].")
@click.option("--port", type=int, help="Port [SA2CRQ_PORT].")
def serve_cmd(**flags) -> None:
    """Serve POST /retrieve (and /items, /healthz, /readyz, /metrics, /stats, /docs) until interrupted.

    Every setting is an SA2CRQ_* environment variable (see the README's table); flags override them.
    """
    from service.server import serve
    from service.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise click.UsageError("invalid settings:\n" + "\n".join(f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    try:
        Store(settings.store).resolve("decoder", settings.decoder_version)
    except StoreError as e:
        raise click.UsageError(f"{e} (run `sa2crq demo` or `sa2crq decoder train` first, or set SA2CRQ_STORE)")
    serve(settings)
