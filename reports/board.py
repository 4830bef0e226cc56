"""The per-board report of ``lowbit board build``: what the bitstream uses against the part, its clocks, which
models' weights the board keeps, and what the encoder does on it — tokens and sequences a second and energy per
inference from the simulator at the clock the build achieved — beside published small-board results.

Written as ``board.json``, ``board.md`` and ``board.png`` (utilisation bars against capacity) next to the
bitstream, each atomically."""

from dataclasses import replace
from pathlib import Path

from fsio import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["board_report", "write_board_report", "PUBLISHED"]

#: Published small-board results the report puts beside ours (their own numbers, with their sources).
PUBLISHED = [
    {"work": "FINN BNN-PYNQ LFC (binarized MLP, MNIST)", "board": "Pynq-Z1 (Zynq-7020)",
     "resources": "31,046 LUT, 112 BRAM36", "source": "Umuroglu et al., FINN, FPGA 2017 (LFC-max on Z7045 in the "
                                                    "paper; Pynq-Z1 figures from the BNN-PYNQ repository)"},
    {"work": "TinBiNN (binarized CNN overlay)", "board": "iCE40 UltraPlus (UP5K)",
     "resources": "about 5,000 LUT4, 5 mW", "source": "Lemieux et al., TinBiNN, arXiv 1903.06630 (2019)"},
]

#: the schemes the report runs the encoder under
SCHEMES = ("bibert", "ternarybert", "bitnet-b1.58")


def _achieved_mhz(build: dict) -> tuple[float, str]:
    """The system clock the build supports: the PLL's when timing is met; otherwise the fastest every limit allows —
    the sync domain's Fmax, the memory domain's Fmax over its multiple, and the worst sync ↔ mem path, which must
    fit one memory period."""
    target = build["target_mhz"]["sync"]
    if build["timing_met"]:
        return target, "the PLL's clock (timing met)"
    limits = {"the sync Fmax": build["fmax_mhz"]["sync"]}
    mem = build["target_mhz"].get("mem")
    if mem:
        ratio = mem / target
        if build["fmax_mhz"].get("mem"):
            limits["the mem Fmax over the memory clock's multiple"] = build["fmax_mhz"]["mem"] / ratio
        cross = build.get("cross_domain")
        if cross and cross.get("worst_ns"):
            limits["the worst sync-to-mem path in one memory period"] = 1e3 / cross["worst_ns"] / ratio
    why, mhz = min(limits.items(), key=lambda kv: kv[1])
    return round(min(target, mhz), 3), f"timing NOT met at the PLL's {target:g} MHz; limited by {why}"


