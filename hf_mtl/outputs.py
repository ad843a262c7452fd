"""Outputs that are complete or absent: the one way every hf_mtl writer (training, predict, embed, exports) puts a file
or folder in place.

```python
from hf_mtl.outputs import StagedOutput

with StagedOutput("ner-model", inputs=[model_dir], where="--output") as output:
    model.save_pretrained(output.path)        # build the whole output in output.path ...
# ... renamed into place here, on a clean exit; after an exception the target is exactly as it was
```

`StagedOutput(target)`:

1. **checks** the target before anything is written (`check`, also callable on its own in a preflight step): not a
   symbolic link (writing would replace the link, not its target), not an input of the command (nor a hard link to
   one), not a folder that holds one (`inputs`; inside entries named in `carry` excepted), not something that already
   exists inside an input folder, no file where a folder is asked and vice versa, an
   existing non-empty folder only if `replaceable(folder)` says hf_mtl may replace it;
2. **locks** the target: an exclusive lock file `.<name>.hf_mtl-lock` beside it, so a second writer of the same target
   fails at once with a `ConfigError` naming the process that holds it;
3. lets the caller **build** the output at `path`, a staging file or folder `.<name>.hf_mtl-staging` beside the target
   (the same file system, so the final rename is atomic);
4. **commits**: a file is renamed over the old one; a folder first receives hard links to the old folder's entries
   named in `carry` (training checkpoints stay where resuming looks for them), then is atomically exchanged with the
   old folder (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames, repaired at the next start), and the old
   folder is removed. A process killed at any moment leaves the old output or the new one, never a mix; leftovers of
   a killed writer are removed the next time the target is written.

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
import sys
from pathlib import Path

from .errors import ConfigError

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
        for parent in reversed(self.target.parents):
            if not parent.exists():
                parent.mkdir()
                self._created_parents.append(parent)
        self._acquire_lock()
        self._repair_leftovers()
        self._existed = self.target.exists()
        if self.kind == "folder":
            self.path.mkdir()
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
            self._remove_created_parents()
            raise ConfigError(
                f"{self.where} {self.given}: another hf_mtl run or command is writing it ({holder}, lock file "
                f"{lock_path}); wait for it to finish or choose another {self.where}"
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
        if not self.target.exists() and replaced.exists():
            os.rename(replaced, self.target)  # killed between the two renames of a commit without exchange
        for leftover in (self.path, replaced):
            _remove(leftover)

    # ---- 4. commit, or leave everything as it was -----------------------------------------------------------------
    def commit(self):
        """Put the staged output in place of the target (carrying `carry` entries over first)."""
        if self.committed or not self.writer:
            return
        if self.kind == "file":
            os.replace(self.path, self.target)
        elif not self.target.exists():
            os.rename(self.path, self.target)
        else:
            self._carry_entries()
            if exchange_paths(self.path, self.target):
                _remove(self.path)  # the old folder, now at the staging path
            else:
                replaced = sibling_path(self.target, "replaced")
                os.rename(self.target, replaced)
                os.rename(self.path, self.target)
                _remove(replaced)
        self.committed = True

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
        try:
            if exc_type is None and self.commit_on_exit:
                self.commit()
        finally:
            if not self.committed:
                _remove(self.path)
                # Trainer creates output_dir when it starts (and TensorBoard its runs/): a failed writer that created
                # the target leaves it behind only when it holds something to resume from.
                if exc_type is not None and not self._existed and self.target.is_dir() and not any(
                    fnmatch.fnmatch(entry, pattern) for entry in os.listdir(self.target) for pattern in self.resumable
                ):
                    shutil.rmtree(self.target)
                self._remove_created_parents()
            self._release_lock()
        return False

    def _remove_created_parents(self):
        for parent in reversed(self._created_parents):
            if parent.is_dir() and not os.listdir(parent):
                parent.rmdir()
        self._created_parents = []


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


__all__ = ["StagedOutput", "exchange_paths", "resolved_target", "sibling_path"]
