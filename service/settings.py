"""Service settings: environment variables with the ``SA2CRQ_`` prefix, or a ``.env`` file.

Every field is listed in the settings table of docs/service.md; ``python -m service.settings``
prints that table from this class, and a test keeps the two equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SA2CRQ_", env_file=".env", extra="ignore", frozen=True)

    store: Path = Field(Path("demo/store"), description="Embedded mode only: the artifact store whose decoder and index are published into the embedded Redis as the release served.")
    decoder_version: str | None = Field(None, description="Embedded mode only: the store's decoder version to serve; default: its active decoder.")
    redis_url: str | None = Field(None, description="Redis holding the releases (index versions and decoders); empty: embedded mode, "
                                                     "a private Redis started with the service.")
    release: str | None = Field(None, description="Pin this replica to a release (canaries, A/B tests); default: follow the active release.")
    replica_id: str | None = Field(None, description="Name this replica heartbeats under (gc keeps what replicas serve); default: host-pid.")
    cache_dir: Path | None = Field(None, description="Where decoders fetched from Redis are kept (verified); default: a temporary folder.")
    redis_prefix: str = Field("sa2crq", description="Key prefix of the index in Redis.")
    engine: Literal["torch", "vllm"] = Field("torch", description="Decoding engine: torch (CPU default) or vllm.")
    device: str = Field("cpu", description="Torch engine device (cpu, cuda, cuda:1, ...).")
    torch_threads: int | None = Field(None, ge=1, description="Intra-op threads of the torch engine; default: torch's choice.")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM engine: share of GPU memory it may take.")
    host: str = Field("127.0.0.1", description="Bind address of `sa2crq serve`.")
    port: int = Field(8000, ge=0, le=65535, description="Port of `sa2crq serve` (0: any free port).")
    beam_width: int = Field(20, ge=1, description="Beams when a request gives none (raised to k, up to max_beam_width).")
    max_beam_width: int = Field(128, ge=1, description="Widest beam a request may ask for.")
    fused_beams_per_item: int = Field(4, ge=1, description="Beams per requested item for a request the decoder's item head re-ranks "
                                                         "(up to max_beam_width): its candidates, of which the head picks k; "
                                                         "more cost proportionally more decoding (docs/decoder.md).")
    head_proposals_per_item: int = Field(1, ge=0, description="Items the item head proposes per requested item beside the beams, for a "
                                                               "request it re-ranks: the head's best items whose SIDs the beams missed, "
                                                               "each SID scored by the decoder (0: the beams' items alone; docs/decoder.md).")
    length_penalty: float | None = Field(None, ge=0, allow_inf_nan=False,
                                         description="SID scores divided by (length + 1) ** this (0: plain sums of log-probabilities; "
                                                     "above 0 lifts long, dense-region SIDs); default: the decoder's own, chosen on its "
                                                     "validation cases at training (docs/decoder.md).")
    item_weight: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="History requests (and text requests, where the decoder's head was trained on "
                                                  "text prompts too) rank their decoded SIDs' items by SID score + this x the "
                                                  "decoder's next-item head logit (0: SID scores alone); default: the decoder's own, "
                                                  "chosen on its validation cases at training (docs/decoder.md).")
    item_prior: float | None = Field(None, ge=0, allow_inf_nan=False,
                                     description="The item head's logits, where they rank and propose items, lowered by this x each "
                                                 "item's log share of the training interactions (0: none; above 0 answers less "
                                                 "popular items); default: the decoder's own, chosen on its validation cases at "
                                                 "training (docs/decoder.md).")
    max_k: int = Field(1000, ge=1, description="Largest k a request may ask for.")
    max_query_chars: int = Field(2000, ge=1, description="Longest text query accepted.")
    max_history: int = Field(500, ge=1, description="Longest history accepted (the prompt keeps the newest items).")
    max_body_bytes: int = Field(8 << 20, ge=1024, description="Largest request body accepted; beyond it: 413.")
    max_exclude_ids: int = Field(1000, ge=0, description="Most item ids a request may exclude (`exclude_ids`).")
    max_batch_requests: int = Field(64, ge=1, description="Requests per POST /v1/retrieve/batch call at most (and at most queue_size).")
    max_batch: int = Field(16, ge=1, description="Requests decoded together at most (those queued behind a running batch; "
                                                 "an idle engine takes a request at once).")
    queue_size: int = Field(256, ge=1, description="Requests waiting at most; beyond it: 429 with Retry-After.")
    concurrent_batches: int = Field(1, ge=1, description="Batches decoded at once (more helps vLLM on a GPU; 1 suits the CPU).")
    request_timeout_s: float = Field(10.0, gt=0, description="A request not answered within it gets 503 with Retry-After.")
    filter_cache_mb: float = Field(256.0, ge=0, description="Memory for cached filter masks (per filter ~14 MB on a 1M-item trie); "
                                                             "a repeated filter then costs nothing.")
    api_key: SecretStr | None = Field(None, description="API key of the read routes (retrieve, batch, item and SID lookups), "
                                                         "sent as header X-API-Key; unset: they are open.")
    admin_token: SecretStr | None = Field(None, description="Bearer token of the admin routes (POST /v1/items, POST /v1/attributes); "
                                                             "unset: they are disabled (403).")
    max_insert_items: int = Field(1000, ge=1, description="Items per POST /v1/items call at most.")
    max_attribute_updates: int = Field(10_000, ge=1, description="Items per POST /v1/attributes call at most.")
    stats_window_s: float = Field(60.0, gt=0, description="Sliding window of GET /stats.")
    ready_timeout_s: float = Field(60.0, gt=0, description="How long start-up waits for the first release to load.")
    log_level: str = Field("info", description="Log level of the service and uvicorn.")

    @field_validator("admin_token", "api_key", mode="after")
    @classmethod
    def _blank_token_is_no_token(cls, v: SecretStr | None) -> SecretStr | None:
        # An empty secret must not turn into "the empty token is valid".
        return v if v is not None and v.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.beam_width > self.max_beam_width:
            raise ValueError(f"beam_width ({self.beam_width}) exceeds max_beam_width ({self.max_beam_width})")
        return self


def settings_table() -> str:
    """The settings table of docs/service.md (markdown)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = "" if f.default is None else f"`{f.default}`"
        rows.append(f"| `SA2CRQ_{name.upper()}` | {default} | {f.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
