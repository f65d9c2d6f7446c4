"""What maintainer scripts would do, done by name on a layer's tree; and the tar stream of a tree."""

from __future__ import annotations

import io
import tarfile

from ociassemble.debian.scripts import apply_actions, apply_alternatives, uncovered
from ociassemble.debian.tree import Tree

MAWK_POSTINST = """#!/bin/sh
set -e
update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
  --slave /usr/bin/nawk nawk /usr/bin/mawk
"""
GAWK_POSTINST = "update-alternatives --install /usr/bin/awk awk /usr/bin/gawk 10\n"


def test_alternatives_highest_priority_wins_and_slaves_need_their_target() -> None:
    tree = Tree(merged_usr=True)
    tree.add_file("usr/bin/mawk", b"mawk", 0o755)
    assert apply_alternatives(tree, {"mawk": MAWK_POSTINST, "gawk": GAWK_POSTINST}) == ["/usr/bin/awk -> /usr/bin/mawk"]
    assert tree.entries["usr/bin/awk"].linkname == "/etc/alternatives/awk"
    assert tree.entries["etc/alternatives/awk"].linkname == "/usr/bin/mawk"
    assert tree.entries["usr/bin/nawk"].linkname == "/etc/alternatives/nawk"
    assert "etc/alternatives/awk.1.gz" not in tree.entries  # its man page is not in the layer
    tree.add_file("usr/bin/gawk", b"gawk", 0o755)
    apply_alternatives(tree, {"mawk": MAWK_POSTINST, "gawk": GAWK_POSTINST})
    assert tree.entries["etc/alternatives/awk"].linkname == "/usr/bin/gawk"


def test_passwd_certificates_and_nginx_folders() -> None:
    tree = Tree(merged_usr=True)
    tree.add_file("usr/share/base-passwd/passwd.master", b"root:*:0:0:root:/root:/bin/sh\nwww-data:*:33:33::/var/www:/usr/sbin/nologin\n")
    tree.add_file("usr/share/base-passwd/group.master", b"root:*:0:\nadm:*:4:\n")
    tree.add_file("usr/share/ca-certificates/mozilla/B.crt", b"-----B-----")
    tree.add_file("usr/share/ca-certificates/mozilla/A.crt", b"-----A-----\n")
    done = apply_actions(tree, ["base-passwd", "ca-certificates", "nginx-common"])
    assert [d.split(":")[0] for d in done] == ["base-passwd", "ca-certificates", "nginx-common"]
    assert b"www-data:*:33:33" in (tree.read("etc/passwd") or b"")
    assert tree.read("etc/ssl/certs/ca-certificates.crt") == b"-----A-----\n-----B-----\n"
    assert tree.entries["etc/ssl/certs/A.pem"].linkname == "/usr/share/ca-certificates/mozilla/A.crt"
    assert tree.read("etc/ca-certificates.conf").endswith(b"mozilla/A.crt\nmozilla/B.crt\n")  # type: ignore[union-attr]
    log = tree.entries["var/log/nginx"]
    assert (log.kind, log.gid) == ("dir", 4)  # root:adm, adm from the group file


def test_pythons_local_site_folder() -> None:
    """python3.X-minimal's postinst makes /usr/local/lib/python3.X/dist-packages (scripts/cross-arch and
    pip put packages there): each release's Python gets its own, root-owned, 0755."""
    for version in ("3.9", "3.11", "3.13"):
        tree = Tree(merged_usr=True)
        assert apply_actions(tree, [f"python{version}-minimal"]) == [
            f"python{version}-minimal: /usr/local/lib/python{version}/dist-packages"]
        site = tree.entries[f"usr/local/lib/python{version}/dist-packages"]
        assert (site.kind, site.mode, site.uid, site.gid) == ("dir", 0o755, 0, 0)
        assert uncovered(f"python{version}-minimal", {"postinst": "mkdir -p /usr/local/lib/x\n"}) is None


def test_a_postinst_that_does_more_is_named_in_one_line() -> None:
    assert uncovered("somepkg", {"postinst": "#!/bin/sh\nset -e\nmkdir -p /srv/thing\nchown www-data /srv/thing\n"}) \
        == ("somepkg: its postinst was not run (it does e.g. 'mkdir -p /srv/thing'); the layer holds its files only "
            "(see docs/debian-packages.md)")
    assert uncovered("quiet", {"postinst": "#!/bin/sh\nset -e\n# Automatically added by dh_makeshlibs/13\n"
                                           "ldconfig\n# End automatically added section\n"}) is None


def test_a_package_shipping_the_merged_usr_links_keeps_them_at_the_top() -> None:
    """trixie's base-files holds ``bin -> usr/bin`` (and sbin, lib, lib64) in its data.tar: on a
    merged-/usr root these stay top-level links (not ``usr/bin -> usr/bin``, a loop over the folder)."""
    from ociassemble.debian.install import _Member, _unpack

    tree = Tree(merged_usr=True)
    members = [_Member("bin", "symlink", 0o777, 0, 0, "usr/bin"), _Member("usr/bin", "dir", 0o755, 0, 0),
               _Member("usr/bin/[", "file", 0o755, 0, 0, data=b"\x7fELF"), _Member("bin/sh", "file", 0o755, 0, 0, data=b"#!")]
    listed = _unpack(tree, None, members)  # type: ignore[arg-type]
    assert listed == ["/.", "/bin", "/usr/bin", "/usr/bin/[", "/bin/sh"]
    assert tree.entries["bin"].kind == "symlink" and tree.entries["bin"].linkname == "usr/bin"
    assert tree.entries["usr/bin"].kind == "dir"
    assert tree.read(tree.canonical("bin/sh")) == b"#!" and "bin/sh" not in tree.entries


def test_tree_tar_stream_is_sorted_merged_usr_and_readable() -> None:
    tree = Tree(merged_usr=True)
    tree.add_file(tree.canonical("./bin/sh"), b"#!", 0o755)
    tree.add_symlink(tree.canonical("./lib64/ld.so"), "/usr/lib/ld.so")
    data = b"".join(tree.tar_chunks(epoch=0))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = [(m.name.rstrip("/"), m.mtime, m.uname) for m in tf]
    assert [n for n, _, _ in members] == ["usr", "usr/bin", "usr/bin/sh", "usr/lib64", "usr/lib64/ld.so"]
    assert {(t, u) for _, t, u in members} == {(0, "")}
