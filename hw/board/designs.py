"""The built-in board designs, and which models' weights fit which board's memories.

A board design is an accelerator description (:class:`hw.accelerator.Accelerator`, the same object the simulator
times) plus what only a board has: its system clock (made by the board's PLL), the host link's baud rate, the
on-chip DRAM that keeps the weights resident (:class:`hw.accel.dram.LocalDram`, in block RAM) and the buffers'
RAM form. No Amaranth here: ``lowbit board fit`` and the refusals run without elaborating hardware.
"""

from dataclasses import dataclass, field

__all__ = ["BoardDesign", "BOARD_DESIGNS", "board_design", "WeightFit", "weight_fit", "fit_table",
           "memory_bytes"]


@dataclass(frozen=True)
class BoardDesign:
    """One board's built-in design (see the module)."""

    name: str
    board: str                       #: a key of :data:`hw.board.spec.BOARDS`
    accelerator: dict = field(repr=False)   #: the accelerator description (``Accelerator.from_dict``)
    clock_hz: int = 0                #: the system clock the PLL makes (the description's ``clock_mhz``)
    baud: int = 1_000_000            #: the host link's rate
    dram_bytes: int = 0              #: on-chip DRAM (weights resident), in block RAM
    imem_depth: int = 256            #: instructions the board holds
    ram_form: str = "pumped"         #: the buffers' RAM form (:data:`hw.accel.ram.RAM_FORMS`)
    note: str = ""

    def design(self):
        """The accelerator description, its clock the board's."""
        from hw.accelerator import Accelerator

        return Accelerator.from_dict({**self.accelerator, "name": self.name, "clock_mhz": self.clock_hz / 1e6})

    def plan(self):
        from hw.accel.plan import AccelPlan

        return AccelPlan.of(self.design(), imem_depth=self.imem_depth)

    @property
    def divisor(self) -> int:
        from .uart import divisor_for

        return divisor_for(self.clock_hz, self.baud)

    def to_dict(self) -> dict:
        return {"name": self.name, "board": self.board, "clock_hz": self.clock_hz, "baud": self.baud,
                "dram_bytes": self.dram_bytes, "imem_depth": self.imem_depth, "ram_form": self.ram_form,
                "accelerator": self.accelerator, "note": self.note}


# The ULX3S-85F design: two 4-lane × 2-row ternary-MAC engines (BitNet b1.58, TernaryBERT linears), an
# XNOR-popcount and a BAMM engine (BiBERT's linears and attention) and a small int8 engine (TernaryBERT's
# attention), sharing 26 KiB of buffers, 128 KiB of on-chip DRAM in block RAM (4 bytes a cycle), at 6.25 MHz from
# the 25 MHz oscillator with the pumped RAMs' memory clock at 9 × (56.25 MHz) from the same PLL: measured at
# 12.5 MHz, the memory domain's Fmax was 65 MHz and its worst path from the system domain 15.2 ns (docs/boards.md).
_ULX3S = {
    "engines": [{"unit": "ternary-mac", "lanes": 4, "rows": 2, "max_k": 512, "count": 2},
                {"unit": "xnor-popcount", "lanes": 8, "rows": 1, "max_k": 512, "threshold": "strict"},
                {"unit": "bamm", "lanes": 8, "rows": 1, "max_k": 512, "zero_policy": "pos"},
                {"unit": "int8-mac", "lanes": 2, "rows": 2, "max_k": 512}],
    "buffers": {"weights": {"size_kib": 8, "word_bits": 32}, "activations": {"size_kib": 16, "word_bits": 32},
                "kv": {"size_kib": 2, "word_bits": 32}},
    "dram": {"bandwidth_gbps": 0.025, "latency_cycles": 1}, "vector": {"lanes": 4},
}

