"""A whole model on an accelerator: the result object of ``lowbit simulate model`` and its Markdown/CSV/JSON report."""

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from fsio import write_set
from hw.accelerator import MappingPolicy, load_design_with_policy
from models.analysis import size_breakdown
from models.config import load_config
from models.schemes import get_scheme
from models.workload import extract_workload
from sim.energy import ENERGY_MODES, arith_only, area, price_events
from sim.model import CapacityError, simulate_model, workload_macs_by_kind
from sim.tech import get_technology

from .linear import markdown_table

__all__ = ["model_result", "resolve_design", "per_layer_rows", "write_model_report", "PER_LAYER_COLUMNS"]

#: Columns of the per-layer table (``model.csv``; stable: other tools read it).
PER_LAYER_COLUMNS = ["phase", "op", "unit", "executions", "cycles", "cycle_share", "macs", "dram_bytes", "energy_j"]


def per_layer_rows(run, energy_by_op) -> list[dict]:
    """One row per operation of the workload, decode steps folded together, in workload order."""
    rows: dict[tuple, dict] = {}
    for i, t in enumerate(run.ops):
        key = (t.op.phase, t.op.name)
        row = rows.setdefault(key, {"phase": t.op.phase, "op": t.op.name, "unit": t.engine, "executions": 0,
                                    "cycles": 0, "macs": 0, "dram_bytes": 0, "energy_j": 0.0})
        row["executions"] += t.executions
        row["cycles"] += t.total_cycles
        row["macs"] += t.macs
        row["dram_bytes"] += t.dram_bytes
        row["energy_j"] += energy_by_op[i]
    total = run.cycles or 1
    out = list(rows.values())
    for row in out:
        row["cycle_share"] = row["cycles"] / total
    return out


def resolve_design(design, scheme) -> tuple[str | object, str]:
    """The design to run and how it was chosen: ``(design, "")`` when one is given, else the scheme's built-in
    default (:attr:`models.schemes.Scheme.default_design`) and ``"default for scheme NAME"``."""
    if design is not None:
        return design, ""
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    return sch.default_design, f"default for scheme {sch.base}"


def model_result(model, scheme, design=None, *, seq_len: int = 128, decode_steps: int = 0, tech: str = "45nm",
                 energy: str = "full", stepped: bool = False, per_layer: bool = False,
                 counters: bool = False, mapping: MappingPolicy | dict | None = None, program=None) -> dict:
    """Simulate ``model`` under ``scheme`` on ``design`` and price it: the JSON-ready result.

    Every input is resolved (and refused with a message naming it) before the run starts. ``design=None`` runs
    the scheme's default design (``design_source`` in the result says so). ``mapping`` is the run's mapping
    policy: a :class:`MappingPolicy`, or overrides of the design file's ``[mapping]`` table (``{"loop_order":
    "tokens-outer"}``; None: the table as it is); the result's ``mapping`` says which policy ran. With
    ``energy="arith-only"`` a design whose buffers are too small for some op's tiles is not refused: the
    arithmetic-only energy counts the workload's operations, so the run is priced untimed (``timed`` false, the
    cycle figures null, the reason in ``untimed_reason``). ``program`` (an :class:`isa.program.Program`, e.g.
    from ``lowbit compile``) is timed instead of compiling one; it must have been compiled for this model,
    scheme, sequence and design (refused otherwise, naming the field) and brings its own mapping policy.
    """
    cfg = load_config(model)
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    design, design_source = resolve_design(design, sch)
    acc, policy = load_design_with_policy(design)
    policy = mapping if isinstance(mapping, MappingPolicy) else policy.with_overrides(mapping)
    node = get_technology(tech)
    if energy not in ENERGY_MODES:
        raise ValueError(f"unknown energy mode {energy!r}; use one of {', '.join(ENERGY_MODES)}")
    if program is not None:
        policy = check_program_matches(program, cfg.name, sch.name, seq_len, decode_steps, acc.name)
    start = time.perf_counter()
    wl = extract_workload(cfg, sch, seq_len=seq_len, decode_steps=decode_steps)
    run, untimed = None, ""
    try:
        run = simulate_model(cfg, sch, acc, seq_len=seq_len, decode_steps=decode_steps, stepped=stepped, workload=wl,
                             policy=policy, program=program)
    except ValueError as exc:
        if isinstance(exc, CapacityError) and energy == "arith-only":
            untimed = str(exc)                  # counting operations needs no buffer room
        elif design_source:                     # the user did not pick this design: say which one it was
            raise type(exc)(f"{exc} (design {acc.name!r} is the {design_source}; choose another with "
                            "--design)") from None
        else:
            raise
    wall = time.perf_counter() - start
    if run is None:
        priced = arith_only(wl.ops, node)
    else:
        priced = price_events(run.events(), node, acc) if energy == "full" else arith_only([t.op for t in run.ops],
                                                                                              node)
    result = {
        "model": cfg.name, "scheme": sch.name, "design": acc.name, "design_source": design_source or "given",
        "seq_len": seq_len,
        "decode_steps": decode_steps, "clock_mhz": acc.clock_mhz, "mapping": policy.to_dict(),
        "mode": "stepped" if stepped else "fast",
        "timed": run is not None,
        "cycles": None, "latency_s": None, "prefill_cycles": None, "decode_cycles": None,
        "energy_j": priced.to_dict(),
        "ops_by_kind": workload_macs_by_kind(wl.ops) if run is None else run.macs_by_kind(),
        "area": area(acc, node),
        "model_size_bytes": size_breakdown(cfg, sch)["model_size_bytes"],
        "weights_resident": None, "utilisation": None, "dram_bytes": None,
        "wall_seconds": wall,
    }
    if program is not None:
        result["program"] = {"instructions": len(program), "source": "given"}
    if run is not None:
        result["program"] = {**result.get("program", {"source": "compiled"}), **run.queues()}
        result.update(cycles=run.cycles, latency_s=run.latency_s, prefill_cycles=run.phase_cycles("prefill"),
                      decode_cycles=run.phase_cycles("decode"), weights_resident=run.weights_resident,
                      utilisation=run.utilisation, dram_bytes=sum(t.dram_bytes for t in run.ops))
    if untimed:
        result["untimed_reason"] = untimed
    if per_layer:
        if run is None:
            result["per_layer"] = _untimed_rows(wl.ops, acc, node)
        else:
            if energy == "full":
                per_op = [price_events(t.events, node, acc).total() for t in run.ops]
            else:
                per_op = [arith_only([t.op], node).total() for t in run.ops]
            result["per_layer"] = per_layer_rows(run, per_op)
    if not counters:
        result["energy_j"].pop("counters")
    return result


