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
    (("dma",), {"bytes_per_cycle": 0}, "dma.bytes_per_cycle must be in [1, 65536], not 0"),
    (("dma",), {"width": 8}, "dma: unknown field(s) ['width']"),
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


# -- structure apart from the mapping policy; buffers by role; the post-processing unit (issue 10, item 1) -----------

def test_structure_and_policy_are_apart():
    from hw.accelerator import MappingPolicy, load_design_with_policy

    with_table = {**BASE, "mapping": {"loop_order": "tokens-outer", "double_buffer": False}}
    acc, policy = load_design_with_policy(with_table)
    assert policy == MappingPolicy(loop_order="tokens-outer", double_buffer=False)
    assert acc == Accelerator.from_dict(BASE) and "mapping" not in acc.to_dict()      # structure only
    assert load_design_with_policy(BASE)[1] == MappingPolicy()                        # no table: the defaults
    assert load_design_with_policy(acc)[1] == MappingPolicy()
    assert policy.with_overrides({"weights": "resident-if-fits"}) == MappingPolicy("tokens-outer", False,
                                                                                     "resident-if-fits")
    with pytest.raises(ValueError, match=r"unknown mapping key\(s\) \['colour'\]; known: loop_order, double_buffer, "
                                         r"weights"):
        policy.with_overrides({"colour": 1})
    with pytest.raises(ValueError, match="mapping.weights must be one of"):
        policy.with_overrides({"weights": "cached"})
    assert MappingPolicy.parse_overrides("double_buffer=false, loop_order=tokens-outer") == \
        {"double_buffer": False, "loop_order": "tokens-outer"}
    with pytest.raises(ValueError, match=r"unknown mapping key\(s\) \['speed'\]"):
        MappingPolicy.parse_overrides("speed=11")
    with pytest.raises(ValueError, match="expected key=value"):
        MappingPolicy.parse_overrides("double_buffer")


def test_buffers_by_role_and_the_post_unit():
    d = Accelerator.from_dict(BASE)
    assert list(d.buffers) == ["weights", "activations", "kv"]
    assert (d.weight_buffer, d.activation_buffer, d.kv_buffer) == tuple(d.buffers.values())
    assert all(b.name == role for role, b in d.buffers.items())
    with pytest.raises(TypeError):
        d.buffers["kv"] = d.weight_buffer                      # read-only
    assert (d.post.lanes, d.post.latency) == (1, 2)             # one lane by default: the unit hw.accel generates
    own = Accelerator.from_dict({**BASE, "post": {"lanes": 4, "latency": 3}})
    assert (own.post.lanes, own.post.latency) == (4, 3) and Accelerator.from_dict(own.to_dict()) == own
    assert hash(own) == hash(Accelerator.from_dict(own.to_dict()))


@pytest.mark.parametrize("post,message", [
    ({"lanes": 0}, "post.lanes must be in [1, 65536], not 0"),
    ({"latency": -1}, "post.latency must be in [0, 64], not -1"),
    ({"depth": 2}, "post: unknown field(s) ['depth']"),
])
def test_bad_post_unit_is_refused_naming_the_field(post, message):
    with pytest.raises((ValueError, TypeError)) as info:
        Accelerator.from_dict({**BASE, "post": post})
    assert message in str(info.value)


def test_a_systolic_array_serves_int8_work_unless_an_int8_engine_is_there():
    fp = {"unit": "fp-mac", "lanes": 4, "rows": 4}
    array = {"unit": "systolic", "rows": 4, "cols": 4}
    mac = {"unit": "int8-mac", "lanes": 4, "rows": 4}
    assert Accelerator.from_dict({**BASE, "engines": [array, fp]}).engine_for("int8-mac").unit == "systolic"
    assert Accelerator.from_dict({**BASE, "engines": [array, mac]}).engine_for("int8-mac").unit == "int8-mac"
    with pytest.raises(ValueError, match=r"engines\[0\] \(fp-vector\): unit 'fp-vector' cannot be an engine"):
        Accelerator.from_dict({**BASE, "engines": [{"unit": "fp-vector", "lanes": 4}]})
    with pytest.raises(ValueError, match=r"engines\[systolic\].count must be 1, not 2"):
        Accelerator.from_dict({**BASE, "engines": [{**array, "count": 2}]})


def test_transfer_cycles_by_hand():
    from fractions import Fraction
    d = _with(("dram",), {"bandwidth_gbps": 1.6, "latency_cycles": 3})
    d["clock_mhz"] = 250
    for b in d["buffers"].values():
        b.update({"banks": 1, "word_bits": 64})
    a = Accelerator.from_dict(d)
    # 1.6 GB/s at 250 MHz is exactly 32/5 bytes a cycle; the DMA defaults to the next power of two, 8 (the lines)
    assert a.dram_rate == Fraction(32, 5) and a.dma.bytes_per_cycle == 8
    assert a.transfer_rate(None, 1) == Fraction(32, 5) and a.transfer_rate(0, 1) == 8
    # LOAD, 2 rows of 10 bytes: set-up + 2 × ceil(10 / 6.4) + latency
    assert a.transfer_cycles(2, 10, None, 1) == 1 + 2 * 2 + 3
    # STORE: one more, its buffer read; an on-chip copy: no latency, the buffer read, 8 bytes a cycle
    assert a.transfer_cycles(2, 10, 1, None) == 1 + 2 * 2 + 3 + 1
    assert a.transfer_cycles(3, 17, 0, 2) == 1 + 3 * 3 + 1
    # nothing to move: the set-up cycle
    assert a.transfer_cycles(0, 10, None, 1) == a.transfer_cycles(5, 0, 1, None) == 1
    # a narrower DMA caps on-chip copies, and DRAM transfers when it is slower than DRAM
    d["dma"] = {"bytes_per_cycle": 4}
    a4 = Accelerator.from_dict(d)
    assert a4.transfer_rate(0, 1) == 4 and a4.transfer_cycles(1, 10, None, 1) == 1 + 3 + 3
    assert a4.to_dict()["dma"] == {"bytes_per_cycle": 4}
