"""Atomic file writes, sets of files that belong together, and an inter-process lock: the project's one helper.

Pure standard library and imports nothing from the project, so every layer (models, hw, sim, reports, lowbit,
rtl_tests) may use it. NumPy is imported only inside :func:`write_npz_atomic`.

Single files
------------
Every writer here writes a unique temporary file in the destination's directory (``.NAME.<random>.tmp``,
from :func:`tempfile.mkstemp`), syncs it to disk (``fsync``), and renames it over the destination with
:func:`os.replace`. A reader therefore sees either the complete old file or the complete new one, never a
partial file, and any number of processes may write the same file at once: each has its own temporary file,
the last rename wins. On any error, including ``KeyboardInterrupt``, the temporary file is removed and the old
file is left as it was. (Only an uncatchable end, ``SIGKILL`` or a power cut, can leave a ``.NAME.*.tmp``
behind; the destination is intact even then.) The new file gets the mode a plain ``open(path, "w")`` would
give it: an existing file's permission bits are kept, a new file gets ``0o666`` less the umask (``mkstemp``'s
``0o600`` is not kept).

Sets of files
-------------
:func:`write_set` writes files that belong together (a report's ``.md``/``.csv``/``.json``, a unit's ``.v`` and
``.json``) and :func:`read_set` reads them back; see :func:`write_set` for the exact guarantee.

Locks
-----
:func:`file_lock` is an advisory ``flock`` lock between processes (and between threads, each with its own
``file_lock``), with an optional timeout. The kernel releases it when its holder exits, however it exits, so a
crashed holder never leaves a stale lock.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath

__all__ = [
    "SET_ID_KEY", "FileSet", "LockTimeout", "MixedSetError", "file_lock", "open_atomic", "read_set",
    "write_bytes_atomic", "write_json_atomic", "write_npz_atomic", "write_set", "write_text_atomic",
]

#: Name of the set id in a set's JSON members and in the comment line of its Markdown/Verilog members.
SET_ID_KEY = "set_id"

#: Seconds :func:`write_set` and :func:`read_set` wait for the directory lock by default. Holders keep it for
#: the few renames of one set, so a minute means a stuck process, not a busy one.
SET_LOCK_TIMEOUT = 60.0

# Name bytes kept in a temporary file's prefix: ".NAME." + 8 random characters + ".tmp" must stay within the
# 255-byte file-name limit of common file systems.
_MAX_TEMP_STEM = 200


# -- single files -------------------------------------------------------------------------------------------

def _umask() -> int:
    """The process umask, read without changing it where the kernel allows (Linux 4.7+)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and put it back; the lock keeps this module's threads from seeing
    # the temporary value (other code creating files in the same instant could still see it).
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _new_temp(path: Path) -> tuple[int, str]:
    """A unique temporary file next to ``path``, with the mode ``path`` will have: ``(fd, name)``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:_MAX_TEMP_STEM]}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode_for(path))
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return fd, tmp


def _unlink_quietly(name) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (best effort: some file systems refuse to sync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes) -> str:
    """Write ``data`` to a synced temporary file next to ``path``; its name (removed again on any error)."""
    fd, tmp = _new_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


@contextmanager
def open_atomic(path, mode: str = "wb", *, encoding: str = "utf-8", mkdir: bool = False):
    """Open a new version of ``path`` for writing; it replaces ``path`` when the ``with`` block ends normally.

    ``mode`` is ``"wb"`` (a binary file object) or ``"w"`` (text, ``encoding``, newlines written as given).
    If the block raises anything, ``KeyboardInterrupt`` included, the new version is discarded and ``path``
    is unchanged. ``mkdir=True`` creates missing parent directories first. Yields the open file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic writes a whole new file: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    text = dict(encoding=encoding, newline="") if mode == "w" else {}
    fd, tmp = _new_temp(path)
    try:
        try:
            f = os.fdopen(fd, mode, **text)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path, data: bytes, *, mkdir: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically (complete or unchanged); returns ``path`` as a :class:`Path`."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _stage(path, bytes(data))
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path, text: str, *, encoding: str = "utf-8", mkdir: bool = False) -> Path:
    """Replace ``path`` with ``text`` (encoded, newlines as given) atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode(encoding), mkdir=mkdir)


def write_json_atomic(path, obj, *, indent: int | None = 2, sort_keys: bool = False, mkdir: bool = False) -> Path:
    """Replace ``path`` with ``obj`` as JSON (plus a final newline) atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", mkdir=mkdir)