# The iCEBreaker design: the smallest accelerator the generator makes (one 2-lane ternary engine, 2.5 KiB of
# buffers in lines of 4 bytes, the narrowest the post unit's 32-bit operands allow) with 16 KiB of on-chip DRAM, at the board's 12 MHz. It does not fit the UP5K (``lowbit board build``
# refuses it before place and route, with the numbers): see docs/boards.md.
_ICEBREAKER = {
    "engines": [{"unit": "ternary-mac", "lanes": 2, "rows": 1, "max_k": 256}],
    "buffers": {"weights": {"size_kib": 1, "word_bits": 32}, "activations": {"size_kib": 1, "word_bits": 32},
                "kv": {"size_kib": 0.5, "word_bits": 32}},
    "dram": {"bandwidth_gbps": 0.024, "latency_cycles": 1}, "vector": {"lanes": 2},
}

BOARD_DESIGNS = {
    "ulx3s-85f": BoardDesign("ulx3s-85f", "ulx3s-85f", _ULX3S, clock_hz=6_250_000, baud=250_000,
                             dram_bytes=128 * 1024),
    "icebreaker": BoardDesign("icebreaker", "icebreaker", _ICEBREAKER, clock_hz=12_000_000, baud=1_000_000,
                              dram_bytes=16 * 1024),
}


def board_design(name) -> BoardDesign:
    """The built-in design of board ``name``."""
    from .spec import board

    board(name)                      # an unknown board is refused by name first
    return BOARD_DESIGNS[name]


# -- which models fit which board ----------------------------------------------------------------------------------

def memory_bytes(board_name: str) -> dict:
    """The board's on-chip memories in bytes of data (block RAM counted at 8 data bits of every 9 where the
    primitive has parity bits; SPRAM 16K × 16)."""
    from .spec import board

    part = board(board_name).part
    bram_data_bits = part.bram_bits * 8 // 9 if part.bram_bits % 9 == 0 else part.bram_bits
    return {"bram": part.brams * bram_data_bits // 8, "spram": part.spram * part.spram_bits // 8}


@dataclass(frozen=True)
class WeightFit:
    """The encoder's resident weights (its linear layers' quantized weights and scales; embeddings, pooler and
    classifier stay on the host) against one board's memories."""

    board: str
    model: str
    scheme: str
    params: int
    weight_bytes: int
    scale_bytes: int
    memory: str                       #: where they would live ("spram" or "bram")
    capacity: int
    fits: bool

    @property
    def resident_bytes(self) -> int:
        return self.weight_bytes + self.scale_bytes

    @property
    def share(self) -> float:
        return self.resident_bytes / self.capacity if self.capacity else float("inf")


def weight_fit(board_name: str, model: str = "bert-tiny", scheme: str = "bitnet-b1.58") -> WeightFit:
    """The arithmetic of :class:`WeightFit`: ``models.analysis.size_breakdown`` of the encoder alone (no embeddings,
    no pooler) — every quantized linear's weights at the scheme's storage bits (index bits included), its scales at
    the scheme's float width."""
    from models.analysis import size_breakdown
    from models.config import load_config
    from models.schemes import get_scheme

    cfg = load_config(model)
    sch = get_scheme(scheme)
    size = size_breakdown(cfg, sch, pooler=False, embeddings=False)
    by = size["size_bytes_by_category"]
    wb, sb = by["quantized_weights"] + by["index_bits"], by["scales"]
    mem = memory_bytes(board_name)
    where = "spram" if mem["spram"] else "bram"
    return WeightFit(board_name, cfg.name, sch.name, size["params"]["quantized"], wb, sb, where, mem[where],
                     wb + sb <= mem[where])


def fit_table(boards=None, models=("bert-tiny",), schemes=("bibert", "bitnet-b1.58", "ternarybert", "int8")):
    """:func:`weight_fit` for every board × model × scheme."""
    from .spec import BOARDS

    return [weight_fit(b, m, s) for b in (boards or BOARDS) for m in models for s in schemes]
