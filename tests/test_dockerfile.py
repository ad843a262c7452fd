"""No Docker engine runs here: what the image would run is checked against the repository instead. Its default command
must name a script, module or console script that exists, with arguments that parse; it installs as .ci/run does."""

import configparser
import importlib
import importlib.util
import json
import re
import shlex

import pytest
from conftest import REPO_ROOT


def instructions(path) -> list:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def pip_installs(text: str) -> list:
    return re.findall(r"python -m pip install --quiet (.+)", text)


def console_scripts() -> dict:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    entries = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in entry.split("=")) for entry in entries)


def default_command() -> list:
    commands = [arguments for keyword, arguments in instructions(REPO_ROOT / "Dockerfile") if keyword == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    # The exec (JSON) form: with the shell form, `docker stop` signals the shell and the command never sees SIGTERM.
    return json.loads(commands[-1])


def test_dockerfile_installs_as_ci_does():
    dockerfile = pip_installs((REPO_ROOT / "Dockerfile").read_text())
    assert dockerfile and dockerfile == pip_installs((REPO_ROOT / ".ci" / "run").read_text())


def test_copied_sources_exist():
    for keyword, arguments in instructions(REPO_ROOT / "Dockerfile"):
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"


def assert_python_command_runs(arguments: list):
    if arguments[0] == "-m":
        assert importlib.util.find_spec(arguments[1]) is not None, f"python -m {arguments[1]}: no such module"
        return
    script = REPO_ROOT / arguments[0]
    assert script.is_file(), f"python {arguments[0]}: no such file"
    for argument in arguments[1:]:
        if argument.endswith(".json"):
            assert (REPO_ROOT / argument).is_file(), f"{arguments[0]} {argument}: no such file"
            json.loads((REPO_ROOT / argument).read_text(encoding="utf-8"))


def assert_command_resolves(program: str, arguments: list):
    """The program is python (a repository script or an importable module) or a console script whose entry point
    imports; hf-mtl's arguments parse with the real CLI parser."""
    if program in ("python", "python3"):
        assert_python_command_runs(arguments)
        return
    scripts = console_scripts()
    assert program in scripts, f"{program!r}: neither python nor a console script of setup.cfg ({sorted(scripts)})"
    module_name, function_name = scripts[program].split(":")
    assert callable(getattr(importlib.import_module(module_name), function_name))
    if module_name == "hf_mtl.cli" and arguments and arguments[0] != "train":
        from hf_mtl.cli import build_parser
        from hf_mtl.errors import HfMtlError

        try:
            parsed = build_parser().parse_args(arguments)
        except (HfMtlError, SystemExit) as error:
            pytest.fail(f"{program} {' '.join(arguments)}: the CLI rejects these arguments ({error})")
        assert parsed.command == arguments[0]


def test_the_default_command_resolves_and_its_arguments_parse():
    program, *arguments = default_command()
    assert_command_resolves(program, arguments)
    if "--port" in arguments:
        exposed = [arguments for keyword, arguments in instructions(REPO_ROOT / "Dockerfile") if keyword == "EXPOSE"]
        assert arguments[arguments.index("--port") + 1] in " ".join(exposed).split(), "the served port is not EXPOSEd"


def test_the_commands_its_comments_suggest_resolve():
    """`docker run ... hf_mtl <command>` lines in the Dockerfile's header: each command must run in the image."""
    suggested = re.findall(r"^#\s+docker run .*?\bhf_mtl\b +([^#\n]+)", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    commands = [shlex.split(command) for command in suggested if command.strip()]  # none: the default CMD
    assert commands, "the Dockerfile's header suggests no command"
    for program, *arguments in commands:
        assert_command_resolves(program, arguments)
