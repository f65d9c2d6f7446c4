"""Bad inputs to the scoring-image recipe: one clear line each, a non-zero exit, no output."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ociassemble.azureml.script import check_entry_script
from ociassemble.azureml.userenv import read_user_env
from ociassemble.errors import BuildError, InputError
from tests.conftest import run_cli

GOOD_SCORE = "def init():\n    pass\n\ndef run(data):\n    return data\n"


def fake_base(root: Path, *, nginx: bool = True, runit: bool = True) -> Path:
    """A tiny rootfs folder that looks like Debian with Python 3.11 (nothing runs from it)."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/bin/python3.11").write_text("")
    os.symlink("python3.11", root / "usr/bin/python3")
    if nginx:
        (root / "usr/sbin/nginx").write_text("")
    if runit:
        (root / "usr/bin/runsvdir").write_text("")
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: libc6\nVersion: 2.36-9\n\nPackage: python3.11-minimal\nVersion: 3.11.2-6\n\n")
    return root


def project(tmp_path: Path, score: str | None = GOOD_SCORE) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    if score is not None:
        (p / "score.py").write_text(score)
    (p / "model.pkl").write_bytes(b"model")
    return p


def assert_one_line_error(proc, pattern: str, out_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ociassemble: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[-1]), lines[-1]
    assert not [p for p in out_dir.iterdir() if p.name.startswith(("image", ".image"))]


@pytest.mark.parametrize(
    "score,pattern",
    [
        (None, r"entry script .*score\.py does not exist"),
        ("def run(data):\n    return 1\n", r"defines no init\(\)"),
        ("def init():\n    pass\n", r"defines no run\(\)"),
        ("x = \n", r"line 1: invalid syntax"),
    ],
)
def test_bad_entry_script(tmp_path: Path, score: str | None, pattern: str) -> None:
    p = project(tmp_path, score)
    proc = run_cli("build", str(p), "--entry-script", str(p / "score.py"), "--model", str(p / "model.pkl"),
                   "--base", f"rootfs:{fake_base(tmp_path / 'base')}", "-o", f"oci-archive:{p / 'image.tar'}",
                   "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, pattern, p)


def test_entry_script_functions_may_be_imported_or_assigned(tmp_path: Path) -> None:
    s = tmp_path / "score.py"
    s.write_text("from mylib import init\ntry:\n    import fast as _f\n    run = _f.run\nexcept ImportError:\n    def run(d):\n        return d\n")
    check_entry_script(s)  # no error: both names exist without importing user code


def test_missing_model_path(tmp_path: Path) -> None:
    p = project(tmp_path)
    proc = run_cli("build", str(p), "--model", str(p / "nope.pkl"), "--base", f"rootfs:{fake_base(tmp_path / 'b')}",
                   "-o", f"oci-archive:{p / 'image.tar'}", "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"model path .*nope\.pkl does not exist", p)


def test_base_without_nginx_and_runit_names_what_is_missing(tmp_path: Path) -> None:
    p = project(tmp_path)
    base = fake_base(tmp_path / "b", nginx=False, runit=False)
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--base", f"rootfs:{base}",
                   "-o", f"oci-archive:{p / 'image.tar'}", "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"has no nginx, runsvdir", p)


def test_unresolvable_requirement_is_one_line_from_pex(tmp_path: Path) -> None:
    p = project(tmp_path)
    (p / "requirements.txt").write_text("this-package-does-not-exist-ociassemble==0.0.1\n")
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "-r", str(p / "requirements.txt"),
                   "--base", f"rootfs:{fake_base(tmp_path / 'b')}", "-o", f"oci-archive:{p / 'image.tar'}",
                   "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"cannot install the Python requirements \(requirements\.txt with the scoring server's\)"
                                r".*: nothing matches this-package-does-not-exist-ociassemble==0\.0\.1 \(no wheel of it for this "
                                r"platform, or no such project", p)
    assert "pip:" not in proc.stderr  # pex's own output only with --debug
    debug = run_cli("build", str(p), "--model", str(p / "model.pkl"), "-r", str(p / "requirements.txt"), "--debug",
                    "--base", f"rootfs:{fake_base(tmp_path / 'b2')}", "-o", f"oci-archive:{p / 'image.tar'}",
                    "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert "pex's output:" in debug.stderr and "pip: ERROR: No matching distribution found" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("ociassemble: error: cannot install")


@pytest.mark.parametrize("has_git", [True, False])
def test_a_git_requirement_that_cannot_be_fetched_is_named_with_its_fix(tmp_path: Path, has_git: bool) -> None:
    """pip reports a ``git+`` requirement it could not clone as a project "not found"; the line
    names the URL instead, and says whether git is missing here or the clone failed."""
    import shutil
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on: the clone is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"git+http://127.0.0.1:{port}/nothing.git#egg=nothing"
    p = project(tmp_path)
    (p / "requirements.txt").write_text(url + "\n")
    path = tmp_path / "path"  # this machine's tools, with or without git
    path.mkdir()
    if has_git:
        if shutil.which("git") is None:
            pytest.skip("git is not installed here: the other case covers a machine without it")
        (path / "git").symlink_to(shutil.which("git"))
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "-r", str(p / "requirements.txt"),
                   "--base", f"rootfs:{fake_base(tmp_path / 'b')}", "-o", f"oci-archive:{p / 'image.tar'}",
                   "--cache-dir", str(tmp_path / "cache"), cwd=p, env={"PATH": str(path)})
    if has_git:
        assert_one_line_error(proc, rf"cannot fetch {re.escape(url)}: the clone failed \(check the URL", p)
    else:
        assert_one_line_error(proc, rf"http://127\.0\.0\.1:{port}/nothing\.git is fetched with git, which this "
                                    r"machine does not have: install it \(apt-get install git\)", p)


def test_a_pin_the_scoring_server_cannot_run_with_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    p = project(tmp_path)
    (p / "requirements.txt").write_text("azureml-defaults\ngunicorn==19.9.0\n")
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--base", f"rootfs:{tmp_path / 'no-such-base'}",
                   "-o", f"oci-archive:{p / 'image.tar'}", "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"requirements\.txt asks for gunicorn==19\.9\.0, but the scoring server needs "
                                r"gunicorn<28,>=20\.1 .*: pin a version in <28,>=20\.1, or drop the pin", p)


def test_conda_only_packages_are_named(tmp_path: Path) -> None:
    env = tmp_path / "myenv.yml"
    env.write_text("name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - numpy=1.26\n  - mkl\n"
                   "  - cudatoolkit=11.8\n  - pip:\n    - requests==2.31.0\n")
    with pytest.raises(BuildError, match=r"conda-only packages: mkl, cudatoolkit; only pip packages"):
        read_user_env(env)


def test_conda_file_translation(tmp_path: Path) -> None:
    env = tmp_path / "myenv.yml"
    env.write_text("dependencies:\n  - python=3.11\n  - pip\n  - numpy=1.26\n  - scikit-learn=1.3.2\n"
                   "  - conda-forge::pandas>=2\n  - pip:\n    - inference-schema[numpy-support]==1.8\n")
    ue = read_user_env(env)
    assert ue.python == "3.11"
    assert ue.requirements == ["numpy==1.26.*", "scikit-learn==1.3.2", "pandas>=2", "inference-schema[numpy-support]==1.8"]


def test_conda_python_pin_must_match_the_base(tmp_path: Path) -> None:
    p = project(tmp_path)
    (p / "env.yml").write_text("dependencies:\n  - python=3.8\n  - pip:\n    - requests\n")
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--conda-file", str(p / "env.yml"),
                   "--base", f"rootfs:{fake_base(tmp_path / 'b')}", "-o", f"oci-archive:{p / 'image.tar'}",
                   "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"pins python=3\.8 but the base has Python 3\.11", p)


@pytest.mark.parametrize("spec,pattern", [
    ("image.tar", r"--output 'image.tar': say which format, e\.g\. oci-archive:image\.tar \(or docker-archive:image\.tar"),
    ("out", r"--output 'out': say which format, e\.g\. oci:out; one of oci:DIR"),
    ("zip:image.zip", r"say which format: zip: is none; one of oci:DIR"),
    ("docker://localhost:5000/x", r"push to a registry with 'ociassemble push"),
    ("oci-archive:", r"needs a path"),
])
def test_bad_output_spec(tmp_path: Path, spec: str, pattern: str) -> None:
    p = project(tmp_path)
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "-o", spec, "--cache-dir", str(tmp_path / "c"), cwd=p)
    assert_one_line_error(proc, pattern, p)