def write_npz_atomic(path, /, **arrays) -> Path:
    """Replace ``path`` with an uncompressed ``.npz`` of ``arrays`` (as :func:`numpy.savez`) atomically.

    ``path`` is used as given: unlike ``numpy.savez`` on a file name, no ``.npz`` is appended.
    """
    import numpy as np   # here, not at the top: fsio stays importable (and cheap) without NumPy

    path = Path(path)
    with open_atomic(path, "wb") as f:
        np.savez(f, **arrays)
    return path


# -- locks --------------------------------------------------------------------------------------------------

class LockTimeout(TimeoutError):
    """:func:`file_lock` gave up waiting; the message names the lock and, where known, the holder's pid."""


def _open_for_lock(path: Path) -> tuple[int, bool]:
    """``(fd, writable)`` of the lock file ``path`` (created if missing) or of the directory ``path``."""
    if path.is_dir():
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY), False
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except OSError as exc:
        # A lock file that exists in a read-only place still serves (flock needs no write access).
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and path.exists():
            return os.open(path, os.O_RDONLY), False
        raise


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@contextmanager
def file_lock(path, *, shared: bool = False, timeout: float | None = None, poll: float = 0.05,
              on_wait: Callable[[int | None], None] | None = None):
    """Hold an ``flock`` lock on ``path`` for the ``with`` block: exclusive, or ``shared`` with other readers.

    ``path`` is a lock file (created if missing and left in place afterwards: removing a lock file while
    others may be opening it would let two processes hold "the" lock) or an existing directory, which is then
    locked itself and nothing is created. ``timeout=None`` waits as long as it takes; a number of seconds
    raises :class:`LockTimeout` naming the lock and the holder's pid (an exclusive holder writes its pid into
    a lock file). ``on_wait(pid_or_None)`` is called once if the lock is busy when first tried.
    The lock is advisory (it binds only code that takes it), works between processes and between threads
    (each ``file_lock`` opens the file anew), is not re-entrant, and ends when the holder's process does.
    """
    path = Path(path)
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        fd, writable = _open_for_lock(path)
        try:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not told:
                    on_wait(None if path.is_dir() else _holder(path))
                told = True
                if deadline is None:
                    fcntl.flock(fd, op)
                else:
                    while True:
                        try:
                            fcntl.flock(fd, op | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            if time.monotonic() >= deadline:
                                pid = None if path.is_dir() else _holder(path)
                                raise LockTimeout(
                                    f"timed out after {timeout:g} s waiting for the lock {str(path)!r}"
                                    + (f", held by process {pid}" if pid else "")
                                    + " (flock locks end with their process: if none is running any more, "
                                      "try again)") from None
                            time.sleep(poll)
            # The lock file may have been removed or replaced while we waited; a lock on a file nobody else
            # will open protects nothing, so start again on the file the path names now.
            if path.is_dir() or _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    owner = writable and not shared
    try:
        if owner:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            if owner:
                os.ftruncate(fd, 0)          # so that nobody is later named as holding a free lock
            fcntl.flock(fd, fcntl.LOCK_UN)   # explicit: a forked child sharing the descriptor must not keep it
        finally:
            os.close(fd)


# -- sets of files ------------------------------------------------------------------------------------------

class MixedSetError(RuntimeError):
    """:func:`read_set` found members of different writes; ``ids`` maps each id-carrying member to its id."""

    def __init__(self, message: str, ids: dict[str, str]):
        super().__init__(message)
        self.ids = ids


@dataclass(frozen=True)
class FileSet:
    """A set of files as written by :func:`write_set` or read by :func:`read_set`."""

    directory: Path
    set_id: str                     #: SHA-256 over every member's content (see :func:`write_set`)
    files: dict                     #: member name → exact bytes on disk, in the set's order
    carriers: tuple                 #: members whose content carries ``set_id`` (JSON objects, Markdown, Verilog)

    def path(self, name: str) -> Path:
        """Where member ``name`` is."""
        return self.directory / name

    def text(self, name: str) -> str:
        """Member ``name`` as text (UTF-8), set id line included."""
        return self.files[name].decode()

    def load_json(self, name: str):
        """Member ``name`` parsed as JSON, ``"set_id"`` key included."""
        return json.loads(self.files[name])


# Members whose format has comments carry the id as a last line: (line start, line end) by file suffix.
_COMMENT_STYLES = {
    ".md": ("<!-- ", " -->"), ".markdown": ("<!-- ", " -->"), ".html": ("<!-- ", " -->"),
    ".v": ("// ", ""), ".sv": ("// ", ""), ".vh": ("// ", ""),
}


def _canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _marker(style: tuple[str, str], set_id: str) -> bytes:
    return f"{style[0]}{SET_ID_KEY}: {set_id}{style[1]}\n".encode()


def _split(name: str, data: bytes) -> tuple[bytes, str | None]:
    """``(payload, carried id or None)`` of a member as on disk; the set id is the hash of the payloads."""
    suffix = PurePath(name).suffix.lower()
    if suffix == ".json":
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return data, None
        if isinstance(obj, dict) and isinstance(obj.get(SET_ID_KEY), str):
            carried = obj.pop(SET_ID_KEY)
            return _canonical_json(obj), carried
        return data, None
    style = _COMMENT_STYLES.get(suffix)
    if style is not None:
        m = re.search(rb"(?:\A|(?<=\n))" + re.escape(style[0].encode()) + SET_ID_KEY.encode()
                      + rb": ([0-9a-f]{64})" + re.escape(style[1].encode()) + rb"\n\Z", data)
        if m:
            return data[:m.start()], m.group(1).decode()
    return data, None


def _set_id(payloads: Mapping[str, bytes]) -> str:
    h = hashlib.sha256(b"fsio file set 1\0")
    for name in sorted(payloads):
        h.update(f"{name}\0{len(payloads[name])}\0".encode())
        h.update(payloads[name])
    return h.hexdigest()


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"a set member must be a plain file name, not {name!r}")
    return name


