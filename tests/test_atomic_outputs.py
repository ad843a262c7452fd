"""Outputs are complete or absent (`hf_mtl.atomic_files.StagedOutput`): a run killed during its final save leaves the old
output_dir or the new one, never a mix; a folder is exchanged atomically, a file renamed over; checkpoints are carried
into the new folder; a second writer of one output fails at once; leftovers of a killed writer are repaired."""

import builtins
import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT
from safetensors import SafetensorError
from train_fixtures import joint_config, run_config, save_tiny_encoder, weights, write_joint_data

import hf_mtl.atomic_files
from hf_mtl.errors import ConfigError, HfMtlError, OutputError
from hf_mtl.atomic_files import StagedOutput, process_umask, sibling_path

# The real entry point, SIGKILLed at one moment of the final save: after the card is written into the staging folder
# (everything but the rename done), or right after the staging folder was exchanged with the old output_dir.
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import hf_mtl.atomic_files, hf_mtl.train

    def then_die(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    if os.environ["KILL_POINT"] == "staged":
        hf_mtl.train.write_model_card = then_die(hf_mtl.train.write_model_card)
    else:
        hf_mtl.atomic_files.exchange_paths = then_die(hf_mtl.atomic_files.exchange_paths)
    hf_mtl.train.cli_main(sys.argv[1:])
""")


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("atomic")
    encoder = save_tiny_encoder(root / "encoder", tokenizer)
    data = write_joint_data(root / "data", sizes=(24, 8, 8))
    output = root / "old"
    run_config(joint_config(encoder, data, output, max_steps=2, seed=1), root)
    return root, encoder, data, output


def final_files(folder):
    """name -> bytes of everything but checkpoints (which a run adds while it trains, before its final save)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.relative_to(folder).parts[0].startswith("checkpoint-")}


@pytest.mark.parametrize("kill_point", ["staged", "exchanged"])
@pytest.mark.training
@pytest.mark.subprocess
def test_kill_during_the_final_save_leaves_the_old_folder_or_the_new_one(old_run, tmp_path, kill_point):
    root, encoder, data, old = old_run
    output = tmp_path / "out"
    subprocess.run(["cp", "-a", str(old), str(output)], check=True)
    before = final_files(output)
    config = joint_config(encoder, data, output, max_steps=4, save_strategy="steps", save_steps=2, seed=2)
    config_path = tmp_path / "new.json"
    config_path.write_text(json.dumps(config))

    env = dict(os.environ, KILL_POINT=kill_point, OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(config_path)], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]

    after = final_files(output)
    if kill_point == "staged":  # the old run's files, byte for byte, and this run's checkpoints to resume from
        assert after == before
        assert (output / "checkpoint-4" / "model.safetensors").is_file()
        assert sibling_path(output, "staging").is_dir()  # the unfinished new folder, hidden beside
    else:  # the new run's folder, complete: every file a run writes, all of the new run
        assert sorted(after) == sorted(before)
        assert json.loads((output / "training_args.json").read_text())["max_steps"] == 4
        assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
        final, checkpoint = weights(output), weights(output / "checkpoint-4")
        assert all(torch.equal(final[name], checkpoint[name]) for name in final)
        assert after["README.md"] != before["README.md"] and after["all_results.json"] != before["all_results.json"]

    # The next run into the folder clears what the killed one left beside it, and resumes from its checkpoints
    # (from checkpoint-2: transformers 5.24 resumed from the final checkpoint trains one step too many).
    run_config(config, tmp_path, "--resume_from_checkpoint", str(output / "checkpoint-2"))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new.json", "out", "run_config.json"]
    assert (output / "checkpoint-2").is_dir() and (output / "checkpoint-4").is_dir()


