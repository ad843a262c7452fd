"""No Docker engine runs here: the Dockerfile must at least install exactly as .ci/run does and run the README demo."""

import re

from conftest import REPO_ROOT


def pip_installs(text: str) -> list:
    return re.findall(r"python -m pip install --quiet (.+)", text)


def test_dockerfile_installs_as_ci_does_and_runs_the_demo():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert pip_installs(dockerfile) == pip_installs(ci) == ["--upgrade pip", "torch==2.13.0", '-e ".[dev]"']
    readme = (REPO_ROOT / "README.md").read_text()
    assert 'CMD ["python", "run_mtl.py", "configs/demo.json"]' in dockerfile
    assert "python run_mtl.py configs/demo.json" in readme
