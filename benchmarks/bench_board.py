"""The boards: bitstream builds, what the designs use, and the host link (a benchmark, not a test: it prints, it
does not assert).

    .venv/bin/python benchmarks/bench_board.py [--boards ulx3s-85f,icebreaker] [--out DIR] [--no-build]

Per board, its built-in design (``hw.board.designs``) goes through ``lowbit board build``'s flow (Yosys, the fit
check, nextpnr, the packer): printed are the seconds per stage, LUT / FF / block RAM / DSP against the part, and
Fmax against the clock the PLL makes — or, for a design that does not fit, the refusal with its numbers (the
iCEBreaker's). Then the link: the bytes and seconds to load BERT-tiny's encoder weights at the board's baud rate
with frames of up to :data:`hw.board.protocol.PAYLOAD_BYTES` against the baseline of one line per frame, both
from the same frame arithmetic (``hw.board.protocol.load_seconds``); and a simulated session (the ULX3S design in
Verilator driven through its UART by the host driver): link cycles per second against the accelerator's own
cycles per second in the same run.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw.board.build import BoardFitError, build_board  # noqa: E402
from hw.board.designs import BOARD_DESIGNS, weight_fit  # noqa: E402
from hw.board.protocol import (BITS_PER_BYTE, HEADER_BYTES, REPLY_HEADER_BYTES, link_spaces,  # noqa: E402
                               load_seconds)
from hw.board.top import BoardTop  # noqa: E402


def _build(name: str, out: Path) -> None:
    bd = BOARD_DESIGNS[name]
    top = BoardTop.of(bd)
    t = time.perf_counter()
    try:
        r = build_board(bd.board, top, out / name, sync_hz=bd.clock_hz, mem_ratio=top.ram_phases, classic_abc=True)
    except BoardFitError as exc:
        print(f"| {name} | refused after {time.perf_counter() - t:.0f} s: {exc} |||||||")
        return
    res, cap = r.resources, r.capacity
    fm = ", ".join(f"{d} {'–' if f is None else f'{f:.1f}'} / {r.target_mhz[d]:g}" for d, f in r.fmax_mhz.items())
    stages = " + ".join(f"{k} {v:.0f}" for k, v in r.stage_seconds.items())
    print(f"| {name} | {r.seconds:.0f} s ({stages}) | {res['luts']:,} / {cap['luts']:,} | {res['ffs']:,} | "
          f"{res['brams']} / {cap['brams']} | {res['dsps']} / {cap['dsps']} | {fm} | "
          f"{'met' if r.timing_met else 'NOT met'} | {r.bitstream_bytes:,} |", flush=True)


def _link(name: str) -> None:
    bd = BOARD_DESIGNS[name]
    spaces = link_spaces(bd.plan(), bd.dram_bytes)
    dram = next(s for s in spaces if s.name == "dram")
    for scheme in ("bibert", "bitnet-b1.58"):
        fit = weight_fit(bd.board, "bert-tiny", scheme)
        lines = -(-fit.resident_bytes // dram.width)
        multi = load_seconds(spaces, {"dram": lines}, bd.baud)
        # the baseline: a frame per line (the link's first version), frame and reply headers on every line
        single = lines * (HEADER_BYTES + REPLY_HEADER_BYTES + dram.width) * BITS_PER_BYTE / bd.baud
        print(f"| {name} | {scheme} | {fit.resident_bytes:,} | {dram.width} | {bd.baud:,} | {multi:.2f} s | "
              f"{single:.2f} s | {single / multi:.1f}× |")


def _session() -> None:
    from rtl_tests.board import run_board_block

    bd = BOARD_DESIGNS["ulx3s-85f"]
    s = run_board_block("bibert:8x64x24", bd)
    print(f"simulated ULX3S session (bibert:8x64x24, divisor 4, Verilator): {s.session_cycles:,} cycles in "
          f"{s.session_seconds:.1f} s = {s.session_cycles / s.session_seconds:,.0f} cycles/s through the UART "
          f"bridge; the program itself {s.cycles:,} cycles (equal to the simulator's: {s.cycles == s.sim_cycles}); "
          f"link {s.bytes_out:,} bytes out, {s.bytes_in:,} in")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", default="ulx3s-85f,icebreaker")
    ap.add_argument("--out", help="build directory (default: a temporary one)")
    ap.add_argument("--no-build", action="store_true", help="skip the bitstream builds")
    args = ap.parse_args()
    boards = args.boards.split(",")
    if not args.no_build:
        print("| board design | build | LUT | FF | BRAM | DSP | Fmax / target MHz | timing | bitstream bytes |")
        print("|---|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory(prefix="lowbit-bench-board-") as tmp:
            out = Path(args.out) if args.out else Path(tmp)
            for name in boards:
                _build(name, out)
    print()
    print("| board | scheme | BERT-tiny weights (bytes) | DRAM line | baud | load, frames of ≤ 64 B | "
          "load, a line a frame (baseline) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name in boards:
        _link(name)
    print()
    _session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