def test_corrupt_base_archive(tmp_path: Path) -> None:
    p = project(tmp_path)
    bad = tmp_path / "base.tar"
    bad.write_bytes(b"this is not a tar file at all" * 100)
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--base", f"rootfs:{bad}",
                   "-o", f"oci-archive:{p / 'image.tar'}", "--cache-dir", str(tmp_path / "c"), cwd=p)
    assert_one_line_error(proc, r"base\.tar is not a readable tar archive", p)
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--base", f"oci-archive:{bad}",
                   "-o", f"oci-archive:{p / 'image.tar'}", "--cache-dir", str(tmp_path / "c"), cwd=p)
    assert_one_line_error(proc, r"is not a readable oci-archive", p)


def test_a_rootfs_labelled_for_another_platform_than_its_packages_is_refused(tmp_path: Path) -> None:
    """An amd64 rootfs built as linux/arm64 would get aarch64 wheels that cannot run on it."""
    p = project(tmp_path)
    base = fake_base(tmp_path / "b")
    status = base / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Package: libc6\n", "Package: libc6\nArchitecture: amd64\n"))
    proc = run_cli("build", str(p), "--model", str(p / "model.pkl"), "--base", f"rootfs:{base}",
                   "--platform", "linux/arm64", "-o", f"oci-archive:{p / 'image.tar'}",
                   "--cache-dir", str(tmp_path / "cache"), cwd=p)
    assert_one_line_error(proc, r"labelled linux/arm64/v8 but its packages are for amd64: give --platform "
                                r"linux/amd64 with this base", p)
