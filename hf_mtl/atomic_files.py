"""Outputs that are complete or absent: the one way every hf_mtl writer (training, predict, embed, exports) puts a file
or folder in place.

```python
from hf_mtl.atomic_files import StagedOutput

with StagedOutput("ner-model", inputs=[model_dir], where="--output") as output:
    model.save_pretrained(output.path)        # build the whole output in output.path ...
# ... renamed into place here, on a clean exit; after an exception the target is exactly as it was
```

`StagedOutput(target)`:

1. **checks** the target before anything is written (`check`, also callable on its own in a preflight step): not a
   symbolic link (writing would replace the link, not its target), not an input of the command (nor a hard link to
   one), not a folder that holds one (`inputs`; inside entries named in `carry` excepted), not something that already
   exists inside an input folder, no file where a folder is asked and vice versa, not a named pipe, device or socket
   (renaming over it would replace it: as root, even /dev/null), an existing non-empty folder only if
   `replaceable(folder)` says hf_mtl may replace it, nothing but a lock file at the lock file's path;
2. **locks** the target: an exclusive lock file `.<name>.hf_mtl-lock` beside it, so a second writer of the same target
   fails at once with a `ConfigError` naming the process that holds it;
3. lets the caller **build** the output at `path`, a staging file or folder `.<name>.hf_mtl-staging` beside the target
   (the same file system, so the final rename is atomic);
4. **commits**: a file is renamed over the old one; a folder first receives hard links to the old folder's entries
   named in `carry` (training checkpoints stay where resuming looks for them), then is atomically exchanged with the
   old folder (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames, repaired at the next start), and the old
   folder is removed. A process killed at any moment leaves the old output or the new one, never a mix; leftovers of
   a killed writer are removed the next time the target is written. What is committed gets the modes `open` and
   `mkdir` give under the process umask (an existing target keeps its own): some writers (safetensors' atomic save)
   create owner-only files, which nobody else sharing the folder could read.

A full disk (or an exhausted quota) while writing removes the staging output and raises one `OutputError` naming the
target, the file system, the space free on it (which the output needs more than) and the old output's size; the old
output is kept (`is_disk_full`, `disk_full_error`: for writers outside a `StagedOutput`, e.g. Trainer's checkpoints).

Training holds one `StagedOutput` of `output_dir` for the whole run (Trainer writes checkpoints into `output_dir` while
it trains) and commits it with `commit()` once the model, results, reports and card are written. New writers (ONNX
export, ...) should use it the same way as the exports do.
"""

import ctypes
import errno
import fnmatch
import os
import shutil
import socket
import stat
import sys
from pathlib import Path

from .errors import ConfigError, HfMtlError, OutputError

SUFFIXES = {"lock": ".hf_mtl-lock", "staging": ".hf_mtl-staging", "replaced": ".hf_mtl-replaced"}


def sibling_path(target, role: str) -> Path:
    """`<parent>/.<name><suffix>`: where the lock, the staging output or the replaced old output of `target` lives.
    The same on every process of a distributed run."""
    target = resolved_target(target)
    return target.parent / f".{target.name}{SUFFIXES[role]}"


def resolved_target(target) -> Path:
    """The absolute target with its parent folders' links resolved, but not a link in its own name."""
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    return Path(os.path.realpath(target.parent)) / target.name