def _program_lines(result: dict) -> list[str]:
    """The program's view of the run: its instructions, how busy each queue was, how much data movement the
    tokens hid under compute, and where the compute queue's cycles went."""
    prog = result.get("program")
    if not prog or result["cycles"] is None:
        return []
    cycles = max(1, result["cycles"])
    busy, by = prog["busy_cycles"], prog["cycles_by_kind"]
    ops = ", ".join(f"{k} {v:,}" for k, v in prog["by_opcode"].items())
    moved = {"load": busy["load"], "store": busy["store"]}
    hidden = {"load": prog["load_under_compute"], "store": prog["store_under_compute"]}
    lines = ["## The program", "",
             f"{prog['instructions']:,} instructions ({ops}), {prog.get('source', 'compiled')}; docs/isa.md.", "",
             "| queue | busy cycles | occupancy | under compute |", "|---|---|---|---|"]
    for q in ("load", "compute", "store"):
        under = f"{hidden[q]:,} ({hidden[q] / moved[q]:.0%} of its busy cycles)" if q in moved and moved[q] else "—"
        lines.append(f"| {q} | {busy[q]:,} | {busy[q] / cycles:.1%} | {under} |")
    names = {"matmul_issue": "engines issuing beats", "matmul_wait": "engines waiting for operands",
             "host": "vector unit (HOST ops)", "memory": "waiting for gathers, KV appends, preloads"}
    lines += ["", "Where the cycles go (the compute queue's timeline):", "", "| activity | cycles | share |",
              "|---|---|---|"]
    lines += [f"| {names[k]} | {v:,} | {v / cycles:.1%} |" for k, v in by.items()]
    return lines + [""]


