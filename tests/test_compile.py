"""``lowbit compile`` and ``simulate model --program``: a program for every built-in design and scheme pair that
fits, written, read back and timed to the same cycles as the run that compiles its own; refusals name the field."""

import json
import re

import pytest

from hw.accelerator import BUILTIN_DESIGNS, load_design
from isa.asm import assemble, listing
from isa.encoding import from_bytes, to_bytes
from lowbit.cli import main
from models.schemes import SCHEMES, get_scheme
from sim.compiler import CapacityError
from sim.model import compile_model, simulate_model


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_builtin_pair_that_fits_compiles_and_times_from_its_file():
    compiled, refused = [], {}
    for scheme in SCHEMES:
        for design in BUILTIN_DESIGNS:
            try:
                c = compile_model("bert-base", scheme, design, seq_len=16)
            except CapacityError as exc:
                refused[(scheme, design)] = f"does not fit: {exc}"
                continue
            except ValueError as exc:
                # an engine the scheme needs is missing or configured otherwise: the message names the op
                assert re.match(rf"(design {design!r} has no [\w-]+ engine \(needed by [\w.]+\)|[\w.]+: )",
                                str(exc)), exc
                refused[(scheme, design)] = str(exc)
                continue
            prog = from_bytes(to_bytes(c.program))
            assert prog.meta["model"] == "bert-base" and prog.meta["scheme"] == get_scheme(scheme).name
            again = simulate_model("bert-base", scheme, design, seq_len=16, program=prog)
            direct = simulate_model("bert-base", scheme, design, seq_len=16)
            assert again.cycles == direct.cycles and again.cycles > 0
            # the file has no segment structure: every instruction counted one by one gives the same per-op
            # cycles, events, traffic and notes as the compiled run's once-per-segment counting
            assert [(t.total_cycles, t.events, t.dram_bytes, t.instructions, t.notes) for t in again.ops] == \
                [(t.total_cycles, t.events, t.dram_bytes, t.instructions, t.notes) for t in direct.ops]
            assert again.queue_summary["by_opcode"] == direct.queue_summary["by_opcode"]
            compiled.append((scheme, design))
    # every scheme compiles on its own default design; most pairs run somewhere
    for scheme in SCHEMES:
        assert (scheme, get_scheme(scheme).default_design) in compiled, refused.get(
            (scheme, get_scheme(scheme).default_design))
    # the pairs that run: each scheme on its own engines, full precision on any FP16 MAC array, int8 on the int8
    # engines and the systolic arrays (the others lack an engine the scheme needs)
    fp16 = [d for d in BUILTIN_DESIGNS if d not in ("xnor",)]
    assert sorted(compiled) == sorted(
        [("fp32", "fp32")] + [("fp16", d) for d in fp16 if d != "fp16"] + [("fp16", "fp16")]
        + [("int8", d) for d in ("int8", "systolic-os-128", "systolic-os-32", "systolic-ws-128", "systolic-ws-32",
                                 "ternary")]
        + [("bibert", "xnor"), ("ternarybert", "ternary"), ("bitnet-v1", "ternary"), ("bitnet-b1.58", "ternary"),
           ("billm", "billm"), ("qbb", "binary-basis")]), sorted(refused.items())


@pytest.mark.parametrize("model,scheme,design,seq,decode", [
    ("llama-7b", "bitnet-b1.58", "ternary", 512, 1), ("llama-7b", "qbb", "binary-basis", 512, 1),
    ("opt-1.3b", "int8", "int8", 128, 2), ("bert-base", "fp16", "fp16", 512, 0),
    ("bert-base", "int8", "systolic-os-32", 128, 0)])
def test_large_programs_are_valid(model, scheme, design, seq, decode):
    # activations that fill the buffer leave room for the result records; KV appends larger than the activations
    # buffer go out in pieces: every region of every instruction lies in its buffer (isa.validate)
    from isa.validate import validate
    from sim.machine import machine_shape
    prog = compile_model(model, scheme, design, seq_len=seq, decode_steps=decode).program
    validate(prog, machine_shape(load_design(design)))


def test_a_listing_assembles_back_to_the_same_program():
    prog = compile_model("minilm-l6", "ternarybert", "ternary", seq_len=8, decode_steps=0).program
    again = assemble(listing(prog))
    assert to_bytes(again) == to_bytes(prog)


