"""tools/install.sh: each checkout's .venv runs that checkout's softtok, whatever another checkout installs."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = ("\nimport atexit as _atexit, os as _os\n"
         "if 'SOFTTOK_PROBE' in _os.environ:\n"
         "    _atexit.register(lambda: open(_os.environ['SOFTTOK_PROBE'], 'a').write(__file__ + '\\n'))\n")

LEGACY_FINDER = """import sys
from importlib.machinery import PathFinder


class Finder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "softtok":
            return PathFinder.find_spec(fullname, [{package!r}.rsplit("/", 1)[0]])
        if fullname.startswith("softtok."):
            return PathFinder.find_spec(fullname, [{package!r}])


def install():
    sys.meta_path.append(Finder)
"""


def dependency_site() -> Path | None:
    """The site-packages holding this run's torch: the dependency venv the tests layer over (read, never written)."""
    spec = importlib.util.find_spec("torch")
    return Path(spec.origin).resolve().parents[1] if spec and spec.origin else None


DEPS_SITE = dependency_site()
needs_deps = pytest.mark.skipif(DEPS_SITE is None, reason="the dependency venv is absent (no torch in this python): "
                                                           "run tools/install.sh and test with .venv/bin/python")
SCRIPTS = {"pytest": "from pytest import console_main as main", "torchrun": "from torch.distributed.run import main"}


def shared_venv(where: Path) -> Path:
    """A finished dependency venv for install.sh: a small venv over the real one's site-packages, so that what
    install.sh writes into its shared venv (nothing, it should be) lands here and shows; with two console scripts."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    (next(where.glob("lib/python*/site-packages")) / "deps.pth").write_text(f"{DEPS_SITE}\n")
    for name, line in SCRIPTS.items():
        (where / "bin" / name).write_text(f"#!{where}/bin/python\nimport sys\n{line}\nsys.exit(main())\n")
        (where / "bin" / name).chmod(0o755)
    (where / ".complete-test").touch()
    return where


def make_checkout(where: Path) -> Path:
    """A tiny checkout: softtok (with an exit probe that records which softtok ran), install.sh and the setup files."""
    shutil.copytree(REPO / "softtok", where / "softtok", ignore=shutil.ignore_patterns("__pycache__"))
    (where / "tools").mkdir()
    for name in ("setup.cfg", "pyproject.toml", "tools/install.sh"):
        shutil.copy2(REPO / name, where / name)
    with open(where / "softtok" / "__init__.py", "a") as init:
        init.write(PROBE)
    return where


def clean_env(**env: str) -> Dict[str, str]:
    """os.environ without PYTHONPATH (it would put the tested tree's softtok first in every child) and with pip
    offline (a faulty install.sh fails fast instead of building a venv of several GB), plus env."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PIP_NO_INDEX": "1", **env}


def install(checkout: Path, shared: Path) -> subprocess.CompletedProcess:
    """Run the checkout's install.sh over the dependency venv ``shared`` (its extras: test)."""
    return subprocess.run(["bash", str(checkout / "tools" / "install.sh")], capture_output=True, text=True,
                          env=clean_env(SOFTTOK_VENV=str(shared), SOFTTOK_EXTRAS="test",
                                        XDG_CACHE_HOME=str(shared.parent / "cache")))


def tree(root: Path) -> Dict[str, str]:
    """Every file and link under root: its content hash or link target, to show nothing changed."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_symlink() or p.is_file()}


def softtok_run(checkout: Path, command: str, tmp_path: Path) -> set:
    """The softtok packages that ran in ``command`` (a shell line, run from tmp_path with the checkout's .venv/bin on
    PATH), by the probe's record."""
    probe = tmp_path / "probe.txt"
    probe.unlink(missing_ok=True)
    env = clean_env(PATH=f"{checkout / '.venv' / 'bin'}:{os.environ['PATH']}", SOFTTOK_PROBE=str(probe))
    subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, check=True, stdout=subprocess.DEVNULL)
    return set(probe.read_text().split())


