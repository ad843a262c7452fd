"""Outputs are complete or absent (`hf_mtl.outputs.StagedOutput`): a run killed during its final save leaves the old
output_dir or the new one, never a mix; a folder is exchanged atomically, a file renamed over; checkpoints are carried
into the new folder; a second writer of one output fails at once; leftovers of a killed writer are repaired."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT
from train_fixtures import joint_config, run_config, save_tiny_encoder, weights, write_joint_data

import hf_mtl.outputs
from hf_mtl.errors import ConfigError
from hf_mtl.outputs import StagedOutput, sibling_path

# The real entry point, SIGKILLed at one moment of the final save: after the card is written into the staging folder
# (everything but the rename done), or right after the staging folder was exchanged with the old output_dir.
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import hf_mtl.outputs, hf_mtl.train

    def then_die(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    if os.environ["KILL_POINT"] == "staged":
        hf_mtl.train.write_model_card = then_die(hf_mtl.train.write_model_card)
    else:
        hf_mtl.outputs.exchange_paths = then_die(hf_mtl.outputs.exchange_paths)
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
        monkeypatch.setattr(hf_mtl.outputs, "exchange_paths", lambda first, second: False)
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


def test_a_second_writer_of_one_output_fails_at_once_naming_the_first(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from hf_mtl.outputs import StagedOutput
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
