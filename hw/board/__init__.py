"""Boards lowbit builds for (iCEBreaker, ULX3S-85F): board facts (:mod:`hw.board.spec`), PLL planning
(:mod:`hw.board.pll`), the bitstream flow (:mod:`hw.board.build`) and the host link's gateware and protocol.

Nothing is imported here: each submodule is imported by name, so the light ones (``spec``, ``protocol``) do not
pull in Amaranth or the tools."""
