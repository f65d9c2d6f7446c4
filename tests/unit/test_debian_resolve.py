"""dpkg's version order (checked against dpkg itself) and the resolver's choices."""

from __future__ import annotations

import subprocess

import pytest

from ociassemble.debian.packages import PackageIndex
from ociassemble.debian.resolve import Installed, parse_request, resolve
from ociassemble.debian.version import compare_versions
from ociassemble.errors import PackageError

PAIRS = [("1.0~rc1", "1.0"), ("1:1.0", "2.0"), ("2.36-9+deb12u4", "2.36-9"), ("1.0a", "1.0+"), ("1.0", "1.0-0"),
         ("3.11.2-6+deb12u5", "3.11.2-6"), ("1.0.0", "1.0"), ("10", "9"), ("1.0~", "1.0~~"), ("0:1.2", "1.2"),
         ("1.2-1~bpo12+1", "1.2-1"), ("2.0-1", "2.0-1")]


@pytest.mark.parametrize("a,b", PAIRS)
def test_version_order_is_dpkgs(a: str, b: str) -> None:
    ours = compare_versions(a, b)
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
    assert (ours < 0, ours == 0) == (lt, eq)


def _stanza(name: str, version: str, depends: str = "", provides: str = "", priority: str = "optional") -> str:
    return (f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nPriority: {priority}\n"
            + (f"Depends: {depends}\n" if depends else "") + (f"Provides: {provides}\n" if provides else "")
            + f"Filename: pool/{name}.deb\nSize: 1\nSHA256: {'0' * 64}\n")


def _index(*stanzas: str) -> PackageIndex:
    index = PackageIndex("amd64")
    index.add(("\n\n".join(stanzas) + "\n").encode(), "http://127.0.0.1/")
    return index


def test_alternatives_versions_provides_and_the_base() -> None:
    index = _index(_stanza("app", "1", "libc6 (>= 2.30), awk, liba (>= 2) | libb"),
                   _stanza("libc6", "2.36"), _stanza("liba", "1"), _stanza("libb", "3"),
                   _stanza("gawk", "5", provides="awk"), _stanza("mawk", "1.3", provides="awk", priority="required"))
    chosen = resolve(index, [parse_request("app")], Installed({"libc6": "2.36"}), where="test")
    # libc6 from the base; awk by its required provider; liba too old, so libb
    assert [p.name for p in chosen] == ["app", "libb", "mawk"]


def test_a_base_package_too_old_is_replaced() -> None:
    index = _index(_stanza("app", "1", "libc6 (>= 2.36)"), _stanza("libc6", "2.36"))
    chosen = resolve(index, [parse_request("app")], Installed({"libc6": "2.31"}), where="test")
    assert [p.key for p in chosen] == ["app=1", "libc6=2.36"]


def test_unsatisfiable_and_unknown() -> None:
    index = _index(_stanza("app", "1", "libz (>= 9)"), _stanza("libz", "1"))
    with pytest.raises(PackageError, match=r"app 1 depends on libz \(>= 9\).*versions there: 1"):
        resolve(index, [parse_request("app")], Installed(), where="test")
    with pytest.raises(PackageError, match="no package 'nope' in test"):
        resolve(index, [parse_request("nope")], Installed(), where="test")
    with pytest.raises(PackageError, match="no version of app"):
        resolve(index, [parse_request("app=2")], Installed(), where="test")
