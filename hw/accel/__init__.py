"""The whole accelerator in RTL (Amaranth 0.5), executing the compiled program (docs/isa.md) with exactly the
simulator's cycles.

* :mod:`hw.accel.plan` — what gets built from a description, and the refusals (plain Python, no Amaranth);
* :mod:`hw.accel.top` — instruction memory, dispatch, queues, tokens, buffers, DRAM port;
* :mod:`hw.accel.mover` — a queue's transfer engine and the DRAM port's streams;
* :mod:`hw.accel.compute` — the MATMUL unit: feeder, stream engines, result writers;
* :mod:`hw.accel.post` — the post unit: ``POST`` with ``models.intpost``'s semantics, and ``pack``;
* :mod:`hw.accel.memory`, :mod:`hw.accel.ram` — byte-addressed line buffers;
* :mod:`hw.accel.export` — Verilog and manifest (``lowbit verilog accelerator``).
"""
