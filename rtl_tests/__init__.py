"""Benches that run generated RTL (Amaranth's simulator and cocotb + Icarus) against ``models`` and ``sim``.

``streams`` holds the level-independent stream drivers, ``levels`` the per-level adapters of each unit,
``vectors`` the one vector suite all levels are checked with.
"""
