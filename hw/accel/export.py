"""The accelerator's Verilog and manifest (``lowbit verilog accelerator``)."""

import hashlib
from importlib.metadata import version
from pathlib import Path

from fsio import write_set
from isa.spec import VERSION

from .plan import AccelPlan

__all__ = ["MODULE", "generate", "write_accelerator", "DRAM_PROTOCOL", "CYCLE_COUNT"]

MODULE = "lowbit_accel"

#: The DRAM port's protocol, as the manifest states it (streams: a transfer happens in a cycle with valid and
#: ready both high; payloads as ``hw.accel.mover`` lays them out).
DRAM_PROTOCOL = {
    "read_request": "dram_rreq: {addr[32], count}: read count (1..dram_lanes) bytes at DRAM byte addr; the "
                    "accelerator holds it until ready",
    "read_data": "dram_rdata: {data[8*dram_lanes], count}: one answer per read request, in request order, byte 0 "
                 "in data[7:0]; the accelerator is always ready",
    "write_request": "dram_wreq: {addr[32], count, data[8*dram_lanes]}: write count bytes at addr; held until "
                     "ready",
    "write_ack": "dram_wack: {count}: one per write request, in request order, once the bytes are written; the "
                 "accelerator is always ready",
    "timing": "the description's DRAM answers a read accepted in cycle t in cycle t + latency_cycles and "
              "acknowledges a write accepted in cycle t in cycle t + latency_cycles; the bandwidth is paced by the "
              "accelerator (each row at transfer_rate bytes a cycle); a slower or stalling DRAM costs cycles, "
              "never data",
}

CYCLE_COUNT = ("cycles counts from the first instruction fetch (the cycle after run) to the first cycle, at or "
               "after FINISH's dispatch, in which every queue is empty and idle: the simulator's program cycles "
               "(docs/isa.md §4)")


def generate(plan: AccelPlan, component=None, *, ram_form: str = "behavioral") -> str:
    """The Verilog of the accelerator of ``plan`` (or of ``component``, e.g. a bench top around it) with the RAM
    modules it instantiates; ``ram_form="pumped"``: the buffers in their block-RAM form (a ``mem_clk`` input,
    :class:`hw.accel.top.Accelerator`)."""
    from amaranth.back import verilog

    from .top import Accelerator

    top = component if component is not None else Accelerator(plan, ram_form=ram_form)
    name = MODULE if component is None else getattr(component, "module_name", "accel_bench")
    text = verilog.convert(top, name=name, emit_src=False)
    mods = top.verilog_modules
    return text + "\n" + "\n".join(mods[k] for k in sorted(mods))


def ports(text: str, module: str = MODULE) -> list[dict]:
    """The top module's ports with directions and widths, from the Verilog (what a board wrapper connects)."""
    import re

    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    out = []
    for d, w, n in re.findall(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(\[\d+:0\]\s+)?(\w+)\s*;", body, re.M):
        width = int(w.strip()[1:].split(":")[0]) + 1 if w else 1
        out.append({"name": n, "direction": d, "width": width})
    return out


def payload_layouts(plan: AccelPlan) -> dict:
    """Where each field of the DRAM streams' payloads sits (bit offset and width, LSB first)."""
    from .mover import dram_read_data, dram_read_request, dram_write_ack, dram_write_request

    out = {}
    for port, sig in (("dram_rreq", dram_read_request), ("dram_rdata", dram_read_data),
                      ("dram_wreq", dram_write_request), ("dram_wack", dram_write_ack)):
        layout = sig(plan.dram_lanes).members["payload"].shape
        out[port] = {name: {"offset": f.offset, "width": f.width} for name, f in layout}
    return out


def write_accelerator(plan: AccelPlan, out_dir, *, ram_form: str = "behavioral") -> tuple[Path, Path]:
    """Write ``lowbit_accel.v`` and ``lowbit_accel.json`` (the manifest) into ``out_dir`` (atomically, as a set);
    ``ram_form="pumped"``: the buffers in block-RAM form (:mod:`hw.accel.ram`)."""
    from .top import ram_phases

    text = generate(plan, ram_form=ram_form)
    design = plan.design
    manifest = {
        "kind": "lowbit-accelerator",
        "module": MODULE,
        "verilog": f"{MODULE}.v",
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "design": design.name,
        "description": design.to_dict(),
        "isa_version": VERSION,
        "instruction_encoding": "docs/isa.md §3: 256-bit little-endian words, written through imem_we/imem_addr/"
                                "imem_data",
        "ports": ports(text),
        "buffer_map": plan.manifest()["buffers"],
        "plan": {k: v for k, v in plan.manifest().items() if k != "buffers"},
        "dram_protocol": {**DRAM_PROTOCOL, "payloads": payload_layouts(plan)},
        "cycle_count": CYCLE_COUNT,
        "ram_form": ram_form,
        "ram_phases": ram_phases(plan) if ram_form == "pumped" else None,
        "clocks": ({"clk": "the system clock"} if ram_form != "pumped" else
                   {"clk": "the system clock", "mem_clk": f"the buffers' memory clock: {ram_phases(plan)} × clk, "
                                                          "rising edges aligned with clk's (hw/accel/ram.py)"}),
        "generator": {"lowbit": _version(), "amaranth": version("amaranth")},
    }
    out = Path(out_dir)
    write_set(out, {f"{MODULE}.v": text, f"{MODULE}.json": manifest}, mkdir=True)
    return out / f"{MODULE}.v", out / f"{MODULE}.json"


def _version() -> str:
    try:
        return version("lowbit")
    except Exception:
        return "unknown"