def test_a_file_is_renamed_into_place_or_not_at_all(tmp_path):
    target = tmp_path / "predictions.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with StagedOutput(target, kind="file") as output:
            output.path.write_text("half of the new")
            raise RuntimeError("killed in the middle")
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["predictions.jsonl"]
    with StagedOutput(target, kind="file") as output:
        output.path.write_text("new\n")
        assert target.read_text() == "old\n"  # nothing visible before the block ends
    assert target.read_text() == "new\n" and sorted(os.listdir(tmp_path)) == ["predictions.jsonl"]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_folder_is_replaced_whole_and_keeps_its_checkpoints(tmp_path, monkeypatch, exchange):
    if not exchange:  # the two-rename path of systems without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(hf_mtl.atomic_files, "exchange_paths", lambda first, second: False)
    target = tmp_path / "run"
    (target / "checkpoint-2").mkdir(parents=True)
    (target / "checkpoint-2" / "model.safetensors").write_bytes(b"weights")
    (target / "README.md").write_text("old card")
    (target / "eval_report.md").write_text("old report")
    with StagedOutput(target, carry=("checkpoint-*",)) as output:
        (output.path / "README.md").write_text("new card")
    assert sorted(os.listdir(target)) == ["README.md", "checkpoint-2"]  # the old report did not survive
    assert (target / "README.md").read_text() == "new card"
    assert (target / "checkpoint-2" / "model.safetensors").read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_leftovers_of_a_writer_killed_between_two_renames_are_repaired(tmp_path):
    target = tmp_path / "run"
    replaced, staging = sibling_path(target, "replaced"), sibling_path(target, "staging")
    replaced.mkdir()
    (replaced / "README.md").write_text("old card")  # the old folder, moved aside
    staging.mkdir()  # the new one, not yet in place
    with pytest.raises(RuntimeError):
        with StagedOutput(target):
            raise RuntimeError("fails before committing")
    assert (target / "README.md").read_text() == "old card"  # the old folder is back
    assert sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.subprocess
