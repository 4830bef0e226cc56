"""Bad inputs found by trying the tool as a new user would (issue 9, item 5): each one is refused with exit
status 2 and one ``lowbit: error:`` line naming the value, before any long work — never a traceback. Ctrl-C
ends a run with status 130, one line, and no half-written file.

The CLI runs in-process through :func:`lowbit.cli.main` (the Ctrl-C case as a real process)."""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from hw.accelerator import design_path
from lowbit.cli import main
from models.config import builtin_config_path

REPO = Path(__file__).resolve().parents[1]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(argv, capsys, *needles):
    """Run ``argv``; assert exit 2 and one ``lowbit: error:`` line holding every needle; return that line."""
    code, out, err = _run(argv, capsys)
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("lowbit: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- model configs ----------------------------------------------------------------------------------------------

BERT = json.loads(builtin_config_path("bert-base").read_text())
LLAMA = json.loads(builtin_config_path("llama-7b").read_text())


@pytest.mark.parametrize("base,field,value,message", [
    (BERT, "num_attention_heads", 0, "num_attention_heads must be a positive integer, not 0"),   # divided by 0
    (BERT, "hidden_size", None, "hidden_size must be a positive integer, not None"),
    (BERT, "hidden_size", float("nan"), "hidden_size must be a positive integer, not nan"),
    (BERT, "hidden_size", "768", "hidden_size must be a positive integer, not '768'"),
    (BERT, "hidden_size", 768.0, "hidden_size must be a positive integer, not 768.0"),
    (BERT, "num_hidden_layers", True, "num_hidden_layers must be a positive integer, not True"),
    (BERT, "intermediate_size", -3072, "intermediate_size must be a positive integer, not -3072"),
    (BERT, "type_vocab_size", 2.5, "type_vocab_size must be a positive integer, not 2.5"),
    (BERT, "pad_token_id", 30522, "pad_token_id 30522 is not below vocab_size 30522"),
    (BERT, "layer_norm_eps", "1e-12", "layer_norm_eps must be a finite positive number, not '1e-12'"),
    (LLAMA, "num_key_value_heads", 0, "num_key_value_heads must be a positive integer, not 0"),  # was `or heads`
    (LLAMA, "num_key_value_heads", 5, "num_attention_heads 32 is not a multiple of num_key_value_heads 5"),
    (LLAMA, "head_dim", 0, "head_dim must be a positive integer, not 0"),
    (LLAMA, "tie_word_embeddings", "false", "tie_word_embeddings must be true or false, not 'false'"),
    (LLAMA, "rope_theta", float("inf"), "rope_theta must be a finite positive number, not inf"),
])
def test_bad_config_fields_are_refused_naming_file_and_field(tmp_path, capsys, base, field, value, message):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**base, field: value}))           # json writes NaN and Infinity as Python reads them
    for argv in (["simulate", "model", "--model", cfg, "--scheme", "fp16", "--seq", 8],
                 ["analyze", "--model", cfg, "--scheme", "fp16", "--seq", 8]):
        _refused(argv, capsys, f"model config file '{cfg}'", message)


def test_hf_null_means_unset_for_optional_fields(tmp_path, capsys):
    # Hugging Face writes num_key_value_heads=None for "as many as the attention heads"; null stays that
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**LLAMA, "num_key_value_heads": None, "pad_token_id": None}))
    code, out, err = _run(["analyze", "--model", cfg, "--scheme", "fp16", "--seq", 8, "--json"], capsys)
    assert code == 0, err


def test_bad_config_files(tmp_path, capsys):
    _refused(["analyze", "--model", tmp_path, "--scheme", "fp16"], capsys,      # a directory without config.json
             f"model config file '{tmp_path / 'config.json'}' does not exist")
    _refused(["analyze", "--model", "/dev/null", "--scheme", "fp16"], capsys,
             "model config file '/dev/null' is not a regular file")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    _refused(["analyze", "--model", tmp_path / "bin.json", "--scheme", "fp16"], capsys,
             f"model config file '{tmp_path / 'bin.json'}' cannot be read")


