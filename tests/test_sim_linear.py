"""sim/linear.py: one layer on its scheme's engine — the accounting that the reports quote."""

import pytest
import torch

from sim.linear import simulate_linear


@pytest.mark.parametrize("scheme,macs_per_weight", [("bitnet-b1.58", 1), ("billm", 1), ("qbb", 4),
                                                    ("qbb:n_bases=2", 2)])
def test_utilisation_counts_each_weight_once_per_basis(scheme, macs_per_weight):
    # [32 × 256] on 64 lanes × 16 rows, 4 tokens: 2 row blocks · 4 tokens · 4 K-chunks = 32 full beats, so the
    # engine's MAC slots are exactly filled 32 of the run's cycles, whatever the scheme (BiLLM's groups are masks
    # of one binarized weight: one MAC a weight; QBB: one a basis, and the engine has one plane a basis).
    g = torch.Generator().manual_seed(0)
    run = simulate_linear(scheme, torch.randn(32, 256, generator=g), torch.randn(4, 256, generator=g),
                          lanes=64, rows=16)
    assert run.params.macs_per_cycle == 64 * 16 * macs_per_weight
    assert run.engine_macs == 32 * 256 * 4 * macs_per_weight
    assert run.utilisation == pytest.approx(32 / run.cycles)
    assert run.cycles == 32 + run.params.latency
