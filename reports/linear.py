"""Report of one linear layer on one engine: a one-row-per-run table (CSV) and a short Markdown page."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsio import write_set
from hw.contract import CYCLE_COUNT_DEFINITION
from sim.linear import LinearResult, combine_runs

__all__ = ["RtlCheck", "linear_table", "write_linear_report", "markdown_table", "COLUMNS"]

#: Column schema of ``report.csv`` (stable: other tools read it).
COLUMNS = ["run", "scheme", "unit", "in_features", "out_features", "tokens", "passes", "lanes", "rows", "latency",
           "acc_width", "macs", "engine_macs", "cycles", "cycles_formula", "utilisation", "zero_weight_fraction",
           "macs_per_cycle", "wall_seconds"]


@dataclass(frozen=True)
class RtlCheck:
    """Outcome of running part of the layer on the generated Verilog and comparing with the cycle model."""

    tokens: int
    rtl: LinearResult
    sim: LinearResult
    simulator: str = "verilator"     #: the RTL simulator it ran on

    @property
    def bit_exact(self) -> bool:
        return self.rtl.acc.keys() == self.sim.acc.keys() and all(
            np.array_equal(self.rtl.acc[name], self.sim.acc[name]) for name in self.sim.acc)

    @property
    def cycles_equal(self) -> bool:
        return self.rtl.cycles == self.sim.cycles


def formula_cycles(r: LinearResult) -> int:
    """The closed-form cycle count of the run (full throughput), for comparison with the stepped one."""
    p = r.params
    return combine_runs(p, {j.name: p.cycles(j.m, j.k, r.tokens) for j in r.jobs})


def _row(name: str, r: LinearResult) -> dict:
    p = r.params
    return {
        "run": name, "scheme": r.scheme, "unit": p.kind.value, "in_features": r.in_features,
        "out_features": r.out_features, "tokens": r.tokens, "passes": len(r.view.passes), "lanes": p.lanes,
        "rows": p.rows, "latency": p.latency, "acc_width": p.acc_width, "macs": r.macs,
        "engine_macs": r.engine_macs, "cycles": r.cycles, "cycles_formula": formula_cycles(r),
        "utilisation": r.utilisation, "zero_weight_fraction": r.zero_weight_fraction,
        "macs_per_cycle": p.macs_per_cycle, "wall_seconds": r.wall_seconds,
    }


def linear_table(main: LinearResult, check: RtlCheck | None = None) -> pd.DataFrame:
    rows = [_row(f"{main.backend}: all tokens", main)]
    if check is not None:
        rows.append(_row(f"sim: first {check.tokens} token(s)", check.sim))
        rows.append(_row(f"rtl: first {check.tokens} token(s)", check.rtl))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_linear_report(out_dir: Path, main: LinearResult, check: RtlCheck | None, *,
                        verilog_path: Path | None = None, title: str = "Linear layer") -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.md`` into ``out_dir`` as one :func:`fsio.write_set` (they always come
    from the same run; the Markdown's last line carries the set id); returns their paths ``(md, csv)``."""
    out_dir = Path(out_dir)
    table = linear_table(main, check)
    p = main.params
    lines = [
        f"# {title}: {main.scheme} on {p.kind.value}",
        "",
        f"W [{main.out_features} × {main.in_features}] · X [{main.tokens} × {main.in_features}]ᵀ on a "
        f"{p.lanes}-lane × {p.rows}-row {p.kind.value} engine ({p.macs_per_cycle} MACs/cycle, latency "
        f"{p.latency} cycles, {p.acc_width}-bit accumulators).",
        "",
        f"- MACs: {main.macs:,}",
        f"- Cycles (cycle model): {main.cycles:,}; closed form: {formula_cycles(main):,}",
        f"- Utilisation: {main.utilisation:.2%} of {p.macs_per_cycle} MAC slots per cycle",
        f"- Zero weights: {main.zero_weight_fraction:.1%} (a zero-skipping engine could idle these lanes)",
    ]
    if verilog_path is not None:
        lines.append(f"- Verilog: `{verilog_path.name}` with its manifest `{verilog_path.with_suffix('.json').name}`")
    if check is not None:
        verdict = "bit-exact" if check.bit_exact else "MISMATCH"
        cyc = "equal" if check.cycles_equal else "DIFFERENT"
        lines += ["", "## RTL check", "",
                  f"The first {check.tokens} token(s) ran on the generated Verilog in {check.simulator} (cocotb): accumulators "
                  f"{verdict} against the cycle model, cycle counts {cyc} ({check.rtl.cycles:,} RTL vs "
                  f"{check.sim.cycles:,} model)."]
    lines += ["", "## Table", "", markdown_table(table),
              "", f"Cycle count: {CYCLE_COUNT_DEFINITION}.", ""]
    written = write_set(out_dir, {"report.csv": table.to_csv(index=False), "report.md": "\n".join(lines)}, mkdir=True)
    return written.path("report.md"), written.path("report.csv")


def markdown_table(table: pd.DataFrame) -> str:
    """A Markdown table (pandas' own needs the optional ``tabulate`` package)."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
