"""Verilog and JSON-manifest export of a unit, written atomically.

The manifest lets a testbench written by someone else drive the Verilog without reading any Python:
parameters, every port with its width and direction, the stream payload layouts (field name, bit offset,
width, signedness, array shape), the operand encodings and the latency/throughput contract.
"""

import json
import os
import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from models.units import UnitKind

from .contract import CYCLE_COUNT_DEFINITION
from .params import TernaryMacParams, UnitParams
from .ternary_mac import TernaryMacEngine

__all__ = ["MANIFEST_SCHEMA", "build_component", "generate", "manifest", "write_unit", "ExportedUnit", "verilog_ports"]

MANIFEST_SCHEMA = "lowbit.unit-manifest/1"

_GENERATORS = {UnitKind.TERNARY_MAC: TernaryMacEngine}


def build_component(params: UnitParams) -> wiring.Component:
    """The Amaranth component of a unit from its parameter object."""
    try:
        return _GENERATORS[params.kind](params)
    except KeyError:
        raise ValueError(f"no generator for unit {params.kind.value!r}") from None


def generate(params: UnitParams, component: wiring.Component | None = None) -> str:
    """Verilog text of the unit (``component`` overrides the standard generator, e.g. for fault tests)."""
    component = component if component is not None else build_component(params)
    return verilog.convert(component, name=params.module_name, emit_src=False)


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
    return ports


def _ternary_mac_sections(p: TernaryMacParams) -> dict:
    return {
        "encodings": {
            "act": f"two's complement, {p.act_bits} bits; act[i] is reduction element k_chunk*lanes + i",
            "weight": {
                "width": 2,
                "codes": {f"0b{code:02b}": (value if code in p.WEIGHT_CODES_VALID else f"reserved, decodes as {value}")
                          for code, value in p.WEIGHT_CODES.items()},
                "placement": "weight[r][i] multiplies act[i] for output row row_block*rows + r",
            },
            "last": "1 on the final beat of a reduction: the engine emits the accumulated sums after it",
            "acc": f"two's complement, {p.acc_width} bits, cannot overflow for reductions of up to max_k="
                   f"{p.max_k} elements",
        },
        "contract": {
            "latency_cycles": p.latency,
            "initiation_interval": 1,
            "macs_per_cycle": p.macs_per_cycle,
            "latency_definition": "a beat accepted in cycle c with last=1 makes its result valid in cycle "
                                  "c + latency_cycles when the result port is not stalled",
            "throughput": "one operand beat per cycle while result.ready is high or no result is held; "
                          "the whole pipeline stalls while a result is held with result.ready low",
            "backpressure": "operand.ready = ~result.valid | result.ready (combinational)",
            "cycle_count_definition": CYCLE_COUNT_DEFINITION,
            "cycles_at_full_throughput": "ceil(M/rows) * tokens * ceil(K/lanes) + latency_cycles",
            "beat_order": "row blocks outermost, then tokens, then reduction chunks; results come in "
                          "(row block, token) order",
            "padding": "K is padded to a multiple of lanes with act=0, weight=0; M to a multiple of rows "
                       "with weight=0 (discard those accumulators)",
            "reset": "hold rst high for at least one rising edge; all state clears",
        },
    }


_SECTIONS = {UnitKind.TERNARY_MAC: _ternary_mac_sections}


def manifest(params: UnitParams, component: wiring.Component | None = None) -> dict:
    """The manifest dictionary of a unit (of ``component`` when given, else of the standard generator)."""
    signature = component.signature if component is not None else _GENERATORS[params.kind].signature_for(params)
    derived = {name: getattr(params, name) for name in ("latency", "macs_per_cycle")}
    if isinstance(params, TernaryMacParams):
        derived.update(tree_depth=params.tree_depth, registered_levels=list(params.registered_levels))
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
            "in": {"name": "operand", "payload": params.operand_layout.to_dict()},
            "out": {"name": "result", "payload": params.result_layout.to_dict()},
        },
        **_SECTIONS[params.kind](params),
    }


@dataclass(frozen=True)
class ExportedUnit:
    verilog_path: Path
    manifest_path: Path
    manifest: dict


def _write_partial(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    return tmp


def write_unit(params: UnitParams, out_dir: Path, *, component: wiring.Component | None = None) -> ExportedUnit:
    """Write ``<module>.v`` and ``<module>.json`` into ``out_dir``; both appear together or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    component = component if component is not None else build_component(params)
    text = generate(params, component)
    info = manifest(params, component)
    vpath, mpath = out_dir / info["verilog"], out_dir / f"{params.module_name}.json"
    tmps = []
    try:
        tmps.append((_write_partial(vpath, text), vpath))
        tmps.append((_write_partial(mpath, json.dumps(info, indent=2) + "\n"), mpath))
        for tmp, final in tmps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            if tmp.exists():
                tmp.unlink()
    return ExportedUnit(vpath, mpath, info)


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """Parse ``{port: (direction, width)}`` from Amaranth-generated Verilog (used to check manifests)."""
    body = text.split(f"module {module}(", 1)[1].split("endmodule", 1)[0]
    ports = {}
    for direction, msb, lsb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):(\d+)\]\s+)?(\w+);", body, re.M):
        ports[name] = (direction, int(msb) - int(lsb) + 1 if msb else 1)
    return ports
