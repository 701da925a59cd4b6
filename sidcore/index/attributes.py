"""Item attributes and the filters that test them, as compact columns over a trie's item rows.

Attributes are declared when an index is built (``AttributeSpec``: a name and a kind), filled from
catalog fields, stored with the index version in Redis and updated there without a rebuild
(availability and prices change hourly). In memory, and byte for byte in Redis, each attribute is
one fixed-width little-endian column over the item rows, with a value meaning "missing":

    kind          column   missing   a value
    categorical   int32    -1        its code: an index into ``Column.values`` (strings)
    numeric       float64  NaN       the number (finite)
    boolean       int8     -1        0 or 1

so a replica loads a column with one GET and ``np.frombuffer``, and a filter is a few vectorised
comparisons. A column per attribute rather than a Redis bitmap per value: a brand attribute with
10k values over 1M items would take 10k bitmaps of 125 kB each.

A ``Filter`` keeps an item when every ``must`` condition matches and no ``must_not`` condition
does. A condition tests one attribute: ``eq`` (one value), ``any`` (one of several values) or
``range`` (numbers: ``gt``, ``gte``, ``lt``, ``lte``). A missing value matches no condition: it
fails ``must`` and passes ``must_not``. A categorical value the index has never seen matches no item.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sidcore.errors import DataError

KINDS = ("categorical", "numeric", "boolean")
DTYPES = {"categorical": np.dtype("<i4"), "numeric": np.dtype("<f8"), "boolean": np.dtype("i1")}
MISSING = {"categorical": -1, "numeric": np.nan, "boolean": -1}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_CATEGORICAL_CHARS = 256
"""Longest categorical value accepted (a brand, a category path)."""

Scalar = str | bool | int | float


class FilterError(DataError):
    """A filter the served index cannot evaluate; ``path`` locates the culprit inside the filter,
    e.g. ``("must", 0, "field")``, so the HTTP layer can name it."""

    def __init__(self, path: tuple, msg: str):
        super().__init__(msg)
        self.path = path


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    kind: str

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DataError(f"attribute name {self.name!r} must be a letter or _ followed by letters, digits or _ (64 at most)")
        if self.kind not in KINDS:
            raise DataError(f"attribute {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.kind]


def parse_attribute_option(text: str) -> list[tuple[str, str | None]]:
    """``"category,brand,price:numeric"`` -> [(name, kind or None: infer it from the values)]."""
    out: list[tuple[str, str | None]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, kind = part.partition(":")
        AttributeSpec(name.strip(), kind.strip() or "categorical")  # validates both
        out.append((name.strip(), kind.strip() or None))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise DataError(f"an attribute is declared twice in {text!r}")
    return out


def kind_of(value: Any) -> str | None:
    """The attribute kind a JSON value suggests (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "numeric"
    if isinstance(value, str):
        return "categorical"
    raise DataError(f"attribute values must be strings, numbers or booleans, got {type(value).__name__}")


def check_value(spec: AttributeSpec, value: Any) -> Any:
    """``value`` if it fits ``spec`` (None = missing), else DataError naming the attribute."""
    if value is None:
        return None
    ok = {
        "categorical": isinstance(value, str) and 0 < len(value) <= MAX_CATEGORICAL_CHARS,
        "numeric": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "boolean": isinstance(value, bool),
    }[spec.kind]
    if not ok:
        want = {"categorical": f"a non-empty string of at most {MAX_CATEGORICAL_CHARS} characters",
                "numeric": "a finite number", "boolean": "true or false"}[spec.kind]
        raise DataError(f"attribute {spec.name!r} is {spec.kind}: expected {want}, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Column:
    """One attribute over item rows; ``values`` are a categorical column's codes' strings."""

    spec: AttributeSpec
    data: np.ndarray  # [I] of spec.dtype, see the module docstring
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.data.dtype != self.spec.dtype or self.data.ndim != 1:
            raise DataError(f"attribute {self.spec.name!r}: column must be 1-D {self.spec.dtype}, got {self.data.dtype}")
        if self.spec.kind != "categorical" and self.values:
            raise DataError(f"attribute {self.spec.name!r}: only categorical columns have values")
        self.data.flags.writeable = False

    @classmethod
    def from_values(cls, spec: AttributeSpec, raw: Sequence[Any]) -> "Column":
        """From one Python value per row (None = missing); categorical codes in order of first use."""
        data = np.full(len(raw), MISSING[spec.kind], dtype=spec.dtype)
        values: dict[str, int] = {}
        for row, v in enumerate(raw):
            v = check_value(spec, v)
            if v is None:
                continue
            if spec.kind == "categorical":
                data[row] = values.setdefault(v, len(values))
            else:
                data[row] = v
        return cls(spec, data, tuple(values))

    @property
    def name(self) -> str:
        return self.spec.name

    def value(self, row: int) -> Scalar | None:
        x = self.data[row]
        if self.spec.kind == "numeric":
            return None if np.isnan(x) else float(x)
        if x < 0:
            return None
        return self.values[x] if self.spec.kind == "categorical" else bool(x)

    def code(self, value: str) -> int:
        """A categorical value's code, -1 if the index has never seen it."""
        return self._codes.get(value, -1)

    @cached_property
    def _codes(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.values)}

    def matches(self, cond: "Condition") -> np.ndarray:
        """Bool [I]: rows whose value matches ``cond`` (missing values never do)."""
        x = self.data
        if cond.op == "range":
            ok = ~np.isnan(x)
            for op, bound in cond.bounds:
                ok &= {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}[op](x, bound)
            return ok
        if self.spec.kind == "categorical":
            codes = [c for c in (self.code(v) for v in cond.values) if c >= 0]
        elif self.spec.kind == "boolean":
            codes = sorted({int(v) for v in cond.values})
        else:
            return np.isin(x, np.asarray(cond.values, dtype=np.float64))
        if not codes:
            return np.zeros(len(x), dtype=bool)
        if len(codes) == 1:
            return x == codes[0]
        # A lookup table over every code, shifted so that missing (-1) reads slot 0: several times faster than isin.
        table = np.zeros(len(self.values) + 1 if self.spec.kind == "categorical" else 3, dtype=bool)
        table[np.asarray(codes) + 1] = True
        return table[x + 1]

    def take(self, order: np.ndarray) -> "Column":
        return Column(self.spec, self.data[order], self.values)

    def resized(self, num_rows: int) -> "Column":
        """Cut to ``num_rows``, or extended with missing values (rows inserted after it was read)."""
        if num_rows <= len(self.data):
            return Column(self.spec, self.data[:num_rows], self.values)
        pad = np.full(num_rows - len(self.data), MISSING[self.spec.kind], dtype=self.spec.dtype)
        return Column(self.spec, np.concatenate([self.data, pad]), self.values)

    def updated(self, rows: np.ndarray, raw: Sequence[Any], new_values: Sequence[tuple[str, int]] = ()) -> "Column":
        """A copy with ``raw[j]`` (None = missing) at ``rows[j]``; ``new_values`` are the categorical
        (value, code) pairs Redis assigned for this update, codes continuing ``values``."""
        values = self.values
        if new_values:
            added = sorted(new_values, key=lambda vc: vc[1])
            if [c for _, c in added] != list(range(len(values), len(values) + len(added))):
                raise DataError(f"attribute {self.name!r}: new codes {added} do not continue the {len(values)} known values")
            values = values + tuple(v for v, _ in added)
        encoded = np.full(len(raw), MISSING[self.spec.kind], dtype=self.spec.dtype)
        lookup = {v: i for i, v in enumerate(values)} if self.spec.kind == "categorical" else None
        for j, v in enumerate(raw):
            if v is None:
                continue
            if lookup is not None:
                if v not in lookup:
                    raise DataError(f"attribute {self.name!r}: value {v!r} has no code")
                encoded[j] = lookup[v]
            else:
                encoded[j] = v
        data = self.data.copy()
        data[np.asarray(rows, dtype=np.int64)] = encoded
        return Column(self.spec, data, values)


@dataclass(frozen=True, eq=False)
class Attributes:
    """Every attribute of an index version, aligned with item rows (a trie's, or an artifact's items)."""

    columns: tuple[Column, ...]
    num_rows: int

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise DataError(f"attribute names must be unique, got {names}")
        bad = [c.name for c in self.columns if len(c.data) != self.num_rows]
        if bad:
            raise DataError(f"attribute columns {bad} do not have {self.num_rows} rows")
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @classmethod
    def empty(cls, num_rows: int) -> "Attributes":
        return cls((), num_rows)

    @classmethod
    def from_values(cls, declared: Sequence[tuple[str, str | None]], rows: Sequence[Mapping[str, Any]]) -> "Attributes":
        """From one mapping per item holding (some of) the declared attributes; a declared kind of
        None is inferred from the values (strings: categorical, numbers: numeric, booleans: boolean)."""
        columns = []
        for name, kind in declared:
            raw = [r.get(name) for r in rows]
            if kind is None:
                seen = {kind_of(v) for v in raw} - {None}
                if len(seen) != 1:
                    found = ", ".join(sorted(seen)) or "only nulls"
                    raise DataError(f"attribute {name!r}: cannot infer its kind from the catalog ({found}); declare it as {name}:KIND")
                kind = seen.pop()
            spec = AttributeSpec(name, kind)
            try:
                columns.append(Column.from_values(spec, raw))
            except DataError as e:
                row = next(i for i, v in enumerate(raw) if _fails(spec, v))
                raise DataError(f"item {row + 1} of the catalog: {e}") from None
        return cls(tuple(columns), len(rows))

    @property
    def specs(self) -> tuple[AttributeSpec, ...]:
        return tuple(c.spec for c in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def __getitem__(self, name: str) -> Column:
        try:
            return self._by_name[name]  # type: ignore[attr-defined]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise DataError(f"unknown attribute {name!r}; this index has: {known}") from None

    @property
    def nbytes(self) -> int:
        return sum(c.data.nbytes for c in self.columns)

    def row(self, row: int) -> dict[str, Scalar]:
        """The attributes of one item row that have a value."""
        out = {c.name: c.value(row) for c in self.columns}
        return {k: v for k, v in out.items() if v is not None}

    def take(self, order: np.ndarray) -> "Attributes":
        return Attributes(tuple(c.take(order) for c in self.columns), len(order))

    def resized(self, num_rows: int) -> "Attributes":
        if num_rows == self.num_rows:
            return self
        return Attributes(tuple(c.resized(num_rows) for c in self.columns), num_rows)

    def updated(
        self, values: Mapping[str, tuple[np.ndarray, Sequence[Any]]], new_values: Mapping[str, Sequence[tuple[str, int]]] | None = None
    ) -> "Attributes":
        """A copy with ``values[name] = (rows, raw values)`` applied (see ``Column.updated``)."""
        new_values = new_values or {}
        unknown = set(values) - set(self.names)
        if unknown:
            raise DataError(f"unknown attributes {sorted(unknown)}")
        for rows, _ in values.values():
            if len(rows) and (int(np.max(rows)) >= self.num_rows or int(np.min(rows)) < 0):
                raise DataError(f"an updated row is outside [0, {self.num_rows})")
        columns = tuple(c.updated(*values[c.name], new_values.get(c.name, ())) if c.name in values else c for c in self.columns)
        return Attributes(columns, self.num_rows)

    # -- filters ------------------------------------------------------------------------------
    def check(self, flt: "Filter") -> None:
        """FilterError unless every condition names an attribute of this index with values of its kind."""
        for part, conds in (("must", flt.must), ("must_not", flt.must_not)):
            for i, cond in enumerate(conds):
                if cond.field not in self:
                    known = ", ".join(self.names) or "none"
                    raise FilterError((part, i, "field"), f"unknown attribute {cond.field!r}; this index has: {known}")
                kind = self[cond.field].spec.kind
                if cond.op == "range":
                    if kind != "numeric":
                        raise FilterError((part, i, "range"), f"attribute {cond.field!r} is {kind}: a range needs a numeric attribute")
                    continue
                for j, v in enumerate(cond.values):
                    if kind_of(v) != kind:
                        where = (part, i, "value") if cond.op == "eq" else (part, i, "any", j)
                        raise FilterError(where, f"attribute {cond.field!r} is {kind}: {v!r} is not a {kind} value")

    def evaluate(self, flt: "Filter") -> np.ndarray:
        """Bool [num_rows]: the rows the filter keeps (call ``check`` first)."""
        keep = np.ones(self.num_rows, dtype=bool)
        for cond in flt.must:
            keep &= self[cond.field].matches(cond)
        for cond in flt.must_not:
            keep &= ~self[cond.field].matches(cond)
        return keep


def _fails(spec: AttributeSpec, value: Any) -> bool:
    try:
        check_value(spec, value)
        return False
    except DataError:
        return True


RANGE_OPS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Condition:
    """One attribute test: ``op`` is ``eq`` (``values`` holds one value), ``any`` (one of ``values``)
    or ``range`` (``bounds``: (op, number) pairs with op in gt, gte, lt, lte)."""

    field: str
    op: str
    values: tuple[Scalar, ...] = ()
    bounds: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.op not in ("eq", "any", "range"):
            raise DataError(f"condition op must be eq, any or range, got {self.op!r}")
        if self.op == "range":
            if not self.bounds or self.values or any(op not in RANGE_OPS or not math.isfinite(b) for op, b in self.bounds):
                raise DataError(f"a range on {self.field!r} needs finite bounds among {', '.join(RANGE_OPS)}")
        elif self.bounds or not self.values or (self.op == "eq" and len(self.values) != 1):
            raise DataError(f"an {self.op} condition on {self.field!r} needs {'one value' if self.op == 'eq' else 'values'}")

    @classmethod
    def eq(cls, field: str, value: Scalar) -> "Condition":
        return cls(field, "eq", (value,))

    @classmethod
    def any_of(cls, field: str, values: Iterable[Scalar]) -> "Condition":
        return cls(field, "any", tuple(values))

    @classmethod
    def range(cls, field: str, **bounds: float) -> "Condition":
        return cls(field, "range", bounds=tuple(sorted(bounds.items())))

    def canonical(self) -> list:
        if self.op == "range":
            return [self.field, "range", sorted(self.bounds)]
        # eq and any with the same value set keep the same items.
        return [self.field, "any", sorted({json.dumps(v) for v in self.values})]


@dataclass(frozen=True)
class Filter:
    """Keep an item when every ``must`` condition matches and no ``must_not`` condition does."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()
    _key: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        # Order-free and duplicate-free, so equal filters share one cache entry.
        must = sorted({json.dumps(c.canonical()) for c in self.must})
        must_not = sorted({json.dumps(c.canonical()) for c in self.must_not})
        object.__setattr__(self, "_key", json.dumps([must, must_not]))

    @property
    def canonical(self) -> str:
        """A string equal for filters that keep the same items whatever the attributes' values."""
        return self._key

    def __bool__(self) -> bool:
        return bool(self.must or self.must_not)
