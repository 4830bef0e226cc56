"""The board top (``hw.board.top.BoardTop``) in Verilator, driven only through its UART pins by the host driver
(``hw.board.host``, pyserial on a pseudo-terminal): a block compiled by ``sim.blocks`` is loaded, run and read back
over the link — its output equal to ``models``' integer path, every DRAM byte equal to the simulator's, the board's
cycle count equal to the simulator's — and every kind of bad frame is refused without touching memory.

The default suite runs the ULX3S-85F's board design as it is built (buffers and DRAM in the pumped block-RAM form,
the bench driving the memory clock). ``-m slow``: the planted bug, BiBERT's attention, and the post-synthesis run of
the iCEBreaker design's iCE40 netlist with the cell models."""

import pytest

from hw.board.designs import board_design
from hw.board.protocol import STATUS

from .board import run_board_block

#: what each refusal check of the bench must be answered with
REFUSALS = {"crc": "BAD_CRC", "payload": "BAD_CRC", "op": "BAD_OP", "space": "BAD_SPACE", "addr": "BAD_ADDR",
            "len": "BAD_LEN", "imem_read": "BAD_SPACE", "busy": "BUSY"}


def _check(s):
    assert s.finished, "the program did not finish"
    assert s.cycles == s.sim_cycles, f"board {s.cycles} cycles, simulator {s.sim_cycles}"
    assert s.outputs_equal, "the output read back over the link differs from models' integer path"
    assert s.dram_equal, "DRAM read back over the link differs from the simulator's"
    assert s.statuses == {k: STATUS[v] for k, v in REFUSALS.items()}
    assert s.unchanged and s.after_busy, "a refused frame changed memory"
    assert s.busy_while_running and s.raises
    # the link's time is at least the bytes on the wire, 10 bits each
    assert s.session_cycles >= 10 * s.divisor * (s.bytes_out + s.bytes_in)


def test_a_ffn_block_on_the_ulx3s_design():
    """BitNet b1.58's FFN block (up-projection, squared ReLU, down-projection) on the ULX3S-85F's design."""
    s = run_board_block("bitnet-ffn:4x64x80", board_design("ulx3s-85f"))
    _check(s)
    assert s.cycles > 1000


@pytest.mark.slow
def test_a_corrupted_frame_is_executed_when_the_checksum_is_ignored():
    """The planted bug: a link engine that never checks the CRC; the bench's refusal checks go red."""
    s = run_board_block("bibert:8x64x24", board_design("ulx3s-85f"), faults=("ignore_crc",))
    assert s.cycles == s.sim_cycles and s.outputs_equal          # the run itself is untouched
    with pytest.raises(AssertionError):
        _check(s)
    assert s.statuses["crc"] == STATUS["OK"] and not s.unchanged


@pytest.mark.slow
def test_bibert_attention_on_the_ulx3s_design():
    _check(run_board_block("bibert-attn:8x32x2", board_design("ulx3s-85f")))


@pytest.mark.slow
def test_the_icebreaker_design_after_synthesis():
    """Post-synthesis: the iCEBreaker design's top through ``synth_ice40``, ``write_verilog -noattr`` and the iCE40
    cell models, on the same UART bench."""
    _check(run_board_block("bitnet-b1.58:4x32x8", board_design("icebreaker"), gate_level="ice40"))