def board_report(bd, build: dict, *, model: str = "bert-tiny", seq_len: int = 128, schemes=SCHEMES) -> dict:
    """The report's content (JSON-ready) for board design ``bd`` (:class:`hw.board.designs.BoardDesign`) and its
    build (:meth:`hw.board.build.BoardBuild.to_dict`)."""
    from hw.board.designs import weight_fit
    from hw.board.protocol import link_spaces, load_seconds
    from reports.model import model_result

    mhz, why = _achieved_mhz(build)
    design = bd.design()
    design = replace(design, clock_mhz=mhz) if hasattr(design, "clock_mhz") else design
    spaces = link_spaces(bd.plan(), bd.dram_bytes)
    dram = next(s for s in spaces if s.name == "dram")
    rows = []
    for sch in schemes:
        fit = weight_fit(bd.board, model, sch)
        row = {"scheme": sch, "weight_bytes": fit.resident_bytes, "dram_bytes": bd.dram_bytes,
               "resident": fit.resident_bytes <= bd.dram_bytes,
               "load_s": load_seconds(spaces, {"dram": -(-fit.resident_bytes // dram.width)}, bd.baud)}
        try:
            r = model_result(model, sch, design, seq_len=seq_len)
            row.update(cycles=r["cycles"], latency_s=r["latency_s"], tokens_per_s=seq_len / r["latency_s"],
                       sequences_per_s=1 / r["latency_s"], energy_j=r["energy_j"]["total"],
                       energy_dram_j=r["energy_j"]["dram"])
        except ValueError as exc:
            row["not_run"] = str(exc)
        rows.append(row)
    used, cap = build["resources"], build["capacity"]
    return {
        "board": bd.board, "design": bd.to_dict(), "bitstream": build["bitstream"],
        "bitstream_bytes": build["bitstream_bytes"], "build_seconds": build["seconds"],
        "resources": {k: {"used": used[k], "available": cap.get(k)} for k in used if k in cap},
        "fmax_mhz": build["fmax_mhz"], "target_mhz": build["target_mhz"], "timing_met": build["timing_met"],
        "clock_mhz": mhz, "clock_basis": why, "model": model, "seq_len": seq_len, "encoder": rows,
        "published": PUBLISHED,
    }


def _plot(report: dict) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = {k: v for k, v in report["resources"].items() if v["available"]}
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(res)))
    names = list(res)
    shares = [100 * res[k]["used"] / res[k]["available"] for k in names]
    bars = ax.barh(names, shares, color=["#c0392b" if s > 100 else "#2e86c1" for s in shares])
    for bar, k in zip(bars, names):
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2,
                f"{res[k]['used']:,} / {res[k]['available']:,}", va="center", fontsize=8)
    ax.axvline(100, color="black", linewidth=0.8)
    ax.set_xlim(0, max(110, max(shares) * 1.3))
    ax.set_xlabel("% of the part")
    ax.set_title(f"{report['board']}: utilisation ({report['design']['name']})")
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _markdown(r: dict) -> str:
    d = r["design"]
    lines = [f"# {r['board']}: board design {d['name']}", "",
             f"Bitstream `{Path(r['bitstream']).name}` ({r['bitstream_bytes']:,} bytes), built in "
             f"{r['build_seconds']:.0f} s. Link {d['baud']:,} baud; {d['dram_bytes'] // 1024} KiB of on-chip DRAM "
             f"(block RAM) keeps the weights.", "", "![utilisation](board.png)", "",
             "| resource | used | available | share |", "|---|---:|---:|---:|"]
    for k, v in r["resources"].items():
        share = f"{100 * v['used'] / v['available']:.1f} %" if v["available"] else "–"
        avail = "–" if v["available"] is None else f"{v['available']:,}"
        lines.append(f"| {k} | {v['used']:,} | {avail} | {share} |")
    lines += ["", "| clock | target MHz | Fmax MHz |", "|---|---:|---:|"]
    for dom, t in r["target_mhz"].items():
        f = r["fmax_mhz"].get(dom)
        lines.append(f"| {dom} | {t:g} | {'–' if f is None else f'{f:.1f}'} |")
    lines += ["", f"The encoder ({r['model']}, {r['seq_len']} tokens) timed by the simulator at "
                  f"{r['clock_mhz']:g} MHz, {r['clock_basis']}; energy from the 45 nm energy model (its DRAM "
                  "terms price the on-chip DRAM as off-chip DRAM: an upper bound):", "",
              "| scheme | weights | resident | load over the link | cycles | ms / sequence | tokens/s | "
              "sequences/s | µJ / inference |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for e in r["encoder"]:
        head = (f"| {e['scheme']} | {e['weight_bytes'] / 1024:.1f} KiB | {'yes' if e['resident'] else 'no'} | "
                f"{e['load_s']:.2f} s |")
        if "not_run" in e:
            lines.append(head + f" not run: {e['not_run']} | | | | |")
        else:
            lines.append(head + f" {e['cycles']:,} | {1e3 * e['latency_s']:.1f} | {e['tokens_per_s']:,.0f} | "
                                f"{e['sequences_per_s']:.2f} | {1e6 * e['energy_j']:.1f} |")
    lines += ["", "Published small-board results, for scale (their numbers, not re-measured):", "",
              "| work | board | resources | source |", "|---|---|---|---|"]
    lines += [f"| {p['work']} | {p['board']} | {p['resources']} | {p['source']} |" for p in r["published"]]
    return "\n".join(lines) + "\n"


def write_board_report(bd, build, out_dir, **kwargs) -> dict:
    """:func:`board_report` for a build (a ``BoardBuild`` or its dict), written into ``out_dir`` as
    ``board.json``, ``board.md`` and ``board.png``; returns the report."""
    b = build.to_dict() if hasattr(build, "to_dict") else build
    report = board_report(bd, b, **kwargs)
    out = Path(out_dir)
    write_json_atomic(out / "board.json", report, indent=2)
    write_bytes_atomic(out / "board.png", _plot(report))
    write_text_atomic(out / "board.md", _markdown(report))
    return report
