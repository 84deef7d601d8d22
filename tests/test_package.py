"""The package as a user installs it: a wheel holding the demo model, console scripts, and dependencies by extra."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from wan_t2i.loading import DEMO_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS = {"wan-t2i": "wan_t2i.cli:main", "wan-t2i-app": "wan_t2i.app:main"}


def requirement_lines(path: Path) -> list[str]:
    """A requirements file's requirements, comments and blank lines dropped."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_requirements_txt_is_the_package_and_its_app_extra():
    """A Space installs requirements.txt: it must be the package's dependencies plus [app], and only the app needs
    Gradio."""
    assert (
        requirement_lines(ROOT / "requirements.txt")
        == PROJECT["dependencies"] + PROJECT["optional-dependencies"]["app"]
    )
    assert not any(requirement.startswith(("gradio", "pandas")) for requirement in PROJECT["dependencies"])


def test_console_scripts_name_main_functions():
    scripts = PROJECT["scripts"]
    assert scripts.items() >= SCRIPTS.items() and scripts["wan-t2i-doctor"] == "wan_t2i.doctor.__main__:main"
    for target in (SCRIPTS | {"doctor": scripts["wan-t2i-doctor"]}).values():
        module, function = target.split(":")
        path = ROOT / f"{module.replace('.', '/')}.py"
        tree = ast.parse(path.read_text())  # read, not imported: a __main__ module may run when imported
        assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, target


def test_every_file_of_the_demo_model_is_package_data():
    package = ROOT / "wan_t2i"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wan_t2i"]
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    assert shipped == {path for path in DEMO_MODEL_DIR.rglob("*") if path.is_file()}


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_virtualenv_runs_the_demo_model_from_another_directory(tmp_path):
    """Build the wheel, install it into a new virtualenv, and render with the console script elsewhere.

    Offline: the wheel is built with the setuptools already installed (--no-build-isolation), and the virtualenv sees
    the installed packages (system site-packages), so pip installs the wheel alone, with --no-index.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = tmp_path / "source"  # a copy, so that the build leaves no build/ or egg-info in the working tree
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "wan_t2i", source / "wan_t2i", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        *pip,
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        tmp_path / "dist",
        ".",
        cwd=source,
        env=env,
    )
    (wheel,) = (tmp_path / "dist").glob("wan_t2i-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    demo = {
        f"wan_t2i/{p.relative_to(DEMO_MODEL_DIR.parent).as_posix()}" for p in DEMO_MODEL_DIR.rglob("*") if p.is_file()
    }
    assert demo <= names
    gradio = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: gradio")]
    assert gradio and all('extra == "app"' in line for line in gradio)  # only the [app] extra brings Gradio

    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    bin_dir = tmp_path / "venv" / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", "--no-index", wheel, cwd=tmp_path, env=env)
    assert all((bin_dir / script).is_file() for script in PROJECT["scripts"])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import sys, wan_t2i.pipeline; print(wan_t2i.pipeline.__file__, 'gradio' in sys.modules)"
    location, gradio_loaded = run(bin_dir / "python", "-c", probe, cwd=elsewhere, env=env).split()
    assert Path(location).is_relative_to(tmp_path / "venv") and gradio_loaded == "False"
    assert "usage: python -m wan_t2i" in run(bin_dir / "python", "-m", "wan_t2i", "--help", cwd=elsewhere, env=env)
    assert "WAN_T2I_MODEL_PATH" in run(bin_dir / "wan-t2i-app", "--help", cwd=elsewhere, env=env)
    printed = run(
        bin_dir / "wan-t2i", "--prompt", "A purple lake at sunset", "--num_inference_steps", "2", "--seed", "0",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    assert "model: wan-t2i demo (tiny) on cpu; seed 0" in printed and "purple" in printed.splitlines()[0]
    assert (elsewhere / "outputs" / "output.png").stat().st_size > 1000


@pytest.mark.slow
def test_pip_installs_from_a_git_url(tmp_path):
    """`pip install "git+<repo url>"`, on a clone of this checkout's committed files reached by a file:// URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "wan_t2i", repo / "wan_t2i", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", repo)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    run("git", "init", "-q", repo, cwd=tmp_path, env=env)
    run("git", "add", ".", cwd=repo, env=env)
    run(*git, "commit", "-q", "-m", "snapshot", cwd=repo, env=env)
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    url = f"git+{repo.as_uri()}"
    run(python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", url, cwd=tmp_path,
        env=env)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import wan_t2i.loading as l; print(l.__file__, (l.DEMO_MODEL_DIR / 'model_index.json').is_file())"
    location, has_demo = run(python, "-c", probe, cwd=elsewhere, env=env).split()
    assert Path(location).is_relative_to(tmp_path / "venv") and has_demo == "True"
