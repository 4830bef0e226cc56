"""The simulator build cache: one build per Verilog text, shared by concurrent processes, never a half-built model;
and the refusals of an unknown or missing simulator."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hw.export import write_unit
from hw.params import TernaryMacParams
from rtl_tests.simulators import SimulatorMissing, build_model, check_simulator, top_ports

ROOT = Path(__file__).resolve().parents[1]

BUILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from rtl_tests.simulators import build_model
    go = Path(sys.argv[3])
    while not go.exists():          # both processes start their build at the same moment
        time.sleep(0.01)
    m = build_model("verilator", Path(sys.argv[1]), sys.argv[2], cache_dir=Path(sys.argv[4]))
    print(json.dumps({"cached": m.cached, "dir": str(m.build_dir)}))
""")


@pytest.fixture(scope="module")
def unit(tmp_path_factory):
    p = TernaryMacParams(lanes=2, rows=1, max_k=4)
    return write_unit(p, tmp_path_factory.mktemp("unit"))


def test_two_processes_build_one_model_once(unit, tmp_path):
    go, cache = tmp_path / "go", tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(unit.verilog_path), unit.manifest["module"], str(go),
                               str(cache)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    go.write_text("")
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        outs.append(json.loads(out.splitlines()[-1]))
    assert sorted(o["cached"] for o in outs) == [False, True]        # one built, the other waited and reused it
    assert outs[0]["dir"] == outs[1]["dir"]
    built = Path(outs[0]["dir"])
    assert (built / unit.manifest["module"]).is_file()                # the Verilator executable
    assert json.loads((built / ".lowbit-built.json").read_text())["top"] == unit.manifest["module"]
    assert not list(cache.glob("verilator/*.tmp*"))


def test_an_interrupted_build_is_rebuilt_not_trusted(unit, tmp_path):
    first = build_model("verilator", unit.verilog_path, unit.manifest["module"], cache_dir=tmp_path)
    assert not first.cached
    assert build_model("verilator", unit.verilog_path, unit.manifest["module"], cache_dir=tmp_path).cached
    (first.build_dir / ".lowbit-built.json").unlink()                 # as if the builder died before its marker
    (first.build_dir / unit.manifest["module"]).write_bytes(b"half a binary")
    again = build_model("verilator", unit.verilog_path, unit.manifest["module"], cache_dir=tmp_path)
    assert not again.cached and again.build_dir == first.build_dir
    assert (again.build_dir / unit.manifest["module"]).read_bytes() != b"half a binary"


def test_other_verilog_is_another_model(unit, tmp_path):
    top = unit.manifest["module"]
    a = build_model("icarus", unit.verilog_path, top, cache_dir=tmp_path)
    changed = tmp_path / "changed.v"
    changed.write_text(unit.verilog_path.read_text() + "\n// a comment changes the text, so the key\n")
    b = build_model("icarus", changed, top, cache_dir=tmp_path)
    assert not a.cached and not b.cached and a.build_dir != b.build_dir
    assert build_model("icarus", unit.verilog_path, top, cache_dir=tmp_path).build_dir == a.build_dir


def test_unknown_simulator_is_refused():
    with pytest.raises(ValueError, match="unknown simulator 'questa'; use one of verilator, icarus"):
        check_simulator("questa")


def test_missing_icarus_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))                          # an empty PATH: no iverilog, no vvp
    with pytest.raises(SimulatorMissing, match="iverilog and vvp not found on PATH: install Icarus Verilog"):
        check_simulator("icarus")


def test_top_ports_from_the_header(unit):
    ports = top_ports(unit.verilog_path.read_text(), unit.manifest["module"])
    assert set(ports) == {p["name"] for p in unit.manifest["ports"]}
    with pytest.raises(ValueError, match="no module 'nope'"):
        top_ports(unit.verilog_path.read_text(), "nope")
