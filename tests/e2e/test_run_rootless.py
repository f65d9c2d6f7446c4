"""End to end as a real user other than root: ``ociassemble run`` serves and scores the example image.

A user made with ``useradd`` (its /etc/subuid and /etc/subgid ranges come with it) runs
the CLI (through ``setpriv``), with its own HOME and cache: the image's root is that user,
www-data is one of its subordinate ids, the port forwarder works without any privilege.
The user runs ociassemble from a venv of the system's Python (the test venv's Python may
live under /root, which the user cannot read, and so may the checkout), with this
checkout installed into it: made once per version of the sources under /var/tmp.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port, http, wait_healthy
from tests.e2e.test_azureml_image import _expected_prediction

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes a user with useradd: needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("useradd", "setpriv", "newuidmap", "bwrap")),
                       reason="needs useradd, setpriv, newuidmap (uidmap) and bwrap"),
]

USER = "oa-rootless"
CHECKOUT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _subordinate(path: str, name: str) -> tuple[int, int]:
    for line in Path(path).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"{name} has no line in {path}")


def _descendants(pid: int) -> list[int]:
    """Every process started, directly or not, by ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def rootless_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True, capture_output=True)
    entry = pwd.getpwnam(USER)
    for path, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        if f"{USER}:" not in Path(path).read_text():  # useradd adds them where login.defs says so
            subprocess.run(["usermod", flag, "300000-365535", USER], check=True, capture_output=True)
    return entry


