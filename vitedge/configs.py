"""What the model config dataclasses (`ViTConfig`, `CNNConfig`) share: a plain-dict round trip.

Checkpoints and artefacts store a model's config as a dict; reading one back must refuse keys the
class does not know (a typo, or a checkpoint from another model family) rather than drop them.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="DictConfig")


class DictConfig:
    """Mixin for frozen config dataclasses."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-shaped: tuples become lists, so a dict read back from meta.json compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)
