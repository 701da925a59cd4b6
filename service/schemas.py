"""Request and response bodies of the HTTP API (also the typed answers of ``sa2crq.client``).

Request models are built from the settings, so the OpenAPI spec states the limits the service
really enforces (k, beam width, query, history, exclusion and batch lengths) and clients or
schemathesis can read them. Requests are strict: ``"k": "10"`` is a type error, not a silent
conversion.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, WithJsonSchema, create_model, model_validator

from service.settings import Settings

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# Finite and inside float32, which is what vectors are stored as.
Component = Annotated[float, Field(allow_inf_nan=False, ge=-1e30, le=1e30)]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Number = Annotated[float, Field(allow_inf_nan=False)]
# sidcore.index.attributes.MAX_CATEGORICAL_CHARS; not imported, so that sa2crq.client, which
# uses these models, does not pull in the core (and torch). A test keeps the two equal.
MAX_VALUE_CHARS = 256
# bool before int: JSON true is a bool, never the number 1.
Scalar = StrictBool | StrictInt | Number | Annotated[str, StringConstraints(min_length=1, max_length=MAX_VALUE_CHARS)]

MAX_CONDITIONS = 32
"""Conditions per ``must`` / ``must_not`` list at most."""
MAX_ANY_VALUES = 1024
"""Values of one ``any`` condition at most."""
MAX_FIELDS = 32
"""Stored fields one request may ask for at most."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Range(_Strict):
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None

    @model_validator(mode="after")
    def _some_bound(self):
        if not self.bounds():
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self

    def bounds(self) -> tuple[tuple[str, float], ...]:
        return tuple((op, getattr(self, op)) for op in ("gt", "gte", "lt", "lte") if getattr(self, op) is not None)


class Condition(_Strict):
    """One test of one attribute: give exactly one of ``value``, ``any`` or ``range``."""

    field: FieldName = Field(description="An attribute of the served index, e.g. category, price, available.")
    value: Scalar | None = Field(None, description="Equals this (a string, number or boolean, as the attribute's kind).")
    any: list[Scalar] | None = Field(None, min_length=1, max_length=MAX_ANY_VALUES, description="Equals one of these.")
    range: Range | None = Field(None, description="Numbers only: gt, gte, lt, lte.")

    @model_validator(mode="after")
    def _one_test(self):
        given = [name for name in ("value", "any", "range") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a condition takes exactly one of value, any, range; got {', '.join(given) or 'none'}")
        return self



class Filter(_Strict):
    """Keep items where every ``must`` condition matches and no ``must_not`` condition does. An item
    without a value for an attribute matches no condition on it."""

    must: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    must_not: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)


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
                                      description=f"Beams; default max({s.beam_width}, k), or max({s.beam_width}, 2k) for a request "
                                                  f"the item head re-ranks, capped at {s.max_beam_width}.")),
        exclude_history=(bool, Field(True, description="Leave the history's items out of the answer.")),
        exclude_ids=(list[ItemId], Field(default_factory=list, max_length=s.max_exclude_ids,
                                         description="Item ids to leave out (ids the index does not hold are ignored).")),
        filter=(Filter | None, Field(None, description="Only items whose attributes pass it.")),
        fields=(list[FieldName] | None, Field(None, max_length=MAX_FIELDS,
                                              description="Stored item fields to return with each item, e.g. [\"title\"].")),
    )


class ItemOut(BaseModel):
    item_id: str
    score: float = Field(description="What ranked the item: the log-probability of its SID under the decoder, plus, for a "
                                     "history request of a decoder with an item weight, that weight times its next-item head logit.")
    sid: str = Field(description="The item's semantic ID, codes joined by '-'.", examples=["12-301-7"])
    fields: dict[str, Any] | None = Field(None, description="The requested stored fields (present only when `fields` was "
                                                             "asked for; null when the index stores none for the item or Redis is unreachable).")


class RetrieveResponse(BaseModel):
    items: list[ItemOut]
    index_version: str = Field(description="The index version the items and SIDs come from.")
    model_version: str = Field(description="The decoder version that generated the SIDs.")
    release: str = Field(description="The release (index, decoder) that answered; one release answers a whole request.")
    took_ms: float
    reason: str | None = Field(None, description="Why fewer than k items came back, when the filter and exclusions explain it.")
    warnings: list[str] = Field(default_factory=list, description="What the answer lacks, e.g. fields while Redis is unreachable.")


def batch_request_model(s: Settings) -> type[BaseModel]:
    limit = min(s.max_batch_requests, s.queue_size)
    # Entries are checked one by one in the handler, so a bad entry gets its own error instead of
    # failing the batch; the spec still describes them as RetrieveRequest.
    entry = Annotated[dict[str, Any], WithJsonSchema({"$ref": "#/components/schemas/RetrieveRequest"})]
    return create_model(
        "RetrieveBatchRequest",
        __base__=_Strict,
        requests=(list[entry], Field(min_length=1, max_length=limit, description=f"Up to {limit} retrieve requests.")),
    )


class BatchEntry(BaseModel):
    status: int = Field(description="What POST /v1/retrieve would have answered for this entry: 200, 422, 503, ...")
    response: RetrieveResponse | None = Field(None, description="The answer, when status is 200.")
    detail: Any = Field(None, description="The error, as in an error answer's body, otherwise.")
    retry_after: int | None = Field(None, description="Seconds to wait before retrying it (statuses 429 and 503).")


class RetrieveBatchResponse(BaseModel):
    results: list[BatchEntry] = Field(description="One per request, in order.")
    took_ms: float


class ItemInfo(BaseModel):
    item_id: str
    sid: str
    index_version: str
    attributes: dict[str, Any] = Field(description="The item's attributes that have a value.")
    fields: dict[str, Any] | None = Field(description="Its stored fields; null when there are none or Redis is unreachable.")
    warnings: list[str] = Field(default_factory=list)


class SidInfo(BaseModel):
    sid: str
    index_version: str
    num_items: int
    items: list[str] = Field(description="Its items, most popular first (cold-start items last), up to `limit`.")


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
            if with_vectors and len({len(i.vector) for i in self.items}) > 1:
                raise ValueError("items: every vector needs the same length")
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


class AttributeUpdate(_Strict):
    item_id: ItemId
    attributes: dict[FieldName, Scalar | None] = Field(min_length=1, max_length=64,
                                                       description="New values; null clears one. Names must be declared attributes of the index.")


def attributes_request_model(s: Settings) -> type[BaseModel]:
    class AttributesRequest(_Strict):
        items: list[AttributeUpdate] = Field(min_length=1, max_length=s.max_attribute_updates)

        @model_validator(mode="after")
        def _unique(self):
            ids = [i.item_id for i in self.items]
            if len(set(ids)) != len(ids):
                raise ValueError("items: item ids must be unique within a request")
            return self

    return AttributesRequest


class AttributesResponse(BaseModel):
    index_version: str
    updated: int
    log_id: str = Field(description="The version's log entry of the (last chunk of the) update.")