def check_program_matches(program, model: str, scheme: str, seq_len: int, decode_steps: int,
                          design: str) -> MappingPolicy:
    """Refuse a program compiled for another model, scheme, sequence or design (naming the field and both values);
    returns the mapping policy it was compiled under."""
    meta = program.meta
    want = {"model": model, "scheme": scheme, "seq_len": seq_len, "decode_steps": decode_steps}
    for key, value in want.items():
        if key not in meta:
            raise ValueError(f"the program has no {key!r} in its metadata: it was not compiled from a model "
                             "(lowbit compile writes one)")
        if meta[key] != value:
            option = {"seq_len": "--seq", "decode_steps": "--decode-steps"}.get(key, f"--{key}")
            raise ValueError(f"the program was compiled with {key} = {meta[key]!r}, not {value!r}; give {option} "
                             f"{meta[key]} or compile again")
    if program.design != design:
        raise ValueError(f"the program was compiled for design {program.design!r}, not {design!r}; give --design "
                         f"{program.design} or compile again")
    return MappingPolicy().with_overrides(meta.get("policy", {}))


def _untimed_rows(ops, acc, node) -> list[dict]:
    """The per-layer rows of an untimed arith-only run: the columns of :func:`per_layer_rows`, timing ones null."""
    rows: dict[tuple, dict] = {}
    for o in ops:
        unit = acc.engine_for(o.unit, op=o.name).unit if o.kind == "matmul" else o.kind
        row = rows.setdefault((o.phase, o.name), {"phase": o.phase, "op": o.name, "unit": unit, "executions": 0,
                                                  "cycles": None, "cycle_share": None, "macs": 0,
                                                  "dram_bytes": None, "energy_j": 0.0})
        row["executions"] += o.layers
        row["macs"] += sum(workload_macs_by_kind([o]).values())
        row["energy_j"] += arith_only([o], node).total()
    return list(rows.values())


def write_model_report(out_dir: Path, result: dict, *, stem: str = "model") -> tuple[Path, Path, Path]:
    """Write ``{stem}.md`` (summary and per-layer table), ``{stem}.csv`` (per-layer) and ``{stem}.json``.

    The three are one :func:`fsio.write_set`: a reader using :func:`fsio.read_set` never sees files of two
    different runs together, and the JSON's ``"set_id"`` and the Markdown's last line tell a plain reader.
    """
    if "per_layer" not in result:
        raise ValueError("write_model_report needs a result made with per_layer=True")
    out_dir = Path(out_dir)
    table = pd.DataFrame(result["per_layer"], columns=PER_LAYER_COLUMNS)
    e, a = result["energy_j"], result["area"]
    steps = f" + {result['decode_steps']} decode steps" if result["decode_steps"] else ""
    lines = [
        f"# {result['model']} under {result['scheme']} on '{result['design']}'",
        "",
        f"Sequence {result['seq_len']}{steps}, {result['clock_mhz']:g} MHz, {result['mode']} mode; mapping "
        + ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in result["mapping"].items()) + ".",
        "",
        "| figure | value |",
        "|---|---|",
        f"| cycles | {result['cycles']:,} (prefill {result['prefill_cycles']:,}, decode {result['decode_cycles']:,}) |",
        f"| latency | {result['latency_s'] * 1e3:,.3f} ms |",
        f"| energy ({e['mode']}, {e['tech']}) | {e['total'] * 1e3:,.4g} mJ |",
        f"| — arithmetic (mul / add / logic) | {e['arith']['total'] * 1e3:.4g} mJ ({e['arith']['mul'] * 1e3:.3g} / "
        f"{e['arith']['add'] * 1e3:.3g} / {e['arith']['logic'] * 1e3:.3g}) |",
        f"| — registers / SRAM / DRAM / vector | {e['registers'] * 1e3:.3g} / {e['sram'] * 1e3:.3g} / "
        f"{e['dram'] * 1e3:.3g} / {e['vector'] * 1e3:.3g} mJ |",
        f"| area ({a['tech']} estimate) | {a['asic_mm2']:,.3f} mm² |",
        f"| MAC utilisation | {result['utilisation']:.1%} |",
        f"| DRAM traffic | {result['dram_bytes']:,} bytes |",
        f"| model size | {result['model_size_bytes']:,} bytes |",
        "",
        "Useful MACs by unit kind: " + ", ".join(f"{k} {v:,}" for k, v in result["ops_by_kind"].items()) + ".",
        "",
        *_program_lines(result),
        "## Operations",
        "",
        "Identical layers folded (`executions`), decode steps of one op summed; energy of the op's counters.",
        "",
        markdown_table(table),
        "",
    ]
    # The Markdown, the page people open, is replaced last.
    written = write_set(out_dir, {f"{stem}.csv": table.to_csv(index=False), f"{stem}.json": result,
                                  f"{stem}.md": "\n".join(lines)}, mkdir=True)
    return written.path(f"{stem}.md"), written.path(f"{stem}.csv"), written.path(f"{stem}.json")
