"""The one config idiom: `StrictConfig`, the base of every config dataclass in vitedge.

Configs arrive as dicts from YAML (the workflow), JSON (`--train-json`), checkpoints and meta.json
files (data from anywhere). Reading one must refuse keys the class does not know (a typo, or a
checkpoint from another model family) rather than drop them, and values of the wrong type or absurd
size (`embed_dim: "x"` must be one line naming the field, not a TypeError deep inside torch).

Runtime state (a teacher's hash, a measured speed) is not config: it travels beside it.
`Preprocess` keeps its own reader: it is the artefact contract's, tolerant of older meta.json files.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

# no model vitedge builds has a dimension near this (ViT-B: 768 wide, 224 px, 1000 classes); larger is a
# broken or hostile config, refused before anything is allocated for it
MAX_DIMENSION = 1 << 16
MAX_ITEMS = 1 << 16  # no list in a config or a validation file comes near this


# JSON scalar types each annotation accepts (an int is a valid float; a bool is no number)
_SCALARS: dict[Any, tuple[type, ...]] = {str: (str,), bool: (bool,), int: (int,), float: (int, float)}


def decode_value(hint: Any, value: Any, where: str, int_bound: int | None = None) -> Any:
    """`value` (parsed JSON/YAML) read as the annotation `hint` says, or ValueError naming `where`:
    `X | None`, list[X] and tuple[X, ...] walked, dataclasses built by `decode`, dicts checked to be
    objects, scalars type-checked (ints within 0..int_bound when one is given, floats finite)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` unions are used
        return decode_value(inner, value, where, int_bound)
    if value is None:
        raise ValueError(f"{where} is null")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
            raise ValueError(f"{where} must be a list of at most {MAX_ITEMS}, got {type(value).__name__}")
        items = [decode_value(args[0], v, f"{where}[{i}]", int_bound) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where} must be an object, got {type(value).__name__}")
    if is_dataclass(hint):
        return decode(hint, value, where)
    if hint in _SCALARS and (not isinstance(value, _SCALARS[hint]) or (hint is not bool and isinstance(value, bool))):
        raise ValueError(f"{where} must be {hint.__name__}, got {type(value).__name__} {str(value)[:60]!r}")
    if hint is int and int_bound is not None and not 0 <= value <= int_bound:
        raise ValueError(f"{where} = {value} is outside 0..{int_bound}")
    if hint is float and not math.isfinite(value):
        raise ValueError(f"{where} = {value} is not a finite number")
    return value


def decode(cls: type[T], d: Any, where: str | None = None) -> T:
    """A dataclass from a JSON-shaped dict, strictly: a key the class lacks is refused (a typo must not fall
    back to a default, a renamed metric must not slip through), fields without a default must be present,
    every value is read by `decode_value`. Fields with metadata {"json": False} are not data."""
    where = where or cls.__name__
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a JSON object / dict, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls) if f.init and f.metadata.get("json", True)}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, d)) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (a {cls.__name__} has {', '.join(known)})")
    missing = [n for n, f in known.items() if n not in d and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    hints, bound = typing.get_type_hints(cls), getattr(cls, "INT_BOUND", None)
    values = {k: decode_value(hints[k], v, f"{where}.{k}", bound) for k, v in d.items()}
    try:
        return cls(**values)
    except (TypeError, ZeroDivisionError) as exc:  # e.g. patch_size 0 in a modulo
        raise ValueError(f"invalid {where}: {exc}") from None


def to_plain(value: Any, omit_unset: bool = False) -> Any:
    """Dataclasses (and lists, tuples, dicts of them) as JSON-shaped data. `omit_unset`: a field left at
    its None default is left out (validation files stay readable)."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("json", True) and not (omit_unset and v is None and f.default is None):
                out[f.name] = to_plain(v, omit_unset)
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(v, omit_unset) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v, omit_unset) for k, v in value.items()}
    return value


class StrictConfig:
    """The one base of vitedge's config dataclasses (models, training stages, int8, benchmarking,
    validation budgets): a strict, JSON-shaped round trip through `decode` / `to_plain`.

    - `from_dict(d)`: None means every default; a key the class does not know is refused (a misspelt
      `epocs: 50` must not silently train for the default); each value is checked against its field's
      annotation, nested configs (and lists of them) as strictly as the top.
    - `as_dict()`: plain JSON types (tuples become lists, nested configs dicts), so
      `type(c).from_dict(json.loads(json.dumps(c.as_dict()))) == c`.
    - `replace(**changes)`: a copy with some fields changed, checked the same way.

    Subclasses check ranges in `__post_init__`; ValueError is the one error type.
    """

    # ints of model configs are dimensions and must stay allocatable; other configs leave them unbounded
    INT_BOUND: ClassVar[int | None] = None

    def as_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        return decode(cls, {} if d is None else d)

    def replace(self: T, **changes: Any) -> T:
        return type(self).from_dict({**self.as_dict(), **changes})
