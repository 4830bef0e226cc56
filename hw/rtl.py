"""Amaranth helpers shared by the unit generators."""

from types import SimpleNamespace
from typing import Iterable

from amaranth import Module, Signal, Value, signed, unsigned
from amaranth.lib import data

from .layout import PayloadLayout

__all__ = ["amaranth_layout", "unpack", "pipelined_tree", "delay"]


def amaranth_layout(layout: PayloadLayout) -> data.StructLayout:
    """The ``lib.data`` layout of a :class:`~hw.layout.PayloadLayout` (identical bit placement)."""
    members = {}
    for f in layout.fields:
        shape = signed(f.elem_width) if f.signed else unsigned(f.elem_width)
        for n in reversed(f.shape):
            shape = data.ArrayLayout(shape, n)
        members[f.name] = shape
    return data.StructLayout(members)


def unpack(raw: Value, layout: PayloadLayout) -> SimpleNamespace:
    """Every element of every field of a payload as its own Value, sliced once from ``raw``.

    ``unpack(v, layout).weight[r][i]`` is element ``[r][i]`` of field ``weight`` (signed where the field is), a
    scalar field is a plain Value. The slices are built once and shared by every user: indexing a ``lib.data``
    view afresh for each use makes a new expression each time, which Amaranth lowers by copying the whole
    parent field (a 2,048-bit weight field per lane term on the 64×16 ternary engine), so generation was
    quadratic in the payload width.
    """
    raw = Value.cast(raw)
    fields = {}
    for f in layout.fields:
        def element(*index, f=f):
            start = f.bit_offset(*index)
            bits = raw[start:start + f.elem_width]
            return bits.as_signed() if f.signed else bits

        def build(prefix, dims, element=element):
            if not dims:
                return element(*prefix)
            return [build((*prefix, i), dims[1:]) for i in range(dims[0])]
        fields[f.name] = build((), f.shape)
    return SimpleNamespace(**fields)


def pipelined_tree(m: Module, terms: list[Value], *, channel, depth: int, registered_levels: Iterable[int],
                   enable: Value, name: str) -> Value:
    """Sum ``terms`` in an adder tree of ``depth`` levels, registering ``registered_levels``.

    Every level adds ``channel.arity`` nodes (three for popcounts, else two); level ``l`` nodes are
    ``channel.level_width(l)`` bits, signed iff the channel is. An odd node out passes
    to the next level unchanged, and a tree shallower than ``depth`` passes its root on through the remaining
    levels, so every tree of an engine has the same registers and their outputs line up. Registered levels load
    only when ``enable`` is high, so the tree stalls with the rest of the pipeline.
    """
    registered = set(registered_levels)
    if channel.depth > depth:
        raise ValueError(f"{len(terms)} terms need {channel.depth} levels, not {depth}")
    nodes = list(terms)
    loads = []
    for level in range(1, depth + 1):
        width = channel.level_width(level)
        shape = signed(width) if channel.signed else unsigned(width)
        arity = channel.arity
        nxt = []
        for i in range(0, len(nodes), arity):
            group = nodes[i:i + arity]
            total = group[0]
            for node in group[1:]:
                total = total + node
            node = Signal(shape, name=f"{name}_l{level}_{i // arity}")
            if level in registered:
                loads.append(node.eq(total))
            else:
                m.d.comb += node.eq(total)
            nxt.append(node)
        nodes = nxt
    if loads:
        with m.If(enable):
            m.d.sync += loads
    return nodes[0]


def delay(m: Module, value: Value, stages: int, *, enable: Value, name: str) -> Value:
    """``value`` delayed by ``stages`` registers that load when ``enable`` is high."""
    for i in range(stages):
        reg = Signal.like(value, name=f"{name}_d{i}")
        with m.If(enable):
            m.d.sync += reg.eq(value)
        value = reg
    return value
