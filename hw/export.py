"""Verilog and JSON-manifest export of a unit, written atomically.

The manifest lets a testbench written by someone else drive the Verilog without reading any Python:
parameters, every port with its width, direction and Verilator C++ name, the stream payload layouts (field
name, bit offset, width, array shape and axis names, encoding and code table, role, the operand padding), the
rules for padding and unpadding a problem, and the stream/latency/throughput contract. Every manifest written
is checked against the JSON Schema ``unit-manifest.schema.json`` beside this module.
"""

import gc
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from fsio import write_set

from .contract import CYCLE_COUNT_DEFINITION, DISCARD_RULE, K_BEYOND_MAX_K, PADDING_RULE, STREAM_RULES
from .engine import ENGINES
from .layout import AXES, ENCODINGS, ROLES
from .units import CYCLES_FORMULA, EngineParams, UnitParams

__all__ = ["MANIFEST_SCHEMA", "SCHEMA_PATH", "build_component", "generate", "manifest", "validate_manifest",
           "write_unit", "ExportedUnit", "verilog_ports", "verilator_cpp_name", "verilator_cpp_type"]

#: Format tag of the manifests this module writes; /2 replaced each field's ``signed`` with ``encoding`` and added
#: axes, roles, padding and the stream rules.
MANIFEST_SCHEMA = "lowbit.unit-manifest/2"

#: The JSON Schema (draft 2020-12) every written manifest is checked against; shipped with the package.
SCHEMA_PATH = Path(__file__).with_name("unit-manifest.schema.json")

_GENERATORS = ENGINES


def build_component(params: UnitParams) -> wiring.Component:
    """The Amaranth component of a unit from its parameter object."""
    try:
        return _GENERATORS[params.kind](params)
    except KeyError:
        raise ValueError(f"no generator for unit {params.kind.value!r}") from None


def generate(params: UnitParams, component: wiring.Component | None = None) -> str:
    """Verilog text of the unit (``component`` overrides the standard generator, e.g. for fault tests)."""
    with _no_cyclic_gc():
        component = component if component is not None else build_component(params)
        return verilog.convert(component, name=params.module_name, emit_src=False)


