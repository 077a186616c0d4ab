"""What the model config dataclasses (`ViTConfig`, `CNNConfig`) share: a plain-dict round trip.

Checkpoints and artefacts store a model's config as a dict; reading one back must refuse keys the
class does not know (a typo, or a checkpoint from another model family) rather than drop them, and
values of the wrong type or absurd size (a checkpoint is data from anywhere: `embed_dim: "x"` must be
one line naming the field, not a TypeError deep inside torch).
"""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="DictConfig")

# no model vitedge builds has a dimension near this (ViT-B: 768 wide, 224 px, 1000 classes); larger is a
# broken or hostile config, refused before anything is allocated for it
MAX_DIMENSION = 1 << 16


def check_field(owner: str, name: str, value: Any, hint: Any) -> None:
    """Raise ValueError naming `owner.name` unless `value` fits the annotation `hint`
    (int, float, bool, str or tuple[int, ...]; ints and tuple items within 0..MAX_DIMENSION)."""
    where = f"{owner}.{name}"
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not 0 <= value <= MAX_DIMENSION:
            raise ValueError(f"{where} = {value} is outside 0..{MAX_DIMENSION}")
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ValueError(f"{where} = {value} is not a finite number")
    elif hint is str:
        ok = isinstance(value, str)
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, (list, tuple)) and len(value) <= 64
        if ok:
            for item in value:
                check_field(owner, f"{name}[]", item, typing.get_args(hint)[0])
    else:
        return  # a type this check does not know: the dataclass's own __post_init__ judges it
    if not ok:
        raise ValueError(f"{where} must be {getattr(hint, '__name__', str(hint))}, got {type(value).__name__} "
                         f"{str(value)[:60]!r}")


class DictConfig:
    """Mixin for frozen config dataclasses."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-shaped: tuples become lists, so a dict read back from meta.json compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        if not isinstance(d, dict):
            raise ValueError(f"a {cls.__name__} must be a JSON object / dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(map(str, unknown))}")
        hints = typing.get_type_hints(cls)
        for key, value in d.items():
            check_field(cls.__name__, key, value, hints[key])
        try:
            return cls(**d)
        except (TypeError, ZeroDivisionError) as exc:  # e.g. patch_size 0 in a modulo
            raise ValueError(f"invalid {cls.__name__}: {exc}") from None
