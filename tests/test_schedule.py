"""The fast mode's closed-form feeder schedule equals the stepped kernel, cycle for cycle, on many shapes."""

import numpy as np
import pytest

from hw.params import BammParams, TernaryMacParams, XnorPopcountParams
from sim.engine import Feeder, simulate
from sim.schedule import feeder_schedule


def _tiles(rng, total, n_tiles):
    cuts = np.sort(rng.choice(np.arange(1, total), size=n_tiles - 1, replace=False)) if n_tiles > 1 else []
    edges = np.concatenate([[0], cuts, [total]])
    return tuple(int(b) for b in np.diff(edges))


def test_stepped_feeder_equals_closed_form_on_many_shapes():
    rng = np.random.default_rng(0)
    for trial in range(120):
        lanes, rows = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        p = TernaryMacParams(lanes=lanes, rows=rows, max_k=64, tree_stages=int(rng.integers(0, 2)) if lanes > 1 else 0)
        m, k, t = int(rng.integers(1, 10)), int(rng.integers(1, 40)), int(rng.integers(1, 4))
        w = rng.integers(-1, 2, (m, k))
        x = rng.integers(-128, 128, (t, k))
        beats = p.n_beats(m, k, t)
        n_tiles = int(rng.integers(1, min(beats, 6) + 1))
        feeder = Feeder(_tiles(rng, beats, n_tiles), tuple(int(v) for v in rng.integers(0, 30, n_tiles)),
                        slots=int(rng.integers(1, 3)), ii=int(rng.integers(1, 4)))
        run = simulate(p, w, x, feeder=feeder)
        assert (run.results["acc"] == x @ w.T).all()
        fast = feeder_schedule(feeder.tile_beats, feeder.load, slots=feeder.slots, ii=feeder.ii, latency=p.latency)
        assert run.first_input_cycle == fast.first_issue, (trial, feeder)
        assert run.last_output_cycle == fast.last_output, (trial, feeder)


@pytest.mark.parametrize("params", [XnorPopcountParams(lanes=16, rows=2, max_k=64),
                                    BammParams(lanes=8, rows=4, max_k=64, identity="xnor")])
def test_other_units_follow_the_same_schedule(params):
    rng = np.random.default_rng(1)
    m, k, t = 5, 50, 3
    if isinstance(params, BammParams):
        w, x = rng.choice([-1, 1], (m, k)), rng.integers(0, 2, (t, k))
    else:
        w, x = rng.choice([-1, 1], (m, k)), rng.choice([-1, 1], (t, k))
    beats = params.n_beats(m, k, t)
    feeder = Feeder((beats // 3, beats - beats // 3), (17, 40), slots=2, ii=2)
    run = simulate(params, w, x, feeder=feeder)
    fast = feeder_schedule(feeder.tile_beats, feeder.load, slots=2, ii=2, latency=params.latency)
    assert run.last_output_cycle == fast.last_output


def test_schedule_by_hand():
    # two tiles of 3 beats, loads of 5 and 10 cycles, double buffered, one beat per cycle, latency 4:
    # tile 0 loads in [0, 5), issues 5, 6, 7; tile 1 loads in [5, 15) (the DRAM is busy until 5), issues 15, 16, 17;
    # the last result hands off at 17 + 4 = 21, so the op takes 22 cycles.
    s = feeder_schedule((3, 3), (5, 10), slots=2, ii=1, latency=4)
    assert (s.first_issue, s.last_issue, s.last_output, s.cycles) == (5, 17, 21, 22)
    # single buffered: tile 1's load waits for tile 0's last issue (7): loads [8, 18), issues 18, 19, 20.
    s = feeder_schedule((3, 3), (5, 10), slots=1, ii=1, latency=4)
    assert (s.last_issue, s.cycles) == (20, 25)
    # on chip with ii = 2: 6 beats issue at 0, 2, ..., 10; 10 + 4 + 1 = 15 cycles.
    assert feeder_schedule((6,), (0,), slots=1, ii=2, latency=4).cycles == 15
    with pytest.raises(ValueError):
        feeder_schedule((0,), (0,), slots=1, ii=1, latency=1)
