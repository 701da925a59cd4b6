"""Request and response bodies of the HTTP API.

Request models are built from the settings, so the OpenAPI spec states the limits the service
really enforces (k, beam width, query and history lengths) and clients or schemathesis can read
them. Requests are strict: ``"k": "10"`` is a type error, not a silent conversion.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from service.settings import Settings

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# Finite and inside float32, which is what vectors are stored as.
Component = Annotated[float, Field(allow_inf_nan=False, ge=-1e30, le=1e30)]


class _RetrieveBase(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="after")
    def _some_input(self):
        if not (self.query or "").strip() and not self.history:
            raise ValueError("give a non-empty query, a non-empty history, or both")
        return self


def retrieve_request_model(s: Settings) -> type[BaseModel]:
    return create_model(
        "RetrieveRequest",
        __base__=_RetrieveBase,
        query=(str | None, Field(None, max_length=s.max_query_chars, description="Text query.", examples=["wireless gaming mouse"])),
        history=(list[ItemId], Field(default_factory=list, max_length=s.max_history,
                                     description="Item ids the user interacted with, oldest first (newest last).")),
        k=(int, Field(10, ge=1, le=s.max_k, description="Items to return at most.")),
        beam_width=(int | None, Field(None, ge=1, le=s.max_beam_width,
                                      description=f"Beams; default max({s.beam_width}, k) capped at {s.max_beam_width}.")),
    )


class ItemOut(BaseModel):
    item_id: str
    score: float = Field(description="Log-probability of the item's SID under the decoder.")
    sid: str = Field(description="The item's semantic ID, codes joined by '-'.", examples=["12-301-7"])


class RetrieveResponse(BaseModel):
    items: list[ItemOut]
    index_version: str = Field(description="The index version the items and SIDs come from.")
    model_version: str = Field(description="The decoder version that generated the SIDs.")
    release: str = Field(description="The release (index, decoder) that answered; one release answers a whole request.")
    took_ms: float


class NewItem(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    item_id: ItemId
    title: str = Field("", max_length=2000, description="Item text; embedded with MiniLM when no vector is given.")
    popularity: float = Field(0.0, ge=0, allow_inf_nan=False, description="Orders items that share a SID (more popular first).")
    vector: list[Component] | None = Field(None, max_length=8192, description="Embedding, for indexes built from given vectors.")


def insert_request_model(s: Settings) -> type[BaseModel]:
    class InsertRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")

        items: list[NewItem] = Field(min_length=1, max_length=s.max_insert_items)

        @model_validator(mode="after")
        def _consistent(self):
            ids = [i.item_id for i in self.items]
            if len(set(ids)) != len(ids):
                raise ValueError("items: item ids must be unique within a request")
            with_vectors = sum(i.vector is not None for i in self.items)
            if with_vectors not in (0, len(self.items)):
                raise ValueError("items: give a vector for every item or for none")
            if not with_vectors and any(not i.title.strip() for i in self.items):
                raise ValueError("items: every item needs a title (or a vector)")
            return self

    return InsertRequest


class InsertedItem(BaseModel):
    item_id: str
    sid: str


class InsertResponse(BaseModel):
    index_version: str
    items: list[InsertedItem]
    new_sids: int
