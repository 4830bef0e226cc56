"""``lowbit board``: what fits (hand-derived arithmetic), and the host driver end to end — ``lowbit board serve``
(the ULX3S design in Verilator behind a pseudo-terminal) driven by ``lowbit board run --check`` in another process,
as a real board would be. The command's refusals are in tests/test_bad_input.py."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hw.board.designs import weight_fit
from lowbit.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_bert_tiny_weights_by_hand():
    # BERT-tiny: 2 layers × (4 · 128 · 128 + 2 · 128 · 512) = 393,216 encoder weights
    f = weight_fit("icebreaker", "bert-tiny", "bibert")
    assert f.params == 393_216 and f.weight_bytes == 49_152            # 1 bit each: 48 KiB
    # one fp32 scale per output row: 2 × (4 · 128 + 512 + 128) rows × 4 bytes
    assert f.scale_bytes == 2 * (4 * 128 + 512 + 128) * 4
    t = weight_fit("icebreaker", "bert-tiny", "bitnet-b1.58")
    assert t.weight_bytes == 98_304 and t.memory == "spram" and t.capacity == 4 * 32 * 1024 and t.fits
    # int8: 384 KiB, more than the UP5K's 128 KiB of SPRAM; the ECP5-85F's 208 × 16 Kbit of block RAM hold it
    assert not weight_fit("icebreaker", "bert-tiny", "int8").fits
    e = weight_fit("ulx3s-85f", "bert-tiny", "int8")
    assert e.memory == "bram" and e.capacity == 208 * 2048 and e.fits


def test_fit_table_prints(capsys):
    assert main(["board", "fit", "--boards", "ulx3s-85f", "--schemes", "bibert"]) == 0
    out = capsys.readouterr().out
    assert "ulx3s-85f" in out and "48.0Ki" in out and "13.7%" in out


def test_the_driver_against_the_simulated_board(tmp_path):
    """`lowbit board serve` and `lowbit board run --check` as two processes over a pseudo-terminal."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    port_file = tmp_path / "port"
    serve = subprocess.Popen([sys.executable, "-m", "lowbit", "board", "serve", "--board", "ulx3s-85f",
                              "--port-file", port_file], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600           # a cold Verilator build included
        while not port_file.exists():
            assert serve.poll() is None, serve.stdout.read()
            assert time.monotonic() < deadline, "the simulated board did not come up"
            time.sleep(0.2)
        port = port_file.read_text().strip()
        run = subprocess.run([sys.executable, "-m", "lowbit", "board", "run", "--port", port, "--board",
                              "ulx3s-85f", "--block", "bibert:8x64x24", "--check", "--fresh"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "check: output equals models' integer path; cycles equal the simulator's" in run.stdout
        # a second run on the same board (no --fresh: every line sent) gives the same cycles
        again = subprocess.run([sys.executable, "-m", "lowbit", "board", "run", "--port", port, "--board",
                                "ulx3s-85f", "--block", "bibert:8x64x24", "--check"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert run.stdout.split(" cycles")[0] == again.stdout.split(" cycles")[0]
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        serve.stdout.close()


@pytest.mark.slow
def test_the_ulx3s_bitstream_and_its_report(capsys, tmp_path):
    """The ULX3S-85F's design to a bitstream, with the board report (minutes: the full build). Its refusals are in
    tests/test_bad_input.py."""
    import json

    assert main(["board", "build", "ulx3s-85f", "-o", tmp_path / "b"]) == 0
    out = tmp_path / "b"
    bit = out / "top.bit"
    assert bit.exists() and bit.stat().st_size > 100_000
    report = json.loads((out / "board.json").read_text())
    assert report["resources"]["luts"]["used"] <= report["resources"]["luts"]["available"]
    assert report["fmax_mhz"]["sync"] > 0 and (out / "board.png").stat().st_size > 1000
    rows = {r["scheme"]: r for r in report["encoder"]}
    assert rows["bibert"]["cycles"] > 0 and rows["bibert"]["resident"]
    assert "fp-mac" in rows["bitnet-b1.58"]["not_run"]
