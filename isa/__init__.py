"""The lowbit instruction set (docs/isa.md): opcodes, operand fields, the binary program format, listings and
static checks. NumPy only, below every other package but ``fsio``: the compiler (``sim``), the simulator, the
accelerator RTL (``hw``) and the host driver all read programs through it."""

from isa.asm import assemble, listing
from isa.encoding import from_bytes, read, to_bytes, write
from isa.program import (WORD_DTYPE, Instruction, Program, ProgramBuilder, ProgramError, address, block,
                         split_address)
from isa.spec import VERSION
# validate() stays in isa.validate: binding it here would hide the submodule (``import isa.validate`` would give
# the function).
from isa.validate import EngineShape, MachineShape, Summary

__all__ = ["VERSION", "WORD_DTYPE", "ProgramError", "Program", "Instruction", "ProgramBuilder", "block", "address",
           "split_address", "to_bytes", "from_bytes", "write", "read", "listing", "assemble", "EngineShape",
           "MachineShape", "Summary"]