@needs_deps
def test_second_install_leaves_first_checkout_alone(tmp_path: Path) -> None:
    a, b = make_checkout(tmp_path / "a"), make_checkout(tmp_path / "b")
    (b / "softtok" / "only_in_b.py").write_text("")
    shared = shared_venv(tmp_path / "shared")
    untouched = tree(shared)
    first = install(a, shared)
    assert first.returncode == 0, first.stderr
    assert f"from {a.resolve() / 'softtok'}" in first.stdout
    before = tree(a / ".venv")
    second = install(b, shared)
    assert second.returncode == 0, second.stderr
    assert tree(a / ".venv") == before and tree(shared) == untouched
    for checkout in (a, b):
        mine = {str(checkout / "softtok" / "__init__.py")}
        assert softtok_run(checkout, "softtok --help", tmp_path) == mine
        assert softtok_run(checkout, f"{checkout}/.venv/bin/softtok --help", tmp_path) == mine
        assert softtok_run(checkout, "python -c 'import softtok'", tmp_path) == mine
        child = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'softtok.cli', '--help'], check=True)"
        assert softtok_run(checkout, f'python -c "{child}"', tmp_path) == mine
    probe = "import importlib.util as u; print(u.find_spec('softtok.only_in_b') is not None)"
    assert subprocess.run([str(a / ".venv" / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env()).stdout.split() == ["False"]


@needs_deps
def test_softtok_left_in_the_shared_venv_is_ignored(tmp_path: Path) -> None:
    """An editable softtok of checkout b in the shared venv (the old install.sh left one) serves checkout a nothing."""
    a, b = make_checkout(tmp_path / "a"), make_checkout(tmp_path / "b")
    (b / "softtok" / "only_in_b.py").write_text("")
    shared = shared_venv(tmp_path / "shared")
    site = next(shared.glob("lib/python*/site-packages"))
    (site / "legacy_finder.py").write_text(LEGACY_FINDER.format(package=str(b / "softtok")))
    (site / "__editable__.softtok-0.1.0.pth").write_text("import legacy_finder; legacy_finder.install()\n")
    seen = "import importlib.util as u, softtok; print(softtok.__file__, u.find_spec('softtok.only_in_b') is not None)"
    assert subprocess.run([str(shared / "bin" / "python"), "-c", seen], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env()).stdout.split()[1] == "True"  # the finder works: b's module
    result = install(a, shared)
    assert result.returncode == 0, result.stderr
    assert subprocess.run([str(a / ".venv" / "bin" / "python"), "-c", seen], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env()).stdout.split() == [str(a / "softtok" / "__init__.py"), "False"]


@needs_deps
def test_console_scripts_of_dependencies_use_the_checkout_python(tmp_path: Path) -> None:
    checkout, shared = make_checkout(tmp_path / "a"), shared_venv(tmp_path / "shared")
    assert install(checkout, shared).returncode == 0
    bin_dir = checkout / ".venv" / "bin"
    wrapped = [p for p in bin_dir.iterdir() if not p.is_symlink() and p.read_bytes().startswith(b"#!")
               and not p.name.startswith("activate")]
    assert {"softtok", "pytest", "torchrun"} <= {p.name for p in wrapped}
    for script in wrapped:
        head = script.read_text(errors="replace").splitlines()[:3]
        assert f"#!{bin_dir / 'python'}" in head[0] or f'"{bin_dir / "python"}"' in "\n".join(head), script
        assert str(shared) not in "\n".join(head), script
    ran = softtok_run(checkout, "pytest --version >/dev/null 2>&1 && python -c 'import softtok'", tmp_path)
    assert ran == {str(checkout / "softtok" / "__init__.py")}


@needs_deps
def test_old_link_to_the_shared_venv_is_replaced_not_followed(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "a")
    shared = tmp_path / "old-shared-venv"
    (shared / "bin").mkdir(parents=True)
    (shared / "bin" / "softtok").write_text("#!/bin/sh\n")
    (checkout / ".venv").symlink_to(shared)
    result = install(checkout, shared_venv(tmp_path / "deps"))
    assert result.returncode == 0, result.stderr
    assert not (checkout / ".venv").is_symlink() and (checkout / ".venv" / "pyvenv.cfg").is_file()
    assert tree(shared) == {"bin/softtok": hashlib.sha256(b"#!/bin/sh\n").hexdigest()}


def test_unfinished_named_venv_is_refused_not_wiped(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "a")
    named = tmp_path / "not-a-venv"
    named.mkdir()
    (named / "keep.txt").write_text("mine")
    result = subprocess.run(["bash", str(checkout / "tools" / "install.sh")], capture_output=True, text=True,
                            env=clean_env(SOFTTOK_VENV=str(named), XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert result.returncode == 1
    assert f"SOFTTOK_VENV={named} is no finished dependency venv" in result.stderr
    assert tree(named) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    assert not (checkout / ".venv").exists()


def test_requirements_are_the_dependencies_without_softtok(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "a")

    def run(extras: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(checkout / "tools" / "install.sh"), "--requirements"],
                              capture_output=True, text=True,
                              env=clean_env(SOFTTOK_EXTRAS=extras, XDG_CACHE_HOME=str(tmp_path / "cache")))

    listed = run("test").stdout.split("\n")
    assert {"torch==2.9.1", "espnet==202511", "pytest", "speechbrain>=1.1.2,<1.2"} <= set(listed)
    assert not [req for req in listed if req.startswith("softtok")] and "ctranslate2" not in listed
    assert "ctranslate2" in run("test,whisper").stdout.split("\n")
    bad = run("test,nope")
    assert bad.returncode == 1 and "setup.cfg: no extra [nope]" in bad.stderr