def _render(members: Mapping) -> tuple[str, dict[str, bytes], tuple[str, ...]]:
    """``(set_id, {name: bytes on disk}, carriers)`` of ``members`` as given to :func:`write_set`."""
    payloads, kinds = {}, {}
    for name, value in members.items():
        _check_name(name)
        suffix = PurePath(name).suffix.lower()
        if isinstance(value, dict):
            if suffix != ".json":
                raise ValueError(f"set member {name!r}: a dict is written as JSON, so its name must end in .json")
            if SET_ID_KEY in value:
                raise ValueError(f"set member {name!r}: the key {SET_ID_KEY!r} is reserved for the set id")
            # Round-trip first, so the hash is over exactly what a reader will parse back (tuples, int keys, ...).
            plain = json.loads(json.dumps(value))
            payloads[name], kinds[name] = _canonical_json(plain), ("json", value)
            continue
        if isinstance(value, str):
            data = value.encode()
            if suffix in _COMMENT_STYLES:
                # The id line goes after a final newline; one is added if the text has none, so that a reader
                # can cut the line off again and get exactly the hashed text.
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                kinds[name] = ("comment", _COMMENT_STYLES[suffix])
            else:
                kinds[name] = ("plain", None)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, kinds[name] = bytes(value), ("plain", None)
        else:
            raise TypeError(f"set member {name!r} must be str, bytes or a dict (JSON), not {type(value).__name__}")
        if kinds[name][0] == "plain" and _split(name, data)[1] is not None:
            raise ValueError(f"set member {name!r} already carries a {SET_ID_KEY!r}: pass it as a dict or without it")
        payloads[name] = data
    if not payloads:
        raise ValueError("a file set needs at least one member")
    set_id = _set_id(payloads)
    files, carriers = {}, []
    for name, (kind, extra) in kinds.items():
        if kind == "json":
            files[name] = (json.dumps({SET_ID_KEY: set_id, **extra}, indent=2) + "\n").encode()
            carriers.append(name)
        elif kind == "comment":
            files[name] = payloads[name] + _marker(extra, set_id)
            carriers.append(name)
        else:
            files[name] = payloads[name]
    return set_id, files, tuple(carriers)