class StagedOutput:
    """
    One output file or folder written as a whole (see the module docstring).

    Args:
        target: the file or folder to write.
        kind: `"folder"` or `"file"`.
        inputs: paths the command reads; the output must not be one of them, nor a folder holding one.
        carry: `fnmatch` patterns of entries of an existing target folder that move into the new one (and may hold
            inputs, e.g. the checkpoint a run resumes from).
        resumable: `fnmatch` patterns of entries that a failed writer leaves in a target it created, for a later
            writer to resume from (training checkpoints); a created target without them is removed.
        replaceable: for an existing non-empty folder, `replaceable(folder) -> bool`; `False` refuses it (default:
            every folder may be replaced).
        what: how the target is described to the user when it is refused (e.g. "an hf_mtl run folder").
        where: the config key or option that named the target, for error messages (`output_dir`, `--output`).
        writer: whether this process writes the output; in a distributed run only the main process does (locks,
            stages and commits), the others only learn `path` (the same on every process).
        commit_on_exit: commit when the `with` block ends without an exception (else call `commit()` yourself).
    """

    def __init__(self, target, *, kind="folder", inputs=(), carry=(), resumable=(), replaceable=None, what=None,
                 where="--output", writer=True, commit_on_exit=True):
        if kind not in ("folder", "file"):
            raise ValueError(f"kind must be 'folder' or 'file', got {kind!r}")
        self.given = os.fspath(target)
        self.target = resolved_target(target)
        self.kind, self.carry, self.resumable, self.where = kind, tuple(carry), tuple(resumable), where
        # Only what exists here can be destroyed (a Hub id is not a path).
        self.inputs = [Path(os.path.realpath(path)) for path in map(os.path.expanduser, map(os.fspath, inputs))
                       if os.path.exists(path)]
        self.replaceable, self.what = replaceable, what
        self.writer, self.commit_on_exit = writer, commit_on_exit
        self.path = sibling_path(self.target, "staging")
        self.committed = False
        self._lock = None
        self._created_parents = []
        self._existed = False

    # ---- 1. checks ----------------------------------------------------------------------------------------------
    def check(self):
        """Raise a `ConfigError` naming `where` when writing the target would be wrong; writes nothing."""
        name = f"{self.where} {self.given}"
        if not self.target.name or self.target.name in (".", ".."):
            raise ConfigError(f"{name}: not a usable {self.kind} name")
        if self.target.is_symlink():
            raise ConfigError(
                f"{name}: is a symbolic link (to {os.readlink(self.target)}); writing would replace the link, not "
                "what it points to: give the real path"
            )
        special, wanted = special_kind(self.target), "regular file" if self.kind == "file" else "folder"
        if special:
            raise ConfigError(
                f"{name}: is {special}, not a {wanted}; hf_mtl would replace it with its output (written beside it, "
                f"then renamed over it): give the path of a {wanted}"
            )
        if self.kind == "file" and self.target.is_dir():
            raise ConfigError(f"{name}: is a folder, expected a file name")
        if self.kind == "folder" and self.target.exists() and not self.target.is_dir():
            raise ConfigError(f"{name}: is a file, expected a folder")
        for path in self.inputs:
            self._check_input(name, path)
        if self.kind == "folder" and self.target.is_dir() and self.replaceable is not None:
            entries = sorted(os.listdir(self.target))
            if entries and not self.replaceable(self.target):
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise ConfigError(
                    f"{name}: the folder exists and is not {self.what or 'a folder hf_mtl wrote'} (it holds {shown}); "
                    "hf_mtl replaces the whole folder when it finishes, so choose a new or empty folder"
                )
        existing = next(parent for parent in self.target.parents if parent.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{name}: cannot write in {existing} (permission denied)")
        self._check_lock_path()

    def _check_lock_path(self):
        """The lock file is hf_mtl's own: something else planted at its path (a link, a folder, a pipe) is refused,
        never written through or removed."""
        lock_path = sibling_path(self.target, "lock")
        if lock_path.is_symlink():
            kind = f"a symbolic link (to {os.readlink(lock_path)})"
        elif lock_path.is_dir():
            kind = "a folder"
        else:
            kind = special_kind(lock_path)
        if kind:
            remove = "rm -r" if kind == "a folder" else "rm"
            raise ConfigError(
                f"{self.where} {self.given}: its lock file {lock_path} is {kind}, not a lock file hf_mtl made; hf_mtl "
                f"does not write through it: remove it ({remove} {lock_path}) and run again"
            )

    def _check_input(self, name, path):
        if path == self.target or (self.target.is_file() and path.is_file() and os.path.samefile(path, self.target)):
            raise ConfigError(f"{name}: is also an input of this command ({path}); writing it would destroy that input")
        if path.is_dir() and path in self.target.parents and self.target.exists():
            raise ConfigError(
                f"{name}: is part of the input folder {path}; replacing it would change that input, write elsewhere"
            )
        if self.target in path.parents and not self._carried(path):
            raise ConfigError(
                f"{name}: holds {path}, an input of this command; replacing the {self.kind} would destroy it"
            )

    def _carried(self, path) -> bool:
        first = path.relative_to(self.target).parts[0]
        return any(fnmatch.fnmatch(first, pattern) for pattern in self.carry)

    # ---- 2. lock, and leftovers of a killed writer ---------------------------------------------------------------
    def __enter__(self):
        self.check()
        if not self.writer:
            return self
        try:
            for parent in reversed(self.target.parents):
                if not parent.exists():
                    parent.mkdir()
                    self._created_parents.append(parent)
            self._acquire_lock()
            self._repair_leftovers()
            self._existed = self.target.exists()
            if self.kind == "folder":
                self.path.mkdir()
        except BaseException as error:
            if self._lock is not None:  # the staging output is ours only while we hold the lock
                _remove(self.path)
            self._release_lock()
            self._remove_created_parents()
            if not isinstance(error, HfMtlError) and is_disk_full(error):
                raise disk_full_error(self.given, error, where=self.where) from error
            raise
        return self

    def _acquire_lock(self):
        import filelock

        lock_path = sibling_path(self.target, "lock")
        lock = filelock.FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                holder = lock_path.read_text(encoding="utf-8").strip() or "another process"
            except OSError:
                holder = "another process"
            raise ConfigError(
                f"{self.where} {self.given}: another hf_mtl run or command is writing it ({holder}, lock file "
                f"{lock_path}); wait for it to finish or choose another {self.where}"
            ) from None
        except OSError as error:
            if is_disk_full(error):
                raise
            self._check_lock_path()  # planted since check()
            raise ConfigError(
                f"{self.where} {self.given}: cannot create its lock file {lock_path} ({error.strerror or error}); "
                f"remove whatever is at that path or choose another {self.where}"
            ) from None
        self._lock = lock
        lock_path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n", encoding="utf-8")

    def _release_lock(self):
        if self._lock is not None:
            # Unlinked while still held: a writer that opened the old file before gets a lock on a deleted file,
            # which filelock detects and retries on the new one.
            sibling_path(self.target, "lock").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def _repair_leftovers(self):
        replaced = sibling_path(self.target, "replaced")
        if not self.target.exists() and replaced.exists() and not replaced.is_symlink():
            os.rename(replaced, self.target)  # killed between the two renames of a commit without exchange
        for leftover in (self.path, replaced):
            _remove(leftover)

    # ---- 4. commit, or leave everything as it was -----------------------------------------------------------------
    def commit(self):
        """Put the staged output in place of the target (carrying `carry` entries over first)."""
        if self.committed or not self.writer:
            return
        if self.kind == "file":
            self._give_usual_modes()
            os.replace(self.path, self.target)
        elif not self.target.exists():
            self._give_usual_modes()
            os.rename(self.path, self.target)
        else:
            self._carry_entries()
            self._give_usual_modes()
            if exchange_paths(self.path, self.target):
                _remove(self.path)  # the old folder, now at the staging path
            else:
                replaced = sibling_path(self.target, "replaced")
                os.rename(self.target, replaced)
                os.rename(self.path, self.target)
                _remove(replaced)
        self.committed = True

    def _give_usual_modes(self):
        """The modes `open`/`mkdir` give under the process umask, for the staged output and everything in it; the
        output itself keeps the old target's mode, as a file or folder written in place would."""
        umask = process_umask()
        if self.kind == "folder":
            for folder, folders, files in os.walk(self.path):
                for entry in folders + files:
                    _set_mode(os.path.join(folder, entry), umask)
        try:
            old = os.lstat(self.target)
        except FileNotFoundError:
            _set_mode(self.path, umask)
        else:
            _set_mode(self.path, umask, stat.S_IMODE(old.st_mode))

    def _carry_entries(self):
        for entry in sorted(os.listdir(self.target)):
            if any(fnmatch.fnmatch(entry, pattern) for pattern in self.carry) and not (self.path / entry).exists():
                source, destination = self.target / entry, self.path / entry
                if source.is_dir() and not source.is_symlink():
                    shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(source, destination)

    def __exit__(self, exc_type, exc, traceback):
        if not self.writer:
            return False
        failure = exc
        if failure is None and self.commit_on_exit:
            try:
                self.commit()
            except BaseException as error:
                failure = error
        full = failure is not None and not isinstance(failure, HfMtlError) and is_disk_full(failure, self.target.parent)
        try:
            if not self.committed:
                _remove(self.path)
                # Trainer creates output_dir when it starts (and TensorBoard its runs/): a failed writer that created
                # the target leaves it behind only when it holds something to resume from.
                if failure is not None and not self._existed and self.target.is_dir() and not any(
                    fnmatch.fnmatch(entry, pattern) for entry in os.listdir(self.target) for pattern in self.resumable
                ):
                    shutil.rmtree(self.target)
        finally:
            self._release_lock()
        if not self.committed:
            self._remove_created_parents()  # once the lock file in the nearest one is gone
        if full:
            previous = tree_size(self.target) if self._existed else None
            kept = f"the previous {self.kind} is kept" if self._existed else None
            raise disk_full_error(self.given, failure, where=self.where, previous=previous, kept=kept) from failure
        if failure is not exc:
            raise failure
        return False

    def _remove_created_parents(self):
        for parent in reversed(self._created_parents):
            if parent.is_dir() and not os.listdir(parent):
                parent.rmdir()
        self._created_parents = []


# ---- special files, modes, a full disk -------------------------------------------------------------------------------
SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(path) -> str | None:
    """What `path` is when it exists and is neither a regular file, a folder nor a symbolic link ("a named pipe
    (FIFO)", "a character device", ...); None otherwise. Only looked at, never opened: opening a FIFO would hang."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), "a special file")


def process_umask() -> int:
    """The process umask, read without changing it where Linux shows it (`os.umask` alone must set one)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _set_mode(path, umask, mode=None):
    """Give `path` `mode`, by default what `open`/`mkdir` make under `umask` (executables stay executable); links
    are left alone, and a file another user owns (a carried hard link) keeps its mode."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return
    if mode is None:
        full = stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR
        mode = (stat.S_IMODE(info.st_mode) & 0o7000) | ((0o777 if full else 0o666) & ~umask)
    if stat.S_IMODE(info.st_mode) != mode:
        try:
            os.chmod(path, mode)
        except PermissionError:
            pass


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How torch, safetensors (Rust) and others quote the same errno in their own exceptions.
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", f"os error {errno.ENOSPC})",
                   f"os error {errno.EDQUOT})")
# Short writes reported without the errno: torch.save's stream writer ("unexpected pos 10624 vs 10516") and numpy's
# tofile ("48000 requested and 36832 written"); on a file system left (nearly) full, that is why.
SHORT_WRITES = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed", "requested and")
NEARLY_FULL = 1 << 20


def is_disk_full(error, folder=None) -> bool:
    """
    Whether `error` (or what caused it) is a full disk or an exhausted quota: an `OSError` with ENOSPC/EDQUOT, or a
    library's error quoting one. With `folder`, also a short write reported without the errno (torch.save, numpy's
    tofile) when the file system holding `folder` has under 1 MiB free: ask before removing what the write left.
    """
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        text = str(cause)
        if any(fragment in text for fragment in DISK_FULL_TEXTS):
            return True
        if folder is not None and any(fragment in text for fragment in SHORT_WRITES):
            free = _free_space(folder)
            if free is not None and free < NEARLY_FULL:
                return True
    return False


def disk_full_error(path, error, *, where=None, written=None, previous=None, kept=None) -> OutputError:
    """
    The one line for a write of `path` that ran out of space (`is_disk_full(error)`), built once what the failed write
    left is removed: the path, the file system it is on, the space free there now (which the output needs more than)
    and what else is known of its size (`written`: bytes it had reached, `previous`: the output it was to replace);
    `kept` says what is left as it was. `where` is the option or config key that named `path`.
    Every writer: `raise disk_full_error(path, error, where=...) from error`.
    """
    folder = _existing_folder(path)
    mount, free = _mount_point(folder), _free_space(folder)
    quota = any((isinstance(cause, OSError) and cause.errno == errno.EDQUOT) or "quota" in str(cause).lower()
                for cause in _chain(error))
    if quota:
        problem, needs = "disk quota exceeded", "more than your quota leaves"
    else:
        problem, needs = "no space left", "more space" if free is None else f"more than the {human_size(free)} free there"
    sizes = "; ".join(size for size in (f"writing stopped after {human_size(written)}" if written else None,
                                        f"the previous one is {human_size(previous)}" if previous else None) if size)
    name = f"{where} {os.fspath(path)}" if where else os.fspath(path)
    return OutputError(
        f"{name}: {problem} on the file system mounted at {mount}; the new output needs {needs}"
        + (f" ({sizes})" if sizes else "")
        + f": free some space there or choose another {where or 'place'}"
        + (f"; {kept}" if kept else "")
    )


def tree_size(path) -> int:
    """Bytes in the file at `path`, or in every file under the folder at `path` (links not followed); 0 if absent."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _chain(error):
    """`error` and what caused it, each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _existing_folder(path) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    return next(folder for folder in (path, *path.parents) if folder.is_dir())


def _mount_point(folder) -> str:
    folder = os.path.realpath(folder)
    while not os.path.ismount(folder):
        folder = os.path.dirname(folder)
    return folder


def _free_space(folder):
    try:
        return shutil.disk_usage(_existing_folder(folder)).free
    except OSError:
        return None


def human_size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}"


def exchange_paths(first, second) -> bool:
    """Atomically swap two paths of one file system (Linux `renameat2(RENAME_EXCHANGE)`); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first))


def _link_or_copy(source, destination):
    """A hard link (no copy of checkpoint weights); a copy where the file system has none."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["StagedOutput", "disk_full_error", "exchange_paths", "is_disk_full", "process_umask", "resolved_target",
           "human_size", "sibling_path", "special_kind", "tree_size"]