# -- designs ----------------------------------------------------------------------------------------------------

TERNARY = design_path("ternary").read_text()


def _design_file(tmp_path, replace: dict[str, str]) -> Path:
    text = TERNARY
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "d.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("replace,message", [
    ({"bandwidth_gbps = 25.6": "bandwidth_gbps = 1e-300"},        # overflowed to inf cycles
     "dram.bandwidth_gbps must be a number in [1e-06, 1e+06] GB/s, not 1e-300"),
    ({"bandwidth_gbps = 25.6": "bandwidth_gbps = nan"},
     "dram.bandwidth_gbps must be a number in [1e-06, 1e+06] GB/s, not nan"),
    ({"clock_mhz = 200": "clock_mhz = 1e308"},                    # divided by zero bytes a cycle
     "clock_mhz must be a number in [0.001, 100000] MHz (1 kHz to 100 GHz), not 1e+308"),
    ({"clock_mhz = 200": "clock_mhz = 1e-300"},                   # was accepted
     "clock_mhz must be a number in [0.001, 100000] MHz (1 kHz to 100 GHz), not 1e-300"),
    ({"latency_cycles = 20": "latency_cycles = 20\npj_per_bit = 1e9"},
     "dram.pj_per_bit must be a number in [0.001, 10000] pJ/bit, not 1000000000.0"),
    ({"latency_cycles = 20": "latency_cycles = 20\npj_per_bit = 0"},
     "dram.pj_per_bit must be a number in [0.001, 10000] pJ/bit, not 0"),
    ({"latency_cycles = 20": "latency_cycles = 1000000000000"},
     "dram.latency_cycles must be in [0, 1000000000], not 1000000000000"),
    ({"size_mib = 2": "size_mib = 1e308"},                        # overflowed to inf bytes
     "buffers.weights.size_mib must be a positive number of at most 1,048,576 (1 TiB), not 1e+308"),
    ({"size_mib = 2": "size_mib = nan"},
     "buffers.weights.size_mib must be a positive number of at most 1,048,576 (1 TiB), not nan"),
])
def test_out_of_range_design_numbers_are_refused_with_the_bounds(tmp_path, capsys, replace, message):
    path = _design_file(tmp_path, replace)
    _refused(["simulate", "model", "--model", "bert-base", "--scheme", "bitnet-b1.58", "--design", path, "--seq", 8],
             capsys, str(path), message)