def write_set(directory, members: Mapping, *, mkdir: bool = False, timeout: float | None = SET_LOCK_TIMEOUT) -> FileSet:
    """Write files that belong together into ``directory`` so that no reader using :func:`read_set` ever sees
    members of two different writes, and a plain reader can tell when it has.

    ``members`` maps plain file names to their content, in the order they are replaced: ``str`` (written as
    UTF-8), ``bytes``, or a ``dict`` for a ``.json`` member (written as indented JSON). ``mkdir=True`` creates
    a missing ``directory``. Returns the :class:`FileSet` written.

    **The set id.** ``set_id`` is a SHA-256 over every member's name and content, so equal content gives equal
    ids (the files stay reproducible). Each member whose format allows it carries the id: a ``.json`` object as
    its first key ``"set_id"``, a ``.md``/``.html`` file as a last line ``<!-- set_id: ... -->``, a Verilog file
    (``.v``/``.sv``/``.vh``) as a last line ``// set_id: ...``. Other members (``.csv``, binary) are unchanged,
    so every CSV reader still reads them; they are covered by the hash alone.

    **Writers.** Each member is first written to its own temporary file and synced, outside any lock. Then,
    holding an exclusive ``flock`` on ``directory`` itself (no lock file is created), the members are renamed
    over their destinations in the order given and the directory is synced. Renames of two writers therefore
    never interleave: when concurrent writers have finished, the set on disk is entirely that of the last one
    to take the lock, never a mix.

    **Readers.** :func:`read_set` reads all members under a shared lock on the directory, so it sees exactly
    one writer's set; it also recomputes the id from the contents and checks it against every carrier, and
    raises :class:`MixedSetError` if they disagree. That catches what the lock cannot: a writer killed between
    two renames (the only way a mixed set can stay on disk; the next complete write replaces it), a member
    edited or copied in by hand, a writer that did not use this function, a file system whose ``flock`` is not
    shared between machines (NFS). A plain reader that takes no lock sees every member complete (each rename
    is atomic) but, reading during a write, may get old and new members together; it can tell by comparing
    the ``set_id`` of the carriers it read (equal ids: same write; it cannot check CSV/binary members that way).

    The lock is advisory and per directory: other sets written into the same directory take turns with this
    one. ``timeout`` (seconds, None: no limit) bounds the wait for it (:class:`LockTimeout`).
    """
    directory = Path(directory)
    set_id, files, carriers = _render(members)
    if mkdir:
        directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        if (directory / name).is_dir():
            # Found now rather than at its rename, which would leave the members renamed before it half-done.
            raise IsADirectoryError(errno.EISDIR, "a set member's path is a directory", str(directory / name))
    staged = []
    try:
        for name, data in files.items():
            staged.append((_stage(directory / name, data), directory / name))
        with file_lock(directory, timeout=timeout):
            while staged:
                tmp, final = staged[0]
                os.replace(tmp, final)
                staged.pop(0)
            _fsync_dir(directory)
    finally:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
    return FileSet(directory, set_id, files, carriers)


def read_set(directory, names: Iterable[str], *, timeout: float | None = SET_LOCK_TIMEOUT) -> FileSet:
    """Read the members ``names`` of a set written by :func:`write_set` and check that they belong together.

    Reads under a shared lock on ``directory`` (so never during a writer's renames), recomputes the set id
    from the contents and compares it with the id each carrier holds. Raises :class:`MixedSetError` naming
    the ids if any differ, ``FileNotFoundError`` for a missing member. If no member carries an id (say a
    ``.csv`` and a ``.npz``), only the lock vouches for the set: ``carriers`` is then empty.
    """
    directory = Path(directory)
    names = [_check_name(n) for n in names]
    if not names:
        raise ValueError("read_set needs at least one member name")
    with file_lock(directory, shared=True, timeout=timeout):
        files = {name: (directory / name).read_bytes() for name in names}
    payloads, carried = {}, {}
    for name, data in files.items():
        payloads[name], sid = _split(name, data)
        if sid is not None:
            carried[name] = sid
    set_id = _set_id(payloads)
    wrong = {name: sid for name, sid in carried.items() if sid != set_id}
    if wrong:
        raise MixedSetError(
            f"the files {sorted(files)} in {str(directory)!r} do not belong together: their contents hash to "
            f"set id {set_id[:12]}…, but " + ", ".join(f"{n} carries {s[:12]}…" for n, s in sorted(wrong.items()))
            + " (a write was interrupted, or a file was changed or copied in by other means)", carried)
    return FileSet(directory, set_id, files, tuple(carried))
