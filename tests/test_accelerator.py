"""Accelerator descriptions: every built-in loads, every format loads, bad designs are refused naming the field."""

import json

import pytest

from hw.accelerator import BUILTIN_DESIGNS, Accelerator, load_design
from hw.params import TernaryMacParams

BASE = {
    "name": "tiny", "clock_mhz": 100,
    "engines": [{"unit": "ternary-mac", "lanes": 8, "rows": 4, "max_k": 256}],
    "buffers": {"weights": {"size_kib": 64, "banks": 1, "word_bits": 64},
                "activations": {"size_kib": 16, "banks": 1, "word_bits": 64},
                "kv": {"size_kib": 64}},
    "dram": {"bandwidth_gbps": 1.6}, "vector": {"lanes": 8},
}


def test_builtin_designs_load_and_round_trip():
    assert {"ternary", "xnor", "binary-basis", "billm", "int8", "fp16", "fp32", "systolic-os-32",
            "systolic-ws-128"} <= set(BUILTIN_DESIGNS)
    for name in BUILTIN_DESIGNS:
        d = load_design(name)
        assert Accelerator.from_dict(d.to_dict()) == d


def test_formats(tmp_path):
    import yaml

    (tmp_path / "d.json").write_text(json.dumps(BASE))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(BASE))
    toml = """name = "tiny"
clock_mhz = 100
[[engines]]
unit = "ternary-mac"
lanes = 8
rows = 4
max_k = 256
[buffers.weights]
size_kib = 64
banks = 1
word_bits = 64
[buffers.activations]
size_kib = 16
banks = 1
word_bits = 64
[buffers.kv]
size_kib = 64
[dram]
bandwidth_gbps = 1.6
[vector]
lanes = 8
"""
    (tmp_path / "d.toml").write_text(toml)
    designs = [load_design(tmp_path / f"d.{ext}") for ext in ("json", "yaml", "toml")]
    assert designs[0] == designs[1] == designs[2]
    d = designs[0]
    assert d.engine_for("ternary-mac").params == TernaryMacParams(lanes=8, rows=4, max_k=256)
    assert d.dram_bytes_per_cycle == pytest.approx(16.0)                  # 1.6 GB/s at 100 MHz
    assert d.weight_buffer.size_bytes == 64 * 1024 and d.weight_buffer.bits_per_cycle == 64


def _with(path, value):
    d = json.loads(json.dumps(BASE))
    *parents, last = path
    node = d
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    (("dram", "bandwidth_gbps"), 0, "dram.bandwidth_gbps must be a number in [1e-06, 1e+06] GB/s, not 0"),
    (("clock_mhz",), -5, "clock_mhz must be a number in [0.001, 100000] MHz (1 kHz to 100 GHz), not -5"),
    (("dram", "pj_per_bit"), float("nan"), "dram.pj_per_bit must be a number in [0.001, 10000] pJ/bit, not nan"),
    (("dram", "bandwidth_gbps"), float("inf"), "dram.bandwidth_gbps must be a number in [1e-06, 1e+06] GB/s, not inf"),
    # the bounds themselves are physically sensible designs
    (("clock_mhz",), 1e-3 / 2, "clock_mhz must be a number in [0.001, 100000]"),
    (("clock_mhz",), 100001, "clock_mhz must be a number in [0.001, 100000]"),
    (("buffers", "weights", "banks"), 0, "buffers.weights.banks must be in [1, 4096], not 0"),
    (("buffers", "kv"), KeyError, "missing buffers.kv"),
    (("buffers", "weights", "colour"), 3, "buffers.weights: unknown field(s) ['colour']"),
    (("buffers", "activations", "size_mib"), 1, "give exactly one of size_bytes, size_kib, size_mib"),
    (("engines",), [{"unit": "ternary-mac", "lanes": 0, "rows": 4}], "engines[0] (ternary-mac): lanes must be >= 1"),
    (("engines",), [{"unit": "quantum-mac", "lanes": 1, "rows": 1}], "unknown unit 'quantum-mac'"),
    (("engines",), [{"lanes": 1}], "engines[0]: an engine needs a 'unit' field"),
    (("mapping",), {"loop_order": "diagonal"}, "mapping.loop_order must be one of"),
    (("vector", "fp_bits"), 8, "vector.fp_bits must be one of 16, 32, not 8"),
    (("turbo",), True, "unknown field(s) ['turbo']"),
    (("dram",), 25.6, "dram must be a table, not 25.6"),
    (("buffers", "kv", "banks"), 3, "buffers.kv: 65,536 bytes do not split into 3 equal banks"),
    (("engines",), {"unit": "ternary-mac"}, "engines must be an array of tables"),
    (("buffers", "kv", "size_kib"), 0.1, "buffers.kv.size_kib = 0.1 is not a whole number of bytes"),
])
def test_bad_designs_are_refused_naming_the_field(path, value, message):
    with pytest.raises((ValueError, TypeError)) as info:
        Accelerator.from_dict(_with(path, value))
    assert message in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown design 'tpu'; built-in designs: "):
        load_design("tpu")
    with pytest.raises(ValueError, match="does not exist"):
        load_design(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_design(tmp_path / "bad.toml")
    (tmp_path / "bad.ini").write_text("[x]")
    with pytest.raises(ValueError, match="unknown format '.ini'"):
        load_design(tmp_path / "bad.ini")


def test_missing_engine_names_the_op():
    d = Accelerator.from_dict(BASE)
    with pytest.raises(ValueError, match=r"design 'tiny' has no fp-mac engine \(needed by layer.attn.qk\); it has: "
                                         r"ternary-mac"):
        d.engine_for("fp-mac", op="layer.attn.qk")
