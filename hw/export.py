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
from .engine import ENGINES
from .params import (BammParams, BinaryBasisParams, EngineParams, Int8MacParams, TernaryMacParams, UnitParams,
                     XnorPopcountParams)

__all__ = ["MANIFEST_SCHEMA", "build_component", "generate", "manifest", "write_unit", "ExportedUnit", "verilog_ports"]

MANIFEST_SCHEMA = "lowbit.unit-manifest/1"

_GENERATORS = ENGINES


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


def _contract(p: EngineParams, padding: str) -> dict:
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
        "cycle_count_definition": CYCLE_COUNT_DEFINITION,
        "cycles_at_full_throughput": "ceil(M/rows) * tokens * ceil(K/lanes) + latency_cycles",
        "beat_order": "row blocks outermost, then tokens, then reduction chunks; results come in "
                      "(row block, token) order",
        "reduction": "a beat with last=1 closes a reduction; the next beat starts a new one (no bubble)",
        "padding": padding,
        "reset": "hold rst high for at least one rising edge; all state clears",
    }


_LAST = "1 on the final beat of a reduction: the engine emits the result after it"
_ROWS = "row block b, row r holds output row b*rows + r; element [..][i] is reduction element k_chunk*lanes + i"


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
            "last": _LAST,
            "acc": f"two's complement, {p.acc_width} bits, cannot overflow for reductions of up to max_k="
                   f"{p.max_k} elements",
            "zero_skip": "each lane's term is registered behind a clock enable low for zero weights" if p.zero_skip
            else "off",
        },
        "contract": _contract(p, "K is padded to a multiple of lanes with act=0, weight=0; M to a multiple of "
                                 "rows with weight=0 (discard those accumulators)"),
    }


def _xnor_sections(p: XnorPopcountParams) -> dict:
    return {
        "encodings": {
            "act": "1 bit per element: 1 = +1, 0 = -1", "weight": "1 bit per element: 1 = +1, 0 = -1; " + _ROWS,
            "n_valid": "number of valid lanes in this beat (lanes, except on a reduction's partial last beat)",
            "last": _LAST,
            "dot": f"two's complement, {p.dot_width} bits: 2*popcount(XNOR(act, weight)) - n over the reduction",
            "bit": {"none": "absent", "strict": "1 iff dot > 0 (BiBERT's official bool)",
                    "nonstrict": "1 iff dot >= 0 (the paper's bool)"}[p.threshold],
        },
        "contract": _contract(p, "padding lanes must carry act=0 and weight=1 (their XNOR is 0) and are not counted "
                                 "in n_valid; padding rows are discarded"),
    }


def _bamm_sections(p: BammParams) -> dict:
    pad = ("padding lanes carry a=0" if p.identity == "and"
           else "padding lanes carry a=1, v=0 and are not counted in n_valid")
    return {
        "encodings": {
            "a": "attention bits, 1 bit per key", "v": "value signs, 1 bit per key: 1 = +1, 0 = -1; rows are value "
                                                       "columns (d_h)",
            "last": _LAST,
            "identity": "count = 2*popcount(a AND v) - popcount(a)" if p.identity == "and"
            else "count = popcount(XNOR(a, v)) + popcount(v) - n",
            "count": f"two's complement, {p.count_width} bits: sum over keys of a*v",
            "sign": f"2-bit two's complement: +1, -1, and {({'torch': 0, 'pos': 1, 'neg': -1}[p.zero_policy])} for a "
                    f"zero count (zero_policy {p.zero_policy})",
        },
        "contract": _contract(p, pad + "; padding rows are discarded"),
    }


def _binary_basis_sections(p: BinaryBasisParams) -> dict:
    enc = {"act": f"two's complement, {p.act_bits} bits", "last": _LAST}
    if p.mode == "bases":
        enc["bases"] = "bases[i][r][l]: 1 bit, 1 = +1, 0 = -1; " + _ROWS
        enc["sums"] = f"sums[i][r] = sum_l B_i[r][l]*act[l], two's complement, {p.acc_width} bits"
        if p.scale_bits:
            enc["alpha"] = f"alpha[i][r]: {p.scale_bits}-bit two's complement scale, read on the last beat"
            enc["y"] = f"y[r] = sum_i alpha[i][r]*sums[i][r], {p.y_width} bits"
        if p.lut_group:
            enc["lut_group"] = f"{p.lut_group} lanes share a {1 << p.lut_group}-entry table of partial sums"
    else:
        enc["group"] = "2 bits per element: 0 concentrated, 1 sparse, 2 salient (3 unused)"
        enc["sign"] = "1 bit: sign of (w - mu) of the element's group, 1 = +1"
        enc["sign2"] = "1 bit: sign of the second-order residual, read in the salient group only"
        enc["sums"] = ("sums[g][r] for g = concentrated, sparse, salient, salient second order: sum of sign*act "
                       "over the group's elements")
        enc["means"] = "means[g][r]: sum of act over the group's elements (for the mu terms)"
    return {"encodings": enc,
            "contract": _contract(p, "K is padded with act=0 (any weight bits); padding rows are discarded")}


def _int8_sections(p: Int8MacParams) -> dict:
    return {
        "encodings": {"act": f"two's complement, {p.act_bits} bits",
                      "weight": f"two's complement, {p.weight_bits} bits; " + _ROWS, "last": _LAST,
                      "acc": f"two's complement, {p.acc_width} bits"},
        "contract": _contract(p, "K is padded with act=0, weight=0; padding rows are discarded"),
    }


_SECTIONS = {UnitKind.TERNARY_MAC: _ternary_mac_sections, UnitKind.XNOR_POPCOUNT: _xnor_sections,
             UnitKind.BAMM: _bamm_sections, UnitKind.BINARY_BASIS: _binary_basis_sections,
             UnitKind.INT8_MAC: _int8_sections}


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