@pytest.mark.parametrize("clock,bandwidth", [("0.001", "1e-6"), ("100000", "1e6"), ("100000", "1e-6")])
def test_designs_at_the_bounds_run(tmp_path, capsys, clock, bandwidth):
    path = _design_file(tmp_path, {"clock_mhz = 200": f"clock_mhz = {clock}",
                                   "bandwidth_gbps = 25.6": f"bandwidth_gbps = {bandwidth}"})
    code, out, err = _run(["simulate", "model", "--model", "bert-base", "--scheme", "bitnet-b1.58", "--design", path,
                           "--seq", 8, "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["cycles"] > 0 and math.isfinite(r["latency_s"]) and math.isfinite(r["energy_j"]["total"])


def test_design_paths_that_are_not_design_files(tmp_path, capsys):
    (tmp_path / "dir.toml").mkdir()
    for path in (tmp_path / "dir.toml", tmp_path):
        _refused(["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--design", path], capsys,
                 f"design path '{path}' is a directory, not a .toml, .yaml or .json file")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe name")
    _refused(["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--design", tmp_path / "bin.toml"],
             capsys, f"design file '{tmp_path / 'bin.toml'}' cannot be read")


# -- output paths: one rule for every command that writes ------------------------------------------------------

def _probe_refused(directory: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=directory)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.fixture
def unwritable(tmp_path):
    """A directory no file can be created in: a read-only one, or — for root, whom permission bits do not stop —
    /proc, where only the kernel makes entries."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        if _probe_refused(d):
            yield d
        elif Path("/proc").is_dir() and _probe_refused(Path("/proc")):
            yield Path("/proc")
        else:
            pytest.skip("no unwritable directory on this machine")
    finally:
        d.chmod(0o755)


@pytest.fixture
def layer(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "W.npy", rng.standard_normal((6, 16)).astype(np.float32))
    np.save(tmp_path / "X.npy", rng.standard_normal((2, 16)).astype(np.float32))
    return tmp_path


# Every command that writes, its output as FILE (a file's directory must exist) or DIR (one missing last level is
# created); {out} is the output path.
WRITERS = {
    "verilog": ("DIR", ["verilog", "ternary-mac", "--lanes", 4, "--rows", 2, "--max-k", 16, "-o", "{out}"]),
    "synth --csv": ("FILE", ["synth", "ternary-mac", "--lanes", 2, "--rows", 1, "--family", "ice40", "--csv",
                             "{out}"]),
    "simulate linear": ("FILE", ["simulate", "linear", "--scheme", "bitnet-b1.58", "--weights", "{layer}/W.npy",
                                 "--inputs", "{layer}/X.npy", "--lanes", 4, "--rows", 2, "--out", "{out}"]),
    "report linear": ("DIR", ["report", "linear", "--in-features", 16, "--out-features", 6, "--tokens", 1,
                              "--rtl-tokens", 0, "--lanes", 4, "--rows", 2, "-o", "{out}"]),
    "report model": ("DIR", ["report", "model", "--model", "minilm-l6", "--scheme", "int8", "--seq", 8, "-o",
                             "{out}"]),
    "workload": ("FILE", ["workload", "--model", "bert-base", "--scheme", "int8", "--seq", 8, "-o", "{out}"]),
    "fidelity": ("FILE", ["fidelity", "--methods", "sign", "-o", "{out}"]),
}


def _argv(name, out, layer):
    return [str(a).replace("{out}", str(out)).replace("{layer}", str(layer)) for a in WRITERS[name][1]]


@pytest.mark.parametrize("name", list(WRITERS))
def test_output_in_a_missing_directory_is_refused(tmp_path, layer, capsys, name):
    kind = WRITERS[name][0]
    # a file needs its directory; a directory may be created one level deep, not more
    out = tmp_path / "missing" / ("out.x" if kind == "FILE" else "sub")
    _refused(_argv(name, out, layer), capsys, f"cannot write to '{out}': directory '{out.parent}' does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("name", list(WRITERS))
def test_output_in_an_unwritable_directory_is_refused(unwritable, layer, capsys, name):
    out = unwritable / "out.x"
    _refused(_argv(name, out, layer), capsys, f"cannot write to '{out}': directory '{unwritable}' is not writable")


@pytest.mark.parametrize("name", list(WRITERS))
def test_output_of_the_wrong_kind_is_refused(tmp_path, layer, capsys, name):
    if WRITERS[name][0] == "FILE":
        _refused(_argv(name, tmp_path, layer), capsys, f"'{tmp_path}' is a directory; give a file name")
        # the atomic rename would replace a device node or a pipe (as root, /dev/null itself): refused. A FIFO of
        # our own stands for them, so that a regression cannot replace the machine's /dev/null.
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        _refused(_argv(name, fifo, layer), capsys, f"'{fifo}' exists and is not a regular file")
        assert fifo.is_fifo()
    else:
        (tmp_path / "file").write_text("x")
        _refused(_argv(name, tmp_path / "file", layer), capsys, f"'{tmp_path / 'file'}' exists and is not a directory")


def test_outputs_that_the_rule_allows(tmp_path, layer, capsys):
    assert _run(_argv("workload", tmp_path / "w.json", layer), capsys)[0] == 0
    assert json.loads((tmp_path / "w.json").read_text())["format"] == "lowbit.workload"
    assert _run(_argv("verilog", tmp_path / "new", layer), capsys)[0] == 0          # one missing level: created
    assert len(list((tmp_path / "new").glob("*.v"))) == 1
    assert not list(tmp_path.rglob(".lowbit-probe-*"))                               # the write probe is gone


# -- schemes -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme,message", [
    ("qbb:", "scheme 'qbb:' has an empty option list after ':'"),
    ("qbb:,", "scheme option '' in 'qbb:,' is not key=value"),
    ("qbb:=3", "scheme option '=3' in 'qbb:=3' is not key=value"),
    ("qbb:n_bases=", "scheme option 'n_bases=' in 'qbb:n_bases=' is not key=value"),
    ("qbb:n_bases=2,", "scheme option '' in 'qbb:n_bases=2,' is not key=value"),
    ("qbb:n_bases=2,n_bases=3", "scheme option 'n_bases' is given twice in 'qbb:n_bases=2,n_bases=3'"),
    ("qbb:n_bases=2.0", "scheme option n_bases=2.0 in 'qbb:n_bases=2.0' must be an integer"),
    ("qbb:n_bases=17", "qbb needs n_bases in [1, 16]"),
    ("bibert:strict=2", "scheme option strict=2 in 'bibert:strict=2' must be true or false"),
    ("bibert:zero_policy=zero", "scheme option zero_policy='zero' in 'bibert:zero_policy=zero' must be one of "
                                "torch, pos, neg"),
    (":n_bases=2", "unknown scheme ''"),
])
def test_bad_scheme_specs(capsys, scheme, message):
    _refused(["analyze", "--model", "bert-base", "--scheme", scheme], capsys, message)


# -- command-line numbers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--seq", "0"], "got '0'"),
    (["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--decode-steps", "-1"], "got '-1'"),
    (["workload", "--model", "bert-base", "--scheme", "int8", "--batch", "1.5", "-o", "w.json"], "got '1.5'"),
])
def test_bad_numbers_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_fpga_options_without_a_family_are_refused(capsys):
    _refused(["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--fpga-estimate"], capsys,
             "--fpga-estimate needs --fpga FAMILY")


def test_fpga_estimate_prints_the_estimate_and_why_nothing_was_synthesised(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    design = tmp_path / "small.json"          # a small engine: its synthesis for the estimate takes seconds
    design.write_text(json.dumps({
        "name": "small", "clock_mhz": 50, "engines": [{"unit": "ternary-mac", "lanes": 4, "rows": 2, "max_k": 4096},
                                                     {"unit": "fp-mac", "lanes": 2, "rows": 2}],
        "buffers": {"weights": {"size_kib": 64, "word_bits": 64}, "activations": {"size_kib": 16, "word_bits": 64},
                    "kv": {"size_kib": 16, "word_bits": 64}},
        "dram": {"bandwidth_gbps": 1}, "vector": {"lanes": 2}}))
    code, out, err = _run(["simulate", "model", "--model", "bert-base", "--scheme", "bitnet-b1.58", "--seq", 8,
                           "--design", design, "--fpga", "ice40", "--fpga-estimate", "--json"], capsys)
    assert code == 0, err
    f = json.loads(out)["area"]["fpga"]
    assert f["synthesized"] is None and "not asked" in f["synthesis_problem"]
    # 64 KiB of weights, one read port, in 4 Kbit blocks
    assert f["estimate"]["buffer_brams"]["weights"] == 64 * 1024 * 8 // 4096
    code, out, err = _run(["simulate", "model", "--model", "bert-base", "--scheme", "bitnet-b1.58", "--seq", 8,
                           "--design", design, "--fpga", "ice40", "--fpga-estimate"], capsys)
    assert code == 0 and "the accelerator not synthesised: not asked for" in out and "estimate (" in out


def test_sequence_longer_than_the_model_is_refused(capsys):
    _refused(["simulate", "model", "--model", "bert-base", "--scheme", "int8", "--seq", 513], capsys,
             "seq_len + decode_steps = 513 exceeds bert-base's 512 positions")


# -- Ctrl-C ------------------------------------------------------------------------------------------------------

def _wait_until_torch_loads(proc, timeout: float = 60) -> None:
    """Return once ``proc`` maps libtorch: the CLI imports torch only inside ``main()`` (start-up stays fast), so
    from then on the interrupt lands in the command, not in Python's start-up."""
    deadline = time.monotonic() + timeout
    maps = Path(f"/proc/{proc.pid}/maps")
    while time.monotonic() < deadline and proc.poll() is None:
        if not maps.exists():                    # no /proc: give start-up a generous while instead
            time.sleep(5)
            return
        if "libtorch" in maps.read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"the command did not load torch within {timeout} s (exit status {proc.poll()})")


def test_ctrl_c_exits_130_with_one_line_and_no_partial_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # BiLLM's fidelity on real MiniLM weights: a minute of work, written at the end
    # SIGINT restored in the child: a suite started in the background (`cmd &` without job control) runs with SIGINT
    # ignored, which a child inherits, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "lowbit", "fidelity", "--methods", "billm", "-o",
                             str(out / "fidelity.md")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_until_torch_loads(proc)
        time.sleep(0.5)                          # into the work itself
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert stderr == "lowbit: interrupted\n" and stdout == ""
    assert list(out.iterdir()) == []             # no report, no temporary file, no write probe


def test_a_reader_that_goes_away_ends_the_run_quietly():
    # `lowbit ... --json | head -c 1`: the reader closes before the result is printed
    proc = subprocess.Popen([sys.executable, "-m", "lowbit", "simulate", "model", "--model", "bert-base", "--scheme",
                             "int8", "--seq", "8", "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1 and stderr == b"", stderr        # no BrokenPipeError traceback


# -- boards (lowbit board) ----------------------------------------------------------------------------------------

def test_unknown_board(capsys, tmp_path):
    _refused(["board", "build", "de10-nano", "-o", tmp_path / "b"], capsys, "unknown board 'de10-nano'",
             "icebreaker, ulx3s-85f")


def test_a_model_that_does_not_fit_the_board(capsys, tmp_path):
    _refused(["board", "build", "ulx3s-85f", "--model", "bert-tiny", "--scheme", "int8", "-o", tmp_path / "b"],
             capsys, "--model bert-tiny --scheme int8", "397,824 bytes", "131,072")
    assert not (tmp_path / "b").exists()


def test_a_design_whose_buffers_cannot_fit_is_refused_at_once(capsys, tmp_path):
    # fp16's 4.5 MiB of buffers, one DP16KD per 2 KiB and read port by the packing rule: refused before elaboration
    t = time.perf_counter()
    _refused(["board", "build", "ulx3s-85f", "--design", "fp16", "-o", tmp_path / "b"], capsys,
             "board design ulx3s-85f+fp16", "5,632 DP16KD", "has 208")
    assert time.perf_counter() - t < 30


def test_a_port_that_does_not_exist(capsys):
    _refused(["board", "run", "--port", "/dev/no-such-tty", "--board", "ulx3s-85f", "--block", "bibert:8x64x24"],
             capsys, "--port /dev/no-such-tty")


def test_a_port_nobody_answers(capsys):
    master, slave = os.openpty()
    try:
        _refused(["board", "run", "--port", os.ttyname(slave), "--board", "ulx3s-85f", "--block", "bibert:8x64x24",
                  "--timeout", "0.5"], capsys, f"--port {os.ttyname(slave)}", "no board answered")
    finally:
        os.close(slave)
        os.close(master)


def test_a_block_the_board_cannot_hold(capsys):
    _refused(["board", "run", "--port", "/dev/null", "--board", "ulx3s-85f", "--block", "bitnet-ffn:16x512x2048"],
             capsys, "bitnet-ffn:16x512x2048", "ulx3s-85f")


def test_the_icebreaker_design_is_refused_for_its_memory_clock(capsys, tmp_path):
    """The iCEBreaker design's pumped RAMs need a memory clock at 6 × the system clock; the iCE40 PLL's second output
    is only ever half its first: refused at once, before anything is elaborated (its size would be refused after
    synthesis too: docs/boards.md)."""
    t = time.perf_counter()
    _refused(["board", "build", "icebreaker", "-o", tmp_path / "b"], capsys, "iCE40 PLL", "mem_ratio must be 1 or 2",
             "not 6")
    assert time.perf_counter() - t < 30 and not (tmp_path / "b" / "top.bin").exists()