@pytest.fixture(scope="module")
def rootless_venv() -> Iterator[Path]:
    """A venv of the system Python with this checkout installed (a copy), readable by every user.

    Its lock file is held shared while the module's tests use it, so another checkout's run,
    which removes the venvs of older checkouts it can lock, never removes one in use."""
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("no /usr/bin/python3 for the unprivileged user")
    sources = hashlib.sha256((CHECKOUT / "pyproject.toml").read_bytes())
    for path in sorted((CHECKOUT / "ociassemble").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            sources.update(str(path.relative_to(CHECKOUT)).encode() + b"\0" + path.read_bytes())
    key = sources.hexdigest()[:16]
    venv = Path("/var/tmp") / f"ociassemble-rootless-venv-{key}"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True, capture_output=True)
            r = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(CHECKOUT)],
                               capture_output=True, text=True, check=False)
            assert r.returncode == 0, r.stderr[-3000:]
            (venv / "ready").touch()
        fcntl.flock(lock, fcntl.LOCK_SH)
        os.chmod(venv, 0o755)
        for other in Path("/var/tmp").glob("ociassemble-rootless-venv-*.lock"):  # older checkouts', not in use
            if other.name != f"{venv.name}.lock":
                with open(other, "a") as other_lock:
                    try:
                        fcntl.flock(other_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    shutil.rmtree(other.with_suffix(""), ignore_errors=True)
                    other.unlink()
        yield venv


def test_a_user_other_than_root_runs_and_scores_the_example(example_build: dict, trained_example: Path,
                                                             rootless_user: pwd.struct_passwd,
                                                             rootless_venv: Path) -> None:
    home = Path(rootless_user.pw_dir)
    image = home / "example.tar"
    shutil.copy(example_build["path"], image)
    os.chown(image, rootless_user.pw_uid, rootless_user.pw_gid)
    cache = home / "cache"
    sub_uid, _ = _subordinate("/etc/subuid", USER)
    port = free_port()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    # setpriv executes the CLI as the user itself (runuser would stay as its parent, keeping Ctrl-C from it)
    proc = subprocess.Popen([str(shutil.which("setpriv")), f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
                             str(rootless_venv / "bin/ociassemble"), "run",
                             f"oci-archive:{image}:latest", "--publish", f"127.0.0.1:{port}:5001",
                             "--cache-dir", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(home))
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", proc, timeout=300)
        status, headers, body = http("POST", f"http://127.0.0.1:{port}/score",
                                     (trained_example / "sample-request.json").read_bytes(),
                                     {"Content-Type": "application/json"})
        assert status == 200, body
        assert json.loads(body) == pytest.approx(_expected_prediction(trained_example))
        assert "nginx" in headers.get("server", "")
        owners: dict[str, set[int]] = {}
        for pid in _descendants(proc.pid):  # other tests on this machine may run nginx or gunicorn too
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            for name in (b"gunicorn", b"nginx: master", b"nginx: worker", b"runsvdir /var/runit"):
                if cmdline.startswith(name) or (name == b"gunicorn" and b"-m gunicorn" in cmdline):
                    owners.setdefault(name.decode(), set()).add(uid)
        # the image's root is the user itself; www-data (33) is the user's subordinate id 32
        assert owners["runsvdir /var/runit"] == {rootless_user.pw_uid}
        assert owners["nginx: master"] == {rootless_user.pw_uid}
        assert owners["gunicorn"] == {sub_uid + 32}
        assert owners["nginx: worker"] == {sub_uid + 32}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        print(out.decode(errors="replace")[-5000:])  # shown when the test fails
    assert proc.returncode in (0, 130, 143), out.decode(errors="replace")[-3000:]
    assert not any((cache / "run").glob("[0-9]*")), "the run's folder (with www-data's files) was not removed"
    # every folder of the unpacked rootfs's way down is the user's and private
    for folder in [cache / "rootfs", *(cache / "rootfs").iterdir()]:
        st = folder.stat()
        assert st.st_uid == rootless_user.pw_uid and st.st_mode & 0o777 == 0o700, folder


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_a_user_other_than_root_builds_on_a_layout_root_owns(rootless_user: pwd.struct_passwd,
                                                              rootless_venv: Path, kind: str) -> None:
    """A base layout (or OCI archive) root owns, read by another user: its layers are held by
    reference in that user's cache (records, no copy), and where the kernel does not let the
    user hard-link root's files (``fs.protected_hardlinks``), the user's output layout gets a
    copy instead (an archive's run of bytes is always copied)."""
    from tests.integration.test_archive_by_reference import _archive
    from tests.integration.test_layout_by_reference import _layout

    base = Path("/var/tmp") / f"oa-rootless-base-{os.getpid()}"
    home = Path(rootless_user.pw_dir)
    work = home / f"layout-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    try:
        names = _layout(base, os.urandom(1 << 20) * 4)
        spec = f"oci:{base}"
        if kind == "oci-archive":
            spec = f"oci-archive:{_archive(base, Path(f'{base}.tar'))}"
        for path in [base, Path(f"{base}.tar"), *base.rglob("*")]:
            if path.exists():
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        (work / "site").mkdir(parents=True)
        (work / "site" / "index.html").write_text("hello\n")
        for path in [work, *work.rglob("*")]:
            os.chown(path, rootless_user.pw_uid, rootless_user.pw_gid)
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        r = subprocess.run([str(shutil.which("setpriv")), f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--",
                            str(rootless_venv / "bin/ociassemble"), "build", "--plain", "--base", spec,
                            "--layer", f"{work / 'site'}:/srv", "-o", f"oci:{work / 'out'}",
                            "--cache-dir", str(work / "cache"), "-q"],
                           capture_output=True, text=True, env=env, cwd=str(work), timeout=600)
        assert r.returncode == 0, r.stderr
        src = base / "blobs" / "sha256" / names["model"][7:]
        out = work / "out" / "blobs" / "sha256" / names["model"][7:]
        assert out.read_bytes() == src.read_bytes()
        may_link = Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "0"
        assert (out.stat().st_ino == src.stat().st_ino) == (may_link and kind == "oci")
        refs = sorted(p.name for p in (work / "cache" / "refs" / "sha256").iterdir())
        assert names["model"][7:] in refs and names["base"][7:] in refs
        assert not (work / "cache" / "blobs" / "sha256" / names["model"][7:]).exists()  # held, not copied
        assert src.stat().st_uid == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
        Path(f"{base}.tar").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