def test_a_second_writer_of_one_output_fails_at_once_naming_the_first(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from hf_mtl.atomic_files import StagedOutput
            with StagedOutput({str(target)!r}):
                print("holding", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ConfigError, match=rf"--output {target}: another hf_mtl run .*pid {holder.pid}"):
            with StagedOutput(target):
                pass
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and target.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the lock file goes with its holder
    with StagedOutput(target):  # free again
        pass


# ---- special files, the lock path, a full disk, file modes -----------------------------------------------------------
def special_files(folder):
    """A FIFO, and as root (the Dockerfile's user) a copy of /dev/null: what renaming a file over would replace."""
    os.mkfifo(folder / "pipe")
    made = {"pipe": stat.S_ISFIFO}
    if os.geteuid() == 0:
        os.mknod(folder / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["null"] = stat.S_ISCHR
    return made


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_pipe_or_device_is_refused_and_left_as_it_is(tmp_path, kind):
    for name, is_kind in special_files(tmp_path).items():
        what = "named pipe" if name == "pipe" else "character device"
        with pytest.raises(ConfigError, match=rf"--output {tmp_path / name}: is a {what}.*give the path of a"):
            with StagedOutput(tmp_path / name, kind=kind) as output:
                output.path.write_text("never")
        assert is_kind(os.lstat(tmp_path / name).st_mode)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no lock, no staging


@pytest.mark.parametrize("planted", ["link", "folder", "pipe"])
def test_something_planted_at_the_lock_path_is_refused_and_left_alone(tmp_path, planted):
    target, victim = tmp_path / "predictions.jsonl", tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock_path = sibling_path(target, "lock")
    {"link": lambda: lock_path.symlink_to(victim.name), "folder": lock_path.mkdir,
     "pipe": lambda: os.mkfifo(lock_path)}[planted]()
    what = {"link": r"a symbolic link \(to victim.txt\)", "folder": "a folder", "pipe": r"a named pipe"}[planted]
    with pytest.raises(ConfigError, match=rf"--output {target}: its lock file {lock_path} is {what}.*remove it"):
        StagedOutput(target, kind="file").check()  # the preflight already refuses it
    with pytest.raises(ConfigError, match=rf"its lock file {lock_path} is {what}"):
        with StagedOutput(target, kind="file") as output:
            output.path.write_text("never")
    assert victim.read_text() == "precious\n" and not target.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([lock_path.name, victim.name])
    still = {"link": stat.S_ISLNK, "folder": stat.S_ISDIR, "pipe": stat.S_ISFIFO}[planted]
    assert still(os.lstat(lock_path).st_mode)


def test_a_link_planted_after_the_check_is_refused_by_the_lock(tmp_path):
    target = tmp_path / "out"
    output = StagedOutput(target)
    output.check()
    sibling_path(target, "lock").symlink_to("elsewhere")
    with pytest.raises(ConfigError, match="its lock file .* is a symbolic link"):
        with output:
            pass
    assert sorted(os.listdir(tmp_path)) == [".out.hf_mtl-lock"]


def disk_full(path="x"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def mount_of(path):
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_full_disk_is_one_error_naming_the_target_and_its_file_system(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_bytes(b"old" * 1000)
    else:
        target.mkdir()
        (target / "model.safetensors").write_bytes(b"old" * 1000)
    before = final_files(target) if kind == "folder" else target.read_bytes()
    with pytest.raises(OutputError) as raised:
        with StagedOutput(target, kind=kind) as output:
            if kind == "file":
                output.path.write_bytes(b"half")
                raise disk_full(output.path)
            (output.path / "config.json").write_text("{}")
            # safetensors (Rust) quotes the errno in its own exception
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    message = str(raised.value)
    assert isinstance(raised.value, HfMtlError) and isinstance(raised.value, OSError)
    assert message.startswith(f"--output {target}: no space left on the file system mounted at {mount_of(tmp_path)}")
    assert "free there (the previous one is 2.9 KiB)" in message and message.endswith(f"the previous {kind} is kept")
    assert "\n" not in message
    assert (final_files(target) if kind == "folder" else target.read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the staging output and the lock are gone


def test_a_full_disk_when_nothing_was_there_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "out.npy"
    with pytest.raises(OutputError, match=rf"^--output {target}: no space left .* needs more than the .* free there: "
                                          r"free some space there or choose another --output$"):
        with StagedOutput(target, kind="file") as output:
            output.path.write_bytes(b"x")
            raise disk_full(output.path)
    assert os.listdir(tmp_path) == []  # the folder it created is gone too


def test_an_exhausted_quota_is_named_as_such(tmp_path):
    with pytest.raises(OutputError, match=r"disk quota exceeded on the file system .* more than your quota leaves"):
        with StagedOutput(tmp_path / "out"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


@pytest.mark.parametrize("free", [0, 10 << 30])
def test_a_short_write_without_errno_is_a_full_disk_only_on_a_full_file_system(tmp_path, monkeypatch, free):
    """torch.save reports a full disk as "unexpected pos"; on a file system with space left it is something else."""
    monkeypatch.setattr(hf_mtl.atomic_files, "_free_space", lambda folder: free)
    expected = OutputError if free == 0 else RuntimeError
    with pytest.raises(expected, match="no space left" if free == 0 else "unexpected pos"):
        with StagedOutput(tmp_path / "out"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_taking_the_lock_leaves_nothing(tmp_path, monkeypatch):
    import filelock

    def no_space(self, *args, **kwargs):
        raise disk_full(self.lock_file)

    monkeypatch.setattr(filelock.FileLock, "acquire", no_space)
    with pytest.raises(OutputError, match=rf"^output_dir {tmp_path / 'a' / 'run'}: no space left"):
        with StagedOutput(tmp_path / "a" / "run", where="output_dir"):
            pass
    assert os.listdir(tmp_path) == []


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(OSError) as raised:
        with StagedOutput(tmp_path / "out", kind="file"):
            raise OSError(errno.EIO, "Input/output error")
    assert type(raised.value) is OSError and os.listdir(tmp_path) == []
    with pytest.raises(ConfigError, match="^already a user error$"):  # not reworded, even if it mentions a full disk
        with StagedOutput(tmp_path / "out", kind="file"):
            raise ConfigError("already a user error") from disk_full()


class ShortWriter:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise disk_full(self.handle.name)
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def full_disk_open(room):
    def opener(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        return handle if mode.startswith("r") else ShortWriter(handle, room)
    return opener


@pytest.mark.parametrize("command", ["predict", "embed", "export-task", "export-sentence-transformers"])
@pytest.mark.training
def test_commands_on_a_full_disk_print_one_line_and_keep_the_old_output(old_run, tmp_path, monkeypatch, capsys,
                                                                         command):
    from safetensors.torch import save_file

    import hf_mtl.cli
    import transformers.modeling_utils

    _, _, _, model = old_run
    texts = tmp_path / "input.txt"
    texts.write_text("anna visited paris\nomar left acme\n" * 200)
    if command in ("predict", "embed"):
        output = tmp_path / ("predictions.jsonl" if command == "predict" else "embeddings.npy")
        output.write_bytes(b"old output\n")
        monkeypatch.setattr(hf_mtl.cli, "open", full_disk_open(room=1000), raising=False)
        argv = [command, "--model", model, "--input", texts, "--output", output]
    else:
        output = tmp_path / "export"
        output.mkdir()
        (output / "config.json").write_text('{"old": true}')

        def save_half(tensors, filename, metadata=None):
            save_file(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as handle:
                handle.truncate(100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_half)
        argv = [command, "--model", model, "--output", output] + (["--task", "ner"] if command == "export-task" else [])
    before = {path.name: path.read_bytes() for path in output.parent.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert hf_mtl.cli.main([str(arg) for arg in argv]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    assert errors[0].startswith(f"error: --output {output}: no space left on the file system mounted at ")
    assert errors[0].endswith("is kept")
    assert {path.name: path.read_bytes() for path in output.parent.rglob("*") if path.is_file()} == before
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def created_modes(folder):
    """The modes `open` and `mkdir` give under the current umask, for a file, an executable and a folder."""
    folder.mkdir()
    with open(folder / "file", "w"):
        pass
    executable = os.open(folder / "executable", os.O_CREAT | os.O_WRONLY, 0o777)
    os.close(executable)
    (folder / "folder").mkdir()
    return {name: stat.S_IMODE(os.lstat(folder / name).st_mode) for name in ("file", "executable", "folder")}


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=["022", "027", "002"])
def test_committed_outputs_get_the_modes_of_open_and_mkdir(tmp_path, umask):
    """safetensors writes owner-only files (its atomic temporary file): nobody sharing the folder could read them."""
    old_umask = os.umask(umask)
    try:
        expected = created_modes(tmp_path / "reference")
        with StagedOutput(tmp_path / "predictions.jsonl", kind="file") as output:
            output.path.write_text("new\n")
            output.path.chmod(0o600)
        target = tmp_path / "run"
        (target / "checkpoint-2").mkdir(parents=True)
        (target / "checkpoint-2" / "model.safetensors").write_bytes(b"weights")
        (target / "checkpoint-2" / "model.safetensors").chmod(0o600)  # written by Trainer, carried over
        with StagedOutput(target, carry=("checkpoint-*",)) as output:
            (output.path / "model.safetensors").write_bytes(b"weights")
            (output.path / "model.safetensors").chmod(0o600)
            (output.path / "plots").mkdir(mode=0o700)
            (output.path / "run.sh").write_text("#!/bin/sh\n")
            (output.path / "run.sh").chmod(0o700)
        assert mode(tmp_path / "predictions.jsonl") == expected["file"]
        assert mode(target) == expected["folder"]
        assert mode(target / "model.safetensors") == expected["file"]
        assert mode(target / "checkpoint-2" / "model.safetensors") == expected["file"]
        assert mode(target / "plots") == mode(target / "checkpoint-2") == expected["folder"]
        assert mode(target / "run.sh") == expected["executable"]
    finally:
        os.umask(old_umask)


def test_a_replaced_output_keeps_its_own_mode(tmp_path):
    """As a file or folder written in place would: the owner chose 0640 for the file, 0750 for the folder."""
    target, folder = tmp_path / "predictions.jsonl", tmp_path / "run"
    target.write_text("old\n")
    target.chmod(0o640)
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    with StagedOutput(target, kind="file") as output:
        output.path.write_text("new\n")
    with StagedOutput(folder) as output:
        (output.path / "README.md").write_text("new card")
    assert mode(target) == 0o640 and target.read_text() == "new\n"
    assert mode(folder) == 0o750 and (folder / "README.md").read_text() == "new card"


@pytest.mark.training
def test_trained_and_exported_weights_are_readable_by_the_group_and_others(old_run, tmp_path):
    from hf_mtl.export import export_task

    _, _, _, model = old_run
    export_task(str(model), "ner", str(tmp_path / "ner"))
    expected = 0o666 & ~process_umask()
    for weights_file in (model / "model.safetensors", tmp_path / "ner" / "model.safetensors"):
        assert mode(weights_file) == expected, weights_file
    if process_umask() == 0o022:  # the usual one: what a shared folder or a non-root container needs
        assert mode(model / "model.safetensors") == 0o644
