"""The lowbit instruction set (docs/isa.md): opcodes, operand fields, the binary program format, listings and
static checks. NumPy only, below every other package but ``fsio``: the compiler (``sim``), the simulator, the
accelerator RTL (``hw``) and the host driver all read programs through it."""
