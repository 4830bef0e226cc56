"""Atomic writes, file sets and locks (fsio), under real concurrency: separate processes on real files.

The racing processes are this file run as a script (``python tests/test_fsio.py WORKER ...``, see the bottom),
so that writers, readers and checks share one definition of what a complete file looks like.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fsio
from fsio import FileSet, LockTimeout, MixedSetError, file_lock, read_set, write_set

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]

#: Writes per process in the single-file race (two processes: 300 writes).
N_RACE = 150
#: Sets written per process in the file-set race.
N_SET_RACE = 100
SET_NAMES = ["r.csv", "r.json", "r.md"]


# -- what the racing processes write: every version names itself, so a reader can tell complete from not ------

def _text(who: str, i: int) -> str:
    return f"{who}-{i};" * 4000 + "end\n"          # about 30 kB: a write is not one instant


def _text_ok(text: str) -> bool:
    head = text.split(";", 1)[0]
    who, _, i = head.partition("-")
    return i.isdigit() and text == _text(who, int(i))


def _arrays(who: str, i: int) -> dict:
    return {"i": np.full(20_000, i, dtype=np.int64), "who": np.array(who)}


def _npz_ok(path: Path) -> bool:
    with np.load(path) as z:
        i = int(z["i"][0])
        return sorted(z.files) == ["i", "who"] and np.array_equal(z["i"], _arrays(str(z["who"]), i)["i"])


def _set_members(who: str, i: int) -> dict:
    rows = "".join(f"{who},{i},{k}\n" for k in range(300))
    return {"r.csv": "who,i,k\n" + rows, "r.json": {"who": who, "i": i, "rows": 300},
            "r.md": f"# Run {who} {i}\n\n" + "".join(f"- row {k}\n" for k in range(300))}


def _versions(files: dict) -> set:
    """The (who, i) each member of a set says it belongs to, read from the contents (not from the set id)."""
    csv = files["r.csv"].decode().splitlines()[1].split(",")
    js = json.loads(files["r.json"])
    md = files["r.md"].decode().splitlines()[0].split()
    return {(csv[0], int(csv[1])), (js["who"], js["i"]), (md[2], int(md[3]))}


# -- running workers ------------------------------------------------------------------------------------------

def _spawn(*args) -> subprocess.Popen:
    env = dict(os.environ)
    # The workers import fsio from this checkout whatever is installed, and treat every warning as an error.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # SIGINT restored in the child (the Ctrl-C test sends one): a suite started in the background runs with SIGINT
    # ignored, which a child inherits
    return subprocess.Popen([sys.executable, "-W", "error", str(HERE), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        raise AssertionError(f"worker said {line!r}, not {expected!r}; stderr: {proc.communicate()[1]}")


def _finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def _race(tmp_path: Path, writer: list, reader: list) -> tuple[list[dict], dict]:
    """Start two writers ("a" and "b") and a reader, let the writers go at the same instant, return the reports."""
    go, done = tmp_path / "go", tmp_path / "done"
    writers = [_spawn(*writer, go, who) for who in "ab"]
    reading = _spawn(*reader, done)
    for proc in [*writers, reading]:
        _wait_line(proc, "ready")
    go.touch()
    try:
        reports = [_finish(w) for w in writers]
    finally:
        done.touch()
    return reports, _finish(reading)


# -- single files ---------------------------------------------------------------------------------------------

def test_two_processes_write_one_file(tmp_path):
    target = tmp_path / "out.txt"
    reports, reading = _race(tmp_path, ["write-text", target, N_RACE], ["read-text", target])
    failures = [f for r in reports for f in r["failures"]]
    print(f"\nsingle-file race: {len(failures)}/{2 * N_RACE} writes failed; reader: {reading}")
    assert failures == [], failures
    assert _text_ok(target.read_text())                   # the final file is one complete version
    assert reading["reads"] > 0 and reading["bad"] == []  # and every version a reader saw was complete
    assert not list(tmp_path.glob(".*.tmp"))              # no temporary file left behind


def test_two_processes_write_one_npz(tmp_path):
    target = tmp_path / "result.npz"
    reports, reading = _race(tmp_path, ["write-npz", target, 40], ["read-npz", target])
    assert [f for r in reports for f in r["failures"]] == []
    assert _npz_ok(target) and reading["reads"] > 0 and reading["bad"] == []
    assert not list(tmp_path.glob(".*.tmp"))


def test_npz_round_trip_keeps_the_name(tmp_path):
    # numpy.savez appends ".npz" to a file name without it; the atomic writer writes where it is told.
    out = fsio.write_npz_atomic(tmp_path / "arrays.bin", a=np.arange(6).reshape(2, 3), path=np.float32(1.5))
    assert out == tmp_path / "arrays.bin" and sorted(p.name for p in tmp_path.iterdir()) == ["arrays.bin"]
    with np.load(out) as z:
        assert z["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and z["path"] == np.float32(1.5)


def test_text_json_bytes_writers(tmp_path):
    assert fsio.write_text_atomic(tmp_path / "t.txt", "a\r\nb\n").read_bytes() == b"a\r\nb\n"   # newlines as given
    assert fsio.write_bytes_atomic(tmp_path / "b.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    assert json.loads(fsio.write_json_atomic(tmp_path / "j.json", {"x": [1, 2]}).read_text()) == {"x": [1, 2]}
    with pytest.raises(FileNotFoundError):
        fsio.write_text_atomic(tmp_path / "missing" / "t.txt", "x")
    assert fsio.write_text_atomic(tmp_path / "made" / "t.txt", "x", mkdir=True).read_text() == "x"
    with pytest.raises(IsADirectoryError):
        fsio.write_text_atomic(tmp_path / "made", "x")
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["t.txt"]
    with fsio.open_atomic(tmp_path / "o.txt", "w") as f:
        f.write("streamed")
    assert (tmp_path / "o.txt").read_text() == "streamed"


def test_interrupted_write_keeps_the_old_file(tmp_path):
    # A real Ctrl-C (SIGINT) while the new version is half written: KeyboardInterrupt unwinds the writer.
    target = tmp_path / "data.txt"
    target.write_text("old\n")
    proc = _spawn("slow-write", target)
    _wait_line(proc, "ready")
    assert len(list(tmp_path.glob(".data.txt.*.tmp"))) == 1        # the half-written version exists
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]   # and its temporary file is gone


def test_killed_writer_keeps_the_old_file(tmp_path):
    # SIGKILL cannot be caught: the temporary file stays (the module says so), the destination is intact.
    target = tmp_path / "data.txt"
    target.write_text("old\n")
    proc = _spawn("slow-write", target)
    _wait_line(proc, "ready")
    proc.kill()
    proc.communicate(timeout=60)
    assert target.read_text() == "old\n"


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("this object cannot be saved")


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "y.npz"
    fsio.write_npz_atomic(target, a=np.arange(3))
    with pytest.raises(RuntimeError, match="cannot be saved"):
        fsio.write_npz_atomic(target, a=np.array([_Unpicklable()], dtype=object))
    with np.load(target) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npz"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        fsio.write_text_atomic(tmp_path / "t.txt", "x")
        fsio.write_npz_atomic(tmp_path / "a.npz", a=np.zeros(1))
        write_set(tmp_path / "set", {"r.csv": "a\n1\n", "r.md": "# r\n"}, mkdir=True)
    finally:
        os.umask(old)
    for p in (tmp_path / "t.txt", tmp_path / "a.npz", tmp_path / "set" / "r.csv", tmp_path / "set" / "r.md"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_an_existing_files_mode_is_kept(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("old")
    p.chmod(0o640)
    fsio.write_text_atomic(p, "new")
    assert p.read_text() == "new" and stat.S_IMODE(p.stat().st_mode) == 0o640


# -- sets of files --------------------------------------------------------------------------------------------

def test_set_round_trip_and_where_the_id_goes(tmp_path):
    written = write_set(tmp_path, _set_members("a", 1))
    assert isinstance(written, FileSet) and written.carriers == ("r.json", "r.md")
    back = read_set(tmp_path, SET_NAMES)
    assert back.set_id == written.set_id and back.files == written.files and back.carriers == written.carriers
    # The CSV is untouched (every CSV reader still reads it); the JSON leads with the id; the Markdown ends with
    # it as a comment line.
    assert pd.read_csv(tmp_path / "r.csv").columns.tolist() == ["who", "i", "k"]
    assert (tmp_path / "r.csv").read_text() == _set_members("a", 1)["r.csv"]
    assert list(back.load_json("r.json").items())[0] == ("set_id", written.set_id)
    assert back.text("r.md").splitlines()[-1] == f"<!-- set_id: {written.set_id} -->"
    # The id is a hash of the contents: the same contents, the same id; any change, another id.
    assert write_set(tmp_path / "again", _set_members("a", 1), mkdir=True).set_id == written.set_id
    assert write_set(tmp_path / "other", _set_members("a", 2), mkdir=True).set_id != written.set_id


@pytest.mark.parametrize("swap", ["r.json", "r.md", "r.csv"])
def test_read_set_refuses_a_mixed_set(tmp_path, swap):
    # What a writer killed between two renames, or a file copied in by hand, leaves behind.
    first, second = tmp_path / "first", tmp_path / "second"
    write_set(first, _set_members("a", 1), mkdir=True)
    write_set(second, _set_members("b", 2), mkdir=True)
    (first / swap).write_bytes((second / swap).read_bytes())
    with pytest.raises(MixedSetError, match="do not belong together") as info:
        read_set(first, SET_NAMES)
    assert set(info.value.ids) == {"r.json", "r.md"}


def test_write_set_refusals(tmp_path):
    for members, exc, message in [
        ({"a/b.csv": "x"}, ValueError, "plain file name"),
        ({"..": "x"}, ValueError, "plain file name"),
        ({}, ValueError, "at least one member"),
        ({"r.csv": {"x": 1}}, ValueError, "must end in .json"),
        ({"r.json": {"set_id": "x"}}, ValueError, "reserved"),
        ({"r.json": json.dumps({"set_id": "0" * 64})}, ValueError, "already carries"),
        ({"r.csv": 3}, TypeError, "must be str, bytes or a dict"),
    ]:
        with pytest.raises(exc, match=message):
            write_set(tmp_path, members)
    (tmp_path / "r.md").mkdir()
    with pytest.raises(IsADirectoryError):
        write_set(tmp_path, {"r.csv": "x\n", "r.md": "# x\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md"]     # nothing written, nothing left over


def test_two_processes_write_one_set(tmp_path):
    d = tmp_path / "rep"
    d.mkdir()
    reports, reading = _race(tmp_path, ["write-set", d, N_SET_RACE], ["read-set", d])
    print(f"\nset race: {reading}")
    assert [f for r in reports for f in r["failures"]] == []
    final = read_set(d, SET_NAMES)
    assert len(_versions(final.files)) == 1                  # the final set is one writer's, never a mix
    assert reading["sets"] > 0
    assert reading["refused"] == 0 and reading["mixed"] == []    # read_set never met a mixed set
    # A reader without the lock may catch a write half-way; the ids it carries always tell it so.
    assert reading["plain_undetected"] == 0
    assert not list(d.glob(".*.tmp"))


def test_unit_and_reports_are_written_as_sets(tmp_path):
    from hw.export import write_unit
    from hw.params import TernaryMacParams
    from reports.model import model_result, write_model_report

    unit = write_unit(TernaryMacParams(lanes=2, rows=1, max_k=4), tmp_path / "unit")
    got = read_set(tmp_path / "unit", [unit.verilog_path.name, unit.manifest_path.name])
    assert got.carriers == (unit.manifest_path.name,)         # the Verilog stays exactly the generated text
    assert json.loads(got.files[unit.manifest_path.name]) == {"set_id": got.set_id, **unit.manifest}

    result = model_result("minilm-l6", "ternarybert", "ternary", seq_len=16, per_layer=True)
    md, csv, js = write_model_report(tmp_path / "rep", result, stem="m")
    got = read_set(tmp_path / "rep", [md.name, csv.name, js.name])
    assert got.carriers == (md.name, js.name) and got.load_json(js.name)["cycles"] == result["cycles"]


# -- locks ----------------------------------------------------------------------------------------------------

def test_lock_timeout_names_the_holder_and_ends_with_it(tmp_path):
    lock = tmp_path / "x.lock"
    holder = _spawn("hold-lock", lock)
    try:
        _wait_line(holder, "held")
        seen = []
        t = time.monotonic()
        with pytest.raises(LockTimeout, match=rf"timed out after 0.3 s waiting for the lock .*x\.lock.*"
                                              rf"held by process {holder.pid}\b"):
            with file_lock(lock, timeout=0.3, on_wait=seen.append):
                pass
        assert time.monotonic() - t >= 0.3 and seen == [holder.pid]
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    with file_lock(lock, timeout=5):           # the kernel released it with its process: no stale lock
        assert lock.read_text() == f"{os.getpid()}\n"


def test_shared_and_exclusive_locks(tmp_path):
    with file_lock(tmp_path, shared=True), file_lock(tmp_path, shared=True):    # readers together
        with pytest.raises(LockTimeout):
            with file_lock(tmp_path, timeout=0.1):                                # but no writer
                pass
    with file_lock(tmp_path, timeout=0):
        pass
    assert list(tmp_path.iterdir()) == []      # a directory is locked itself: no lock file


# -- workers (run as separate processes by the tests above) ---------------------------------------------------

def _keep_reading(done: Path, reads: int) -> bool:
    """Until the writers are done, and then until one read at least (however slow the machine), for 10 s at most."""
    return not done.exists() or (not reads and time.time() - done.stat().st_mtime < 10)


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.001)


def _worker_write(kind, target, n, go, who):
    target, n = Path(target), int(n)
    print("ready", flush=True)
    _wait_for(Path(go))
    failures = []
    for i in range(n):
        try:
            if kind == "text":
                fsio.write_text_atomic(target, _text(who, i))
            else:
                fsio.write_npz_atomic(target, **_arrays(who, i))
        except OSError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return {"failures": failures}


def _worker_read(kind, target, done):
    target, done = Path(target), Path(done)
    print("ready", flush=True)
    reads, absent, bad, seen = 0, 0, [], False
    while _keep_reading(done, reads):
        try:
            ok = _text_ok(target.read_text()) if kind == "text" else _npz_ok(target)
        except FileNotFoundError:
            absent += 1
            if seen:                    # once there, the file never disappears
                bad.append("vanished")
            continue
        except Exception as exc:        # a torn .npz shows as a zip or format error
            ok = False
            bad.append(f"{type(exc).__name__}: {exc}")
        reads, seen = reads + 1, True
        if not ok:
            bad.append("incomplete")
    return {"reads": reads, "absent_before_first_write": absent, "bad": bad[:5]}


def _worker_write_set(d, n, go, who):
    print("ready", flush=True)
    _wait_for(Path(go))
    failures = []
    for i in range(int(n)):
        try:
            write_set(d, _set_members(who, i))
        except OSError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return {"failures": failures}


def _worker_read_set(d, done):
    d, done = Path(d), Path(done)
    print("ready", flush=True)
    sets, refused, mixed = 0, [], []
    plain, plain_mixed, plain_undetected = 0, 0, 0
    while _keep_reading(done, sets + len(refused)):
        try:
            got = read_set(d, SET_NAMES)
        except FileNotFoundError:
            continue
        except MixedSetError as exc:
            refused.append(str(exc))
            continue
        sets += 1
        if len(_versions(got.files)) != 1:
            mixed.append(sorted(_versions(got.files)))
        # The same three files read without the lock, as any other program would.
        files = {name: (d / name).read_bytes() for name in SET_NAMES}
        plain += 1
        if len(_versions(files)) != 1:
            plain_mixed += 1
        # A JSON and a Markdown of different writes must carry different ids.
        js, md = json.loads(files["r.json"]), files["r.md"].decode().splitlines()
        md_id = md[-1].removeprefix("<!-- set_id: ").removesuffix(" -->")
        if (js["who"], js["i"]) != (md[0].split()[2], int(md[0].split()[3])) and js["set_id"] == md_id:
            plain_undetected += 1
    return {"sets": sets, "refused": len(refused), "refused_first": refused[:1], "mixed": mixed[:3],
            "plain_reads": plain, "plain_mixed": plain_mixed, "plain_undetected": plain_undetected}


def _worker_slow_write(target):
    with fsio.open_atomic(target, "wb") as f:
        f.write(b"new, not finished")
        f.flush()
        print("ready", flush=True)
        time.sleep(60)
    return {}


def _worker_hold_lock(lock):
    with file_lock(lock):
        print("held", flush=True)
        time.sleep(120)
    return {}


_WORKERS = {"write-text": lambda t, n, go, who: _worker_write("text", t, n, go, who),
            "write-npz": lambda t, n, go, who: _worker_write("npz", t, n, go, who),
            "read-text": lambda t, done: _worker_read("text", t, done),
            "read-npz": lambda t, done: _worker_read("npz", t, done),
            "write-set": _worker_write_set, "read-set": _worker_read_set,
            "slow-write": _worker_slow_write, "hold-lock": _worker_hold_lock}

if __name__ == "__main__":
    print(json.dumps(_WORKERS[sys.argv[1]](*sys.argv[2:])), flush=True)
