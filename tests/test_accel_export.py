"""``lowbit verilog accelerator``: the whole accelerator's Verilog and manifest, and its refusals."""

import json
import shutil
import subprocess

import pytest

from lowbit.cli import main

DESIGN = """
name = "small"
clock_mhz = 200
[[engines]]
unit = "int8-mac"
lanes = 8
rows = 4
max_k = 256
[buffers.weights]
size_kib = 4
banks = 2
word_bits = 64
[buffers.activations]
size_kib = 4
banks = 2
word_bits = {act_word}
[buffers.kv]
size_kib = 1
word_bits = 64
[dram]
bandwidth_gbps = 3.2
latency_cycles = 10
[vector]
lanes = 8
"""


def _design(tmp_path, act_word=64):
    path = tmp_path / "small.toml"
    path.write_text(DESIGN.replace("{act_word}", str(act_word)))
    return path


def test_writes_verilog_and_a_manifest(tmp_path, capsys):
    out = tmp_path / "acc"
    assert main(["verilog", "accelerator", "--design", str(_design(tmp_path)), "--imem-depth", "64",
                 "-o", str(out)]) == 0
    assert "lowbit_accel.v" in capsys.readouterr().out
    text = (out / "lowbit_accel.v").read_text()
    m = json.loads((out / "lowbit_accel.json").read_text())
    assert m["module"] == "lowbit_accel" and f"module {m['module']}(" in text
    assert m["isa_version"] == 1 and "FINISH" in m["cycle_count"]
    names = {p["name"]: p for p in m["ports"]}
    for stream in ("dram_rreq", "dram_rdata", "dram_wreq", "dram_wack"):
        for member in ("valid", "ready", "payload"):
            assert f"{stream}__{member}" in names
    # 3.2 GB/s at 200 MHz: 16 bytes a cycle; the payload layouts say where count and data sit
    assert m["plan"]["dram_lanes"] == 16
    assert m["dram_protocol"]["payloads"]["dram_rdata"] == {"data": {"offset": 0, "width": 128},
                                                          "count": {"offset": 128, "width": 5}}
    assert names["dram_rdata__payload"]["width"] == 133 and names["imem_data"]["width"] == 256
    assert [b["name"] for b in m["buffer_map"]] == ["weights", "activations", "kv"]
    assert m["buffer_map"][0]["line_bytes"] == 16 and m["buffer_map"][2]["line_bytes"] == 8
    # the RAM modules it instantiates are in the file: it elaborates on its own
    if shutil.which("iverilog"):
        run = subprocess.run(["iverilog", "-g2012", "-o", "/dev/null", "-s", "lowbit_accel", "lowbit_accel.v"],
                             cwd=out, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]


def test_writes_the_block_ram_form(tmp_path, capsys):
    out = tmp_path / "acc"
    assert main(["verilog", "accelerator", "--design", str(_design(tmp_path)), "--imem-depth", "64",
                 "--ram-form", "pumped", "-o", str(out)]) == 0
    text = (out / "lowbit_accel.v").read_text()
    m = json.loads((out / "lowbit_accel.json").read_text())
    # the activations buffer's RAMs have the most writers: 2 movers, 1 result writer, the post unit, the host
    assert m["ram_form"] == "pumped" and m["ram_phases"] == 6 and "mem_clk" in m["clocks"]
    assert "mem_clk" in {p["name"] for p in m["ports"]}
    assert "module lowbit_rampump_" in text and "module lowbit_ram_" not in text
    if shutil.which("iverilog"):
        run = subprocess.run(["iverilog", "-g2012", "-o", "/dev/null", "-s", "lowbit_accel", "lowbit_accel.v"],
                             cwd=out, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["verilog", "accelerator", "-o", "{out}"], "needs --design"),
    (["verilog", "accelerator", "--design", "{design}", "--lanes", "4", "-o", "{out}"], "--lanes: unit options"),
    (["verilog", "accelerator", "--design", "nowhere", "-o", "{out}"], "unknown design 'nowhere'"),
    (["verilog", "ternary-mac", "--lanes", "4", "--rows", "2", "--design", "{design}", "-o", "{out}"],
     "--design, --imem-depth and --ram-form are for `lowbit verilog accelerator`"),
    (["verilog", "accelerator", "--design", "{bad}", "-o", "{out}"], "buffers.activations.word_bits = 12"),
])
def test_refusals_name_the_value(tmp_path, capsys, argv, message):
    design, bad = _design(tmp_path), tmp_path / "bad" / "small.toml"
    bad.parent.mkdir()
    bad.write_text(DESIGN.replace("{act_word}", "12"))
    argv = [a.format(out=tmp_path / "o", design=design, bad=bad) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_verify_accelerator_prints_the_table(capsys):
    assert main(["verify", "accelerator", "--designs", "random:5", "--programs", "3", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "| random:5 | 3 |" in out and "3/3 | 3/3" in out and "all equal" in out


def test_verify_accelerator_runs_a_block(capsys):
    # a TernaryBERT linear on a small ternary design: its output equals models/' integer path, its cycles the
    # simulator's
    assert main(["verify", "accelerator", "--shapes", "ternarybert:6x64x20", "--designs", "ternary@small"]) == 0
    out = capsys.readouterr().out
    assert "| ternarybert:6x64x20 | ternary@small |" in out and "| yes | yes | yes |" in out and "all equal" in out


@pytest.mark.parametrize("argv, message", [
    (["--designs", "random:x"], "random:N needs a non-negative integer seed"),
    (["--designs", ","], "--designs: give at least one design"),
    (["--designs", "random:1,nowhere"], "unknown design 'nowhere'"),
    (["--designs", "ternary", "--programs", "3"], "design 'ternary': engine 2 (fp-mac) has no integer reference"),
    (["--shapes", "conv:1x2x3"], "shape 'conv:1x2x3': unknown block 'conv'"),
    (["--shapes", "qbb:8x64"], "shape 'qbb:8x64': give the size as MxKxN"),
    (["--shapes", "bibert-attn:8x64x5"], "the hidden size 64 must split into 5 heads"),
    (["--designs", "xnor@fast"], "design 'xnor@fast': unknown variant 'fast'"),
    (["--shapes", "ternarybert:8x64x32", "--designs", "xnor"], "design 'xnor' has no ternary-mac engine"),
    (["--shapes", "qbb:8x64x32", "--programs", "2"], "--shapes runs blocks; --programs and --stall run random"),
])
def test_verify_accelerator_refuses_bad_input(capsys, argv, message):
    assert main(["verify", "accelerator", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
