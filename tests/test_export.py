"""Verilog + manifest export: the manifest describes the Verilog that was written, completely."""

import json

import pytest
from amaranth import Shape

from hw.export import manifest, verilog_ports, write_unit
from hw.layout import PayloadLayout
from hw.params import TernaryMacParams
from hw.rtl import amaranth_layout
from hw.ternary_mac import TernaryMacEngine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    p = TernaryMacParams(lanes=6, rows=3, max_k=50, tree_stages=2)
    return p, write_unit(p, tmp_path_factory.mktemp("unit"))


def test_files_and_names(exported):
    p, unit = exported
    assert unit.verilog_path.name == f"{p.module_name}.v"
    assert unit.manifest_path.name == f"{p.module_name}.json"
    assert json.loads(unit.manifest_path.read_text()) == unit.manifest
    assert sorted(f.name for f in unit.verilog_path.parent.iterdir()) == sorted(
        [unit.verilog_path.name, unit.manifest_path.name])      # no partial files left behind


def test_manifest_ports_are_the_verilog_ports(exported):
    p, unit = exported
    ports = verilog_ports(unit.verilog_path.read_text(), unit.manifest["module"])
    listed = {q["name"]: (q["direction"], q["width"]) for q in unit.manifest["ports"]}
    assert listed == ports


def test_manifest_payloads_are_the_component_payloads(exported):
    p, unit = exported
    signature = TernaryMacEngine.signature_for(p)
    for side, port in (("in", "operand"), ("out", "result")):
        layout = PayloadLayout.from_dict(unit.manifest["streams"][side]["payload"])
        shape = signature.members[port].signature.members["payload"].shape
        assert layout.width == Shape.cast(shape).width
        assert amaranth_layout(layout) == shape


def test_manifest_parameters_and_contract(exported):
    p, unit = exported
    m = unit.manifest
    assert TernaryMacParams.from_dict(m["parameters"]) == p
    assert m["contract"]["latency_cycles"] == p.latency == 5          # operand, 2 tree stages, final totals, result
    assert m["contract"]["initiation_interval"] == 1
    assert m["encodings"]["weight"]["codes"] == {"0b00": 0, "0b01": 1, "0b11": -1, "0b10": "reserved, decodes as 0"}
    assert m["derived"]["registered_levels"] == list(p.registered_levels)


def test_verilog_is_deterministic():
    p = TernaryMacParams(lanes=3, rows=2, max_k=9)
    from hw.export import generate
    assert generate(p) == generate(p)
    assert manifest(p) == manifest(p)