def test_compile_cli_writes_the_program_and_its_listing(tmp_path, capsys):
    out = tmp_path / "prog.bin"
    code, stdout, err = _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16, "-o", out,
                              "--listing"], capsys)
    assert code == 0, err
    assert "design: ternary (default for scheme bitnet-b1.58)" in stdout and "instructions" in stdout
    lst = tmp_path / "prog.lst"
    assert lst.read_text().startswith("; lowbit program, instruction set v1, design 'ternary'")
    code, stdout, err = _cli(["simulate", "model", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16,
                              "--program", out, "--json"], capsys)
    assert code == 0, err
    given = json.loads(stdout)
    code, stdout, err = _cli(["simulate", "model", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16,
                              "--json"], capsys)
    own = json.loads(stdout)
    assert given["cycles"] == own["cycles"] and given["energy_j"]["total"] == own["energy_j"]["total"]
    assert given["program"]["source"] == "given" and own["program"]["source"] == "compiled"
    assert given["program"]["instructions"] == own["program"]["instructions"] == len(from_bytes(out.read_bytes()))
    # the program's view: the queues' busy cycles and where the compute queue's cycles went add up
    assert sum(own["program"]["cycles_by_kind"].values()) == own["cycles"]
    assert own["program"]["busy_cycles"]["compute"] <= own["cycles"]


def test_compile_cli_mapping_and_tokens_outer(tmp_path, capsys):
    out = tmp_path / "p.bin"
    code, stdout, err = _cli(["compile", "--model", "minilm-l6", "--scheme", "ternarybert", "--design", "ternary",
                              "--seq", 8, "--mapping", "loop_order=tokens-outer", "-o", out], capsys)
    assert code == 0, err
    assert from_bytes(out.read_bytes()).meta["policy"]["loop_order"] == "tokens-outer"
    code, stdout, err = _cli(["simulate", "model", "--model", "minilm-l6", "--scheme", "ternarybert", "--design",
                              "ternary", "--seq", 8, "--program", out, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["mapping"]["loop_order"] == "tokens-outer"


@pytest.mark.parametrize("extra,message", [
    (["--seq", 32], "the program was compiled with seq_len = 16, not 32; give --seq 16 or compile again"),
    (["--design", "int8"], "the program was compiled for design 'ternary', not 'int8'; give --design ternary"),
    (["--mapping", "double_buffer=false"], "--mapping does not apply to --program"),
])
def test_a_program_for_another_run_is_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "prog.bin"
    assert _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16, "-o", out], capsys)[0] == 0
    base = ["simulate", "model", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--program", out]
    args = base + (extra if "--seq" in extra else ["--seq", 16, *extra])
    code, _, err = _cli(args, capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_malformed_program_files_are_refused_by_name(tmp_path, capsys):
    out = tmp_path / "prog.bin"
    assert _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16, "-o", out], capsys)[0] == 0
    data = out.read_bytes()
    bad = tmp_path / "bad.bin"
    base = ["simulate", "model", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--seq", 16, "--program", bad]
    bad.write_bytes(data[:100])
    code, _, err = _cli(base, capsys)
    assert code == 2 and f"{bad}: truncated file: 100 bytes" in err
    bad.write_bytes(data[:8] + b"\x09\x00" + data[10:])
    code, _, err = _cli(base, capsys)
    assert code == 2 and "unknown program format version 9 at byte offset 8" in err
    # an unknown opcode in instruction 3 (its header word's low 4 bits)
    raw = bytearray(data)
    raw[64 + 32 * 3] = (raw[64 + 32 * 3] & 0xF0) | 0xE
    bad.write_bytes(bytes(raw))
    code, _, err = _cli(base, capsys)
    assert code == 2 and "instruction 3" in err and "opcode" in err


def test_compile_cli_refusals(tmp_path, capsys):
    out = tmp_path / "p.bin"
    code, _, err = _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "-o", out, "--listing", out],
                        capsys)
    assert code == 2 and "is the program file itself" in err and not out.exists()
    code, _, err = _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "--design", "xnor", "-o",
                         out], capsys)
    assert code == 2 and "design 'xnor' has no ternary-mac engine" in err and not out.exists()
    code, _, err = _cli(["compile", "--model", "minilm-l6", "--scheme", "bitnet-b1.58", "-o", tmp_path / "no" / "p"],
                        capsys)
    assert code == 2 and "does not exist" in err


def test_a_program_file_times_like_the_design_file_says():
    # a program carries its design's name; timing it on another design (same name, other buffers) is the caller's
    # business, but the shape check still refuses regions outside the design's buffers
    from isa.program import ProgramError
    prog = compile_model("minilm-l6", "bitnet-b1.58", "ternary", seq_len=16).program
    d = load_design("ternary").to_dict()
    d["buffers"]["activations"] = {"size_kib": 4, "word_bits": 64}
    from hw.accelerator import Accelerator
    with pytest.raises(ProgramError, match=r"instruction 0 \(LOAD\): field sram: the buffer region activations\+0x0 "
                                           r"of 12288 bytes runs 8192 bytes past the end of the activations buffer"):
        simulate_model("minilm-l6", "bitnet-b1.58", Accelerator.from_dict(d), seq_len=16, program=prog)