@contextmanager
def _no_cyclic_gc():
    """Pause Python's cyclic garbage collector for the block.

    Lowering a large engine creates hundreds of thousands of long-lived objects (the netlist), so the collector
    keeps scanning them while nothing is garbage: 0.5–0.9 s of the 2.1–2.5 s that the 64×16 ternary engine took
    (1.6 s without it). Reference counting still frees everything; cycles wait for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def verilator_cpp_name(name: str) -> str:
    """The C++ member name Verilator gives a top-level port of this (Verilog) name.

    Verilator (``AstNode::encodeName``) escapes every ``__`` pair as ``___05F`` and any other non-identifier
    character as ``__0XX``, so Amaranth's ``operand__payload`` is ``operand___05Fpayload`` in the model class;
    VPI and cocotb keep the Verilog name.
    """
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c.isascii() and (c.isalpha() or (i and c.isdigit())):
            out.append(c)
        elif c == "_" and name[i + 1:i + 2] == "_":
            out.append("___05F")
            i += 1
        elif c == "_":
            out.append(c)
        else:
            out.append(f"__0{ord(c) & 0xFF:02X}")
        i += 1
    return "".join(out)


def verilator_cpp_type(width: int) -> str:
    """The C++ type of a Verilator port member of ``width`` bits (``VlWide``: 32-bit words, least significant
    first)."""
    for limit, name in ((8, "CData"), (16, "SData"), (32, "IData"), (64, "QData")):
        if width <= limit:
            return name
    return f"VlWide<{-(-width // 32)}>"


def _ports(signature: wiring.Signature) -> list[dict]:
    ports = [
        {"name": "clk", "direction": "input", "width": 1, "role": "clock, rising edge"},
        {"name": "rst", "direction": "input", "width": 1, "role": "reset, synchronous, active high"},
    ]
    for path, member in signature.members.flatten():
        if not member.is_port:
            continue
        ports.append({
            "name": "__".join(str(p) for p in path),
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
            "role": f"stream {path[0]} {path[-1]}",
        })
    for port in ports:
        port["verilator_cpp_name"] = verilator_cpp_name(port["name"])
        port["verilator_cpp_type"] = verilator_cpp_type(port["width"])
    return ports


#: How the manifest names things; the same in every manifest.
_CONVENTIONS = {
    "encodings": ENCODINGS,
    "axes": AXES,
    "roles": ROLES,
    "port_names": "Amaranth flattens stream member operand.payload to the Verilog port operand__payload; VPI and "
                  "cocotb use that name. Verilator's C++ model escapes each '__' as '___05F' (verilator_cpp_name, "
                  "e.g. operand___05Fpayload); verilator_cpp_type is the member's C++ type, VlWide<n> holding n "
                  "32-bit words, least significant first.",
}


def _contract(p: EngineParams) -> dict:
    """The timing and streaming contract shared by every engine."""
    return {
        "latency_cycles": p.latency,
        "initiation_interval": 1,
        "macs_per_cycle": p.macs_per_cycle,
        "latency_definition": "a beat accepted in cycle c with last=1 makes its result valid in cycle "
                              "c + latency_cycles when the result port is not stalled",
        "throughput": "one operand beat per cycle while result.ready is high or no result is held; "
                      "the whole pipeline stalls while a result is held with result.ready low",
        "backpressure": "operand.ready = ~result.valid | result.ready (combinational)",
        "stream_rules": STREAM_RULES,
        "cycle_count_definition": CYCLE_COUNT_DEFINITION,
        "cycles_at_full_throughput": CYCLES_FORMULA,
        "beat_order": "row blocks outermost, then tokens, then reduction chunks; results come in "
                      "(row block, token) order",
        "reduction": "a beat with last=1 closes a reduction; the next beat starts a new one (no bubble)",
        "max_k": p.max_k,
        "k_beyond_max_k": K_BEYOND_MAX_K,
        "reset": "hold rst high for at least one rising edge; all state clears",
    }


def manifest(params: UnitParams, component: wiring.Component | None = None) -> dict:
    """The manifest dictionary of a unit (of ``component`` when given, else of the standard generator)."""
    signature = component.signature if component is not None else _GENERATORS[params.kind].signature_for(params)
    derived = {name: getattr(params, name) for name in ("latency", "macs_per_cycle", "tree_depth", "pre_stages",
                                                         "post_stages")}
    derived["registered_levels"] = list(params.registered_levels)
    derived["channels"] = [{"name": c.name, "term_range": [c.lo, c.hi], "terms": c.terms, "per_row": c.per_row}
                           for c in params.channels()]
    return {
        "schema": MANIFEST_SCHEMA,
        "unit": params.kind.value,
        "module": params.module_name,
        "verilog": f"{params.module_name}.v",
        "generator": {"lowbit": version("lowbit"), "amaranth": version("amaranth")},
        "parameters": params.to_dict(),
        "derived": derived,
        "ports": _ports(signature),
        "streams": {
            "in": {"name": "operand", "payload": params.operand_layout.to_dict(), "padding": PADDING_RULE},
            "out": {"name": "result", "payload": params.result_layout.to_dict(),
                    "discard": {"axis": "row", "rule": DISCARD_RULE}},
        },
        "conventions": _CONVENTIONS,
        "encodings": params.encoding_notes(),
        "contract": _contract(params),
    }


@cache
def _schema_validator():
    # jsonschema is imported here, not at module level: only writing or checking a manifest needs it.
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate_manifest(info: dict) -> None:
    """Refuse a manifest that does not match :data:`SCHEMA_PATH`, naming the first offending place."""
    errors = sorted(_schema_validator().iter_errors(info), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        # One bad value can break several rules (an unknown encoding also fails the code-table rule): name them all.
        found = "; ".join(f"at {'/'.join(str(x) for x in e.absolute_path) or '(top level)'}: {e.message}"
                          for e in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ValueError(f"manifest of {info.get('module', '?')} does not match {SCHEMA_PATH.name}: {found}{more}")


@dataclass(frozen=True)
class ExportedUnit:
    verilog_path: Path
    manifest_path: Path
    manifest: dict


def write_unit(params: UnitParams, out_dir: Path, *, component: wiring.Component | None = None) -> ExportedUnit:
    """Write ``<module>.v`` and ``<module>.json`` into ``out_dir`` as one :func:`fsio.write_set`.

    Each file is complete or absent, and a reader using :func:`fsio.read_set` never sees the Verilog of one
    write with the manifest of another. The manifest carries the set id (a hash of both files) as its first key
    ``set_id``; the Verilog is written byte for byte as :func:`generate` returns it, so its text (and the
    simulator builds cached by its hash) changes only when the hardware does.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    component = component if component is not None else build_component(params)
    text = generate(params, component)
    info = manifest(params, component)
    validate_manifest(info)
    vname, mname = info["verilog"], f"{params.module_name}.json"
    # The Verilog goes in as bytes, which fsio leaves untouched; the manifest as a dict, which carries the id.
    written = write_set(out_dir, {vname: text.encode(), mname: info})
    return ExportedUnit(written.path(vname), written.path(mname), info)


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """Parse ``{port: (direction, width)}`` from Amaranth-generated Verilog (used to check manifests)."""
    body = text.split(f"module {module}(", 1)[1].split("endmodule", 1)[0]
    ports = {}
    for direction, msb, lsb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):(\d+)\]\s+)?(\w+);", body, re.M):
        ports[name] = (direction, int(msb) - int(lsb) + 1 if msb else 1)
    return ports
