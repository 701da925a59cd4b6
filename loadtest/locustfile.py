"""Locust load for ``POST /v1/retrieve``: a mix of text queries and user histories from the served catalog.

The mix (``mix.py``): titles, a few words of a title, users' recent histories, and both; ``k``
and the beam width drawn per request. Requests go through ``sa2crq.client`` (one ``Client`` per
user, no retries: a 429 counts as a failure here), timed as Locust requests. Every answer is
checked against the API contract (status 200, at most ``k`` items each with an id and a SID,
versions present); anything else is a failure.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --data-dir demo/data
    loadtest/run.sh URL USERS SECONDS [DATA_DIR]          # headless, with a summary

Options (besides Locust's): ``--data-dir`` (env SA2CRQ_LOADTEST_DATA), ``--k-values 5,10,20,50``,
``--beam-widths default,20,32`` (``default`` sends none), ``--mix query=35,words=15,history=35,both=15``,
``--max-history 20``, ``--seed 0``.
"""

from __future__ import annotations

import itertools
import os
import time

import httpx
from locust import User, constant, events, task
from mix import DEFAULT_MIX, Catalog, RequestMix, beam_list, check_answer, int_list, parse_mix

from sa2crq.client import Client, ServiceError


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--data-dir", default=os.environ.get("SA2CRQ_LOADTEST_DATA", "demo/data"),
                        help="Folder with items.jsonl (item_id or _id; title and/or text) and sequences.jsonl (item_ids).")
    parser.add_argument("--k-values", default="5,10,20,50", help="k of each request, drawn uniformly from this list.")
    parser.add_argument("--beam-widths", default="default,20,32",
                        help="beam_width of each request, drawn uniformly; 'default' leaves it to the service.")
    parser.add_argument("--mix", default=DEFAULT_MIX, help="Relative weights of the request kinds query, words, history, both.")
    parser.add_argument("--max-history", type=int, default=20, help="Longest history sent.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the request streams (user n uses seed*1000003+n).")


_catalog: Catalog | None = None
_user_numbers = itertools.count()


@events.init.add_listener
def _load(environment, **_kwargs) -> None:
    global _catalog
    opts = environment.parsed_options
    if opts is not None:  # None when an Environment is built by hand; nothing to load then
        _catalog = Catalog(opts.data_dir, opts.max_history)


class ContractBroken(Exception):
    """An answer that breaks the API contract (``check_answer``)."""


class RetrieveUser(User):
    """Sends requests back to back (closed loop): the number of users sets the concurrency."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.mix = RequestMix(_catalog, int_list(opts.k_values), beam_list(opts.beam_widths), parse_mix(opts.mix),
                              seed=opts.seed * 1_000_003 + next(_user_numbers))
        self.client = Client(self.host, retries=0, timeout=60)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def retrieve(self) -> None:
        kind, body = self.mix.next()
        started = time.perf_counter()
        problem: Exception | None = None
        items = 0
        try:
            answer = self.client.retrieve(**body)
            items = len(answer.items)
            if why := check_answer(body, 200, answer.model_dump()):
                problem = ContractBroken(why)
        except ServiceError as e:
            problem = ContractBroken(f"status {e.status}: {str(e.detail)[:200]}")
        except httpx.HTTPError as e:
            problem = e
        self.environment.events.request.fire(
            request_type="POST", name=f"/v1/retrieve [{kind}]", response_time=(time.perf_counter() - started) * 1000,
            response_length=items, exception=problem, context={},
        )  # fmt: skip
