"""Registry of quantization schemes: name → the unit its linears need and how to build their integer view."""

from dataclasses import dataclass
from typing import Callable

import torch

from . import bitnet
from .units import UnitKind

__all__ = ["Scheme", "SCHEMES", "get_scheme"]


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme as the rest of lowbit sees it."""

    name: str
    unit: UnitKind
    description: str
    #: ``(weight [out, in], x [tokens, in]) -> integer view`` of one linear layer.
    linear_view: Callable[[torch.Tensor, torch.Tensor], object]


SCHEMES: dict[str, Scheme] = {
    "bitnet-b1.58": Scheme(
        name="bitnet-b1.58",
        unit=UnitKind.TERNARY_MAC,
        description="BitNet b1.58: absmean ternary weights, per-token absmax int8 activations (official code)",
        linear_view=bitnet.linear_view,
    ),
}


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name, with an error listing the known ones."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(sorted(SCHEMES))}") from None
