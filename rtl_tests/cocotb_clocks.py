"""The clocks every cocotb bench of the accelerator starts (imports cocotb only, so a bench launch stays cheap)."""

from cocotb.clock import Clock

__all__ = ["start_clocks"]


def start_clocks(dut, phases: int) -> None:
    """The system clock, and with ``phases`` > 0 (pumped RAMs) a memory clock at ``phases`` times it with rising
    edges aligned (``hw.accel.ram.pumped_ram_module``)."""
    if phases:
        Clock(dut.clk, 2 * phases, unit="ns").start()
        Clock(dut.mem_clk, 2, unit="ns").start()
        dut.mem_rst.value = 0
    else:
        Clock(dut.clk, 10, unit="ns").start()
