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
import typing
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="StrictConfig")

# no model vitedge builds has a dimension near this (ViT-B: 768 wide, 224 px, 1000 classes); larger is a
# broken or hostile config, refused before anything is allocated for it
MAX_DIMENSION = 1 << 16


def check_field(owner: str, name: str, value: Any, hint: Any, int_bound: int | None = MAX_DIMENSION) -> None:
    """Raise ValueError naming `owner.name` unless `value` fits the annotation `hint` (int, float, bool,
    str, tuple[X, ...] or list[X], optionally `| None`; ints within 0..int_bound when one is given)."""
    where = f"{owner}.{name}"
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and int_bound is not None and not 0 <= value <= int_bound:
            raise ValueError(f"{where} = {value} is outside 0..{int_bound}")
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ValueError(f"{where} = {value} is not a finite number")
    elif hint is str:
        ok = isinstance(value, str)
    elif typing.get_origin(hint) in (tuple, list):
        ok = isinstance(value, (list, tuple)) and len(value) <= 64
        if ok:
            for item in value:
                check_field(owner, f"{name}[]", item, typing.get_args(hint)[0], int_bound)
    else:
        return  # a type this check does not know: the dataclass's own __post_init__ judges it
    if not ok:
        raise ValueError(f"{where} must be {getattr(hint, '__name__', str(hint))}, got {type(value).__name__} "
                         f"{str(value)[:60]!r}")


class StrictConfig:
    """The one base of vitedge's config dataclasses (models, training stages, int8, benchmarking,
    validation budgets): a strict, JSON-shaped round trip.

    - `from_dict(d)`: None means every default; a key the class does not know is refused (a misspelt
      `epocs: 50` must not silently train for the default); each value is checked against its field's
      annotation (`check_field`); a field annotated with another StrictConfig is read with its own
      `from_dict`, so nested configs are as strict as the top.
    - `as_dict()`: plain JSON types (tuples become lists, nested configs dicts), so
      `type(c).from_dict(json.loads(json.dumps(c.as_dict()))) == c`.
    - `replace(**changes)`: a copy with some fields changed, checked the same way.

    Subclasses validate ranges in `__post_init__`; ValueError is the one error type.
    """

    # ints of model configs are dimensions and must stay allocatable; other configs leave them unbounded
    INT_BOUND: ClassVar[int | None] = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ValueError(f"a {cls.__name__} must be a JSON object / dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {sorted(map(str, unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in d.items():
            hint = hints[key]
            if isinstance(hint, type) and issubclass(hint, StrictConfig):
                values[key] = hint.from_dict(value)
                continue
            check_field(cls.__name__, key, value, hint, cls.INT_BOUND)
            values[key] = tuple(value) if typing.get_origin(hint) is tuple else value
        try:
            return cls(**values)
        except (TypeError, ZeroDivisionError) as exc:  # e.g. patch_size 0 in a modulo
            raise ValueError(f"invalid {cls.__name__}: {exc}") from None

    def replace(self: T, **changes: Any) -> T:
        return type(self).from_dict({**self.as_dict(), **changes})


def _plain(value: Any) -> Any:
    if isinstance(value, StrictConfig):
        return value.as_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
