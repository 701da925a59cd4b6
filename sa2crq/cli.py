"""``sa2crq``: the command line. A thin shell: the offline groups come from ``indexer.cli`` and
``indexer.evaluation.cli``; ``serve`` and ``demo`` join the wings here.

Bad input exits with status 2 and a one-line message naming the problem; nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from indexer.cli import data, decoder, index, release
from indexer.evaluation.cli import eval_cmd
from indexer.training.options import train_config, train_options
from model_store import Store, StoreError
from sidcore.errors import DataError, UnavailableError

TORCH_HINT = (
    "PyTorch is not installed: pip install -c requirements.lock torch "
    "(the CPU build; off our machines add --extra-index-url https://download.pytorch.org/whl/cpu)"
)


def _version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    click.echo(f"sa2crq {of('sa2crq')} (torch {of('torch')}, transformers {of('transformers')}, Python {platform.python_version()})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version, help="Show the version and exit.")
def cli() -> None:
    """SA²CRQ generative retrieval: build variable-length semantic IDs, publish, serve."""


cli.add_command(data)
cli.add_command(index)
cli.add_command(decoder)
cli.add_command(release)
cli.add_command(eval_cmd, "eval")


@cli.command("serve")
@click.option("--store", type=click.Path(path_type=Path), help="Artifact store [SA2CRQ_STORE].")
@click.option("--redis", "redis_url", help="Redis URL of the index [SA2CRQ_REDIS_URL]; default: embedded.")
@click.option("--engine", type=click.Choice(["torch", "vllm"]), help="Decoding engine [SA2CRQ_ENGINE].")
@click.option("--device", help="Torch engine device [SA2CRQ_DEVICE].")
@click.option("--host", help="Bind address [SA2CRQ_HOST].")
@click.option("--port", type=int, help="Port [SA2CRQ_PORT].")
def serve_cmd(**flags) -> None:
    """Serve POST /retrieve (and /items, /healthz, /readyz, /metrics, /stats, /docs) until interrupted.

    Every setting is an SA2CRQ_* environment variable (see docs/service.md); flags override them.
    """
    from sa2crq.wiring import insert_items
    from service.server import serve
    from service.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise click.UsageError("invalid settings:\n" + "\n".join(f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    if not settings.redis_url:  # embedded mode serves the store's decoder; with Redis, releases come from there
        try:
            Store(settings.store).resolve("decoder", settings.decoder_version)
        except StoreError as e:
            raise click.UsageError(f"{e} (run `sa2crq demo` or `sa2crq decoder train` first, set SA2CRQ_STORE, "
                                   "or serve the releases of a Redis with SA2CRQ_REDIS_URL)")
    serve(settings, insert_items)


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo"), show_default=True)
@click.option("--items", "num_items", type=click.IntRange(min=1000), default=10_000, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Quantizer training epochs per stage.")
@train_options()
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--redis", "redis_url", help="Also publish the index to this Redis and activate it (the compose/k8s indexer job).")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Start the service and send sample requests.")
@click.option("--keep-serving", is_flag=True, help="Keep the service up after the samples, until Ctrl-C.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Service port (0: any free port).")
def demo(workdir: Path, num_items: int, epochs: int, train_opts: dict, seed: int, redis_url: str | None, serve: bool, keep_serving: bool,
         port: int) -> None:
    """Main job on embedded defaults: catalog → SA²CRQ index → tiny decoder → service → sample answers."""
    from sa2crq.demo import run_demo

    run_demo(workdir, num_items, epochs, train_config(train_opts, seed), seed, redis_url, serve, keep_serving, port)


def main(args: list[str] | None = None) -> None:
    """The ``sa2crq`` command (``args``: the command line after the program name; None: sys.argv)."""
    try:
        cli.main(args=args, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (DataError, StoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except UnavailableError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        click.echo(f"error: {TORCH_HINT}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
