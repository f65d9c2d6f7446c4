"""What maintainer scripts would do that an image needs, done explicitly, by name; and which
packages' scripts were not run although they do something.

No maintainer script runs (no shell, no dpkg, no emulation of another architecture):
each action here is what a package's ``postinst`` does that a container image needs,
written as files of the layer:

- ``base-passwd``: ``/etc/passwd`` and ``/etc/group`` from its masters (root, ``www-data``, …);
- ``base-files``: ``/etc/profile``, root's dot files, ``/var/run -> /run``, the FHS folders;
- ``libc-bin``: ``/etc/nsswitch.conf`` from its default;
- ``ca-certificates``: ``/etc/ca-certificates.conf``, the bundle
  ``/etc/ssl/certs/ca-certificates.crt`` and a ``.pem`` link per certificate
  (``update-ca-certificates``; the OpenSSL hash links are not made);
- ``nginx-common``: ``/var/log/nginx`` owned by ``root:adm``;
- any package: ``update-alternatives --install`` lines (``awk -> mawk``), as
  ``/etc/alternatives`` symlinks, the highest priority winning.

Not done: ``ldconfig`` (the loader finds Debian's libraries in its default multiarch
folders), byte-compiling Python (``py3compile``), services (``systemd``, ``update-rc.d``),
``debconf`` questions. A package whose ``postinst`` does more than that and is not
listed here is named by ``uncovered``, one line each.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .tree import Tree

__all__ = ["ACTIONS", "NOT_NEEDED", "apply_actions", "apply_alternatives", "nginx_modules", "uncovered"]


def _gid(tree: Tree, group: str) -> int:
    text = (tree.read("etc/group") or b"").decode(errors="replace")
    m = re.search(rf"^{re.escape(group)}:[^:]*:(\d+):", text, re.M)
    return int(m.group(1)) if m else 0


def _base_passwd(tree: Tree) -> None:
    for name in ("passwd", "group"):
        master = tree.read(f"usr/share/base-passwd/{name}.master")
        if master is not None and not tree.has(f"etc/{name}"):
            tree.add_file(f"etc/{name}", master)


def _base_files(tree: Tree) -> None:
    for src, dest in (("dot.profile", "root/.profile"), ("dot.bashrc", "root/.bashrc"),
                      ("profile", "etc/profile"), ("motd", "etc/motd")):
        data = tree.read(f"usr/share/base-files/{src}")
        if data is not None and not tree.has(dest):
            tree.add_file(dest, data)
    for folder in ("mnt", "srv", "opt", "etc/opt", "var/opt", "media"):
        if not tree.has(folder):
            tree.add_dir(folder)
    if not tree.has("var/mail"):
        tree.add_dir("var/mail", 0o2775, gid=_gid(tree, "mail"))
    if not tree.has("var/spool/mail"):
        tree.add_symlink("var/spool/mail", "../mail")
    tree.add_dir("run/lock", 0o1777)
    for link, target in (("var/run", "/run"), ("var/lock", "/run/lock")):
        e = tree.entries.get(link)
        if e is None or e.kind == "dir":
            tree.entries.pop(link, None)
            tree.add_symlink(link, target)
    for folder in ("usr/local", "usr/local/share", "usr/local/share/man", "usr/local/bin", "usr/local/games",
                   "usr/local/lib", "usr/local/include", "usr/local/sbin", "usr/local/src", "usr/local/etc"):
        if not tree.has(folder):
            tree.add_dir(folder)
    if not tree.has("usr/local/man"):
        tree.add_symlink("usr/local/man", "share/man")


def _libc_bin(tree: Tree) -> None:
    data = tree.read("usr/share/libc-bin/nsswitch.conf")
    if data is not None and not tree.has("etc/nsswitch.conf"):
        tree.add_file("etc/nsswitch.conf", data)


def _ca_certificates(tree: Tree) -> None:
    prefix = "usr/share/ca-certificates/"
    certs = sorted(n[len(prefix):] for n, e in tree.entries.items()
                   if n.startswith(prefix) and n.endswith(".crt") and e.kind == "file")
    if not certs:
        return
    tree.add_file("etc/ca-certificates.conf", ("# Written by ociassemble as ca-certificates' postinst would: "
                                               "every certificate trusted.\n" + "".join(c + "\n" for c in certs)).encode())
    bundle = bytearray()
    for cert in certs:
        data = tree.read(prefix + cert) or b""
        bundle += data if data.endswith(b"\n") else data + b"\n"
        tree.add_symlink("etc/ssl/certs/" + cert.rsplit("/", 1)[-1][:-4] + ".pem", "/" + prefix + cert)
    tree.add_file("etc/ssl/certs/ca-certificates.crt", bytes(bundle))


def nginx_modules(tree: Tree, scripts: dict[str, str]) -> list[str]:
    """The ``/etc/nginx/modules-enabled`` links a ``libnginx-mod-*`` postinst makes (``confpair in a.conf:50-a.conf``)."""
    made = []
    for pkg in sorted(scripts):
        if not pkg.startswith("libnginx-mod-"):
            continue
        m = re.search(r"for confpair in ([^;]*);", scripts[pkg])
        for pair in (m.group(1).split() if m else []):
            conf, _, link = pair.partition(":")
            if tree.has(f"usr/share/nginx/modules-available/{conf}") and link:
                tree.add_symlink(f"etc/nginx/modules-enabled/{link}", f"/usr/share/nginx/modules-available/{conf}")
                made.append(link)
    return made


def _tzdata(tree: Tree) -> None:
    if tree.has("usr/share/zoneinfo/Etc/UTC") and not tree.has("etc/localtime"):
        tree.add_symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
        tree.add_file("etc/timezone", b"Etc/UTC\n")


def _nginx_common(tree: Tree) -> None:
    tree.add_dir("var/log/nginx", 0o755, gid=_gid(tree, "adm"))
    if not tree.has("var/lib/nginx"):
        tree.add_dir("var/lib/nginx")


def _python_local_site(version: str) -> Callable[[Tree], None]:
    """python3.X-minimal's postinst: the empty /usr/local/lib/python3.X/dist-packages (0755 root:root,
    as without /etc/staff-group-for-usr-local), where pip installs and .pth files are read from."""

    def action(tree: Tree) -> None:
        for folder in (f"usr/local/lib/python{version}", f"usr/local/lib/python{version}/dist-packages"):
            if not tree.has(folder):
                tree.add_dir(folder)

    return action


#: package → what of its postinst is done here (in this order: passwd first, others read /etc/group)
ACTIONS: dict[str, tuple[str, Callable[[Tree], None]]] = {
    "base-passwd": ("/etc/passwd and /etc/group from the masters", _base_passwd),
    "base-files": ("/etc/profile, root's dot files, /var/run -> /run, FHS folders", _base_files),
    "libc-bin": ("/etc/nsswitch.conf", _libc_bin),
    "ca-certificates": ("/etc/ssl/certs/ca-certificates.crt and .pem links", _ca_certificates),
    "nginx-common": ("/var/log/nginx owned by root:adm, /var/lib/nginx", _nginx_common),
    "tzdata": ("/etc/localtime -> Etc/UTC (debconf's default answer)", _tzdata),
    **{f"python{v}-minimal": (f"/usr/local/lib/python{v}/dist-packages", _python_local_site(v))
       for v in ("3.9", "3.11", "3.13")},
}


def apply_actions(tree: Tree, packages: list[str]) -> list[str]:
    """Do the actions of the packages added; returns ``package: what`` for each one done."""
    done = []
    for name, (what, action) in ACTIONS.items():
        if name in packages:
            action(tree)
            done.append(f"{name}: {what}")
    return done


_ALT = re.compile(r"update-alternatives\s+(?:--quiet\s+)?--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)((?:\s+--slave\s+\S+\s+\S+\s+\S+)*)")


def apply_alternatives(tree: Tree, scripts: dict[str, str]) -> list[str]:
    """``/etc/alternatives`` links from the ``update-alternatives --install`` lines of the
    postinsts given (package → script), the highest priority of each name whose program is in
    the layer winning (ties: the package sorted first); a slave only where its target is too."""
    best: dict[str, tuple[int, str, str, list[tuple[str, str, str]]]] = {}
    for pkg in sorted(scripts):
        text = re.sub(r"\\\n\s*", " ", scripts[pkg])
        for m in _ALT.finditer(text):
            link, name, path, prio = m.group(1), m.group(2), m.group(3), int(m.group(4))
            if "$" in link + name + path:
                continue
            slaves = re.findall(r"--slave\s+(\S+)\s+(\S+)\s+(\S+)", m.group(5) or "")
            if not tree.has(tree.canonical(path)):
                continue  # an alternative whose program is not in the layer (a postinst of another release)
            if name not in best or prio > best[name][0]:
                best[name] = (prio, link, path, slaves)
    made = []
    for name in sorted(best):
        prio, link, path, slaves = best[name]
        if not tree.has(tree.canonical(path)):
            continue
        for slink, sname, spath in [(link, name, path), *slaves]:
            if "$" in slink + sname + spath or not tree.has(tree.canonical(spath)):
                continue
            tree.add_symlink(f"etc/alternatives/{sname}", spath)
            if not tree.has(tree.canonical(slink)):
                tree.add_symlink(tree.canonical(slink), f"/etc/alternatives/{sname}")
        made.append(f"{link} -> {path}")
    return made


#: debhelper's generated blocks that do nothing an image needs (services, ldconfig,
#: bytecode, debconf, dpkg's own bookkeeping of conffiles and folders)
_HARMLESS_DH = ("dh_installsystemd", "dh_installinit", "dh_installdeb", "dh_makeshlibs", "dh_python3",
                "dh_systemd_enable", "dh_systemd_start", "dh_installsystemduser", "dh_installdebconf",
                "dh_installmenu", "dh_installmime", "dh_icons", "dh_installcatalogs", "dh_apparmor",
                "dh_usrlocal", "dh_installxfonts", "dh_installemacsen", "dh_installtmpfiles", "dh_runit",
                "dh_installlogcheck", "dh_installudev", "dh_ucf", "dh_installinfo", "dh-python", "dh_pypy",
                "dh_lintian")
_BLOCK = re.compile(r"# Automatically added by (\S+?)(?:/\S*)?\n.*?# End automatically added section\n?", re.S)
_TRIVIAL = re.compile(
    r"""^\s*(?:\#.*|set\s+-e|exit\s+0|esac|;;|fi|else|then|done|\}|\{|case\s+"?\$1"?\s+in|[a-z|*-]+\)\s*(?:;;)?|"""
    r"""if\s+\[\s+"?\$1"?\s+=\s+"?[a-z-]+"?\s+\].*|.*\)\s*$|echo\s.*|\.\s+/usr/share/debconf/confmodule|db_\w+.*|"""
    r"""ldconfig.*|update-alternatives\s.*|:|true|.*\|\|\s*true|py3compile.*|pycompile.*|#DEBHELPER#|"""
    r"""[A-Za-z_]+=.*|\s*)$""")


#: packages whose postinst does only what an image does not need, and what that is
NOT_NEEDED = {
    "bash": "/bin/sh when dash is absent (dash ships /bin/sh)", "dash": "its diversion bookkeeping",
    "coreutils": "a compatibility link of old releases", "debianutils": "/etc/shells entries (no logins)",
    "dpkg": "its own database upgrades", "init-system-helpers": "diversion clean-up", "iproute2": "file capabilities",
    "libc6": "restarting services on upgrade", "libgcrypt20": "clean-up on upgrade", "libgssapi-krb5-2": "upgrade clean-up",
    "libpam-modules": "upgrade clean-up", "libpam-runtime": "pam-auth-update (no logins)", "libpam0g": "restarting services",
    "login": "faillog (no logins)", "passwd": "shadow files (no logins)", "nginx": "starting the service",
    "openssl": "an old /usr/lib/ssl link", "python3": "/etc/python3/debian_config and byte-compiling",
    "python3-minimal": "byte-compiling", "libpython3.11-minimal": "sitecustomize link", "python3.11": "byte-compiling",
    "libpython3.9-minimal": "sitecustomize link", "python3.9": "byte-compiling",
    "libpython3.13-minimal": "sitecustomize link", "python3.13": "byte-compiling",
    "readline-common": "/etc/inputrc default", "runit": "runit's own service folders",
    "usr-is-merged": "checks of the /usr merge", "util-linux": "/etc/adjtime and service setup", "tar": "the rmt alternative",
    "gawk": "the awk alternative", "mawk": "the awk alternative", "sysvinit-utils": "service setup",
    "libgomp1": "ldconfig", "perl-base": "nothing", "ncurses-base": "nothing", "sed": "nothing",
    "netbase": "/etc/hosts (the runtime provides it)", "gzip": "moving old /bin links", "libselinux1": "clean-up",
    "login.defs": "conffile adoption", "perl": "dpkg triggers", "debconf": "its own frontend setup",
    "libssl1.1": "restarting services", "libssl3": "restarting services", "libssl3t64": "restarting services",
    "nginx-light": "starting the service",
}


def uncovered(package: str, scripts: dict[str, str]) -> str | None:
    """One line naming ``package``'s postinst when it does more than this module covers, else None."""
    if package in ACTIONS or package in NOT_NEEDED or package.startswith("libnginx-mod-"):
        return None
    script = scripts.get("postinst")
    if not script:
        return None
    script = re.sub(r"\\\n\s*", " ", script)
    body = _BLOCK.sub(lambda m: "" if m.group(1) in _HARMLESS_DH else m.group(0), script)
    rest = [l.strip() for l in body.splitlines() if not _TRIVIAL.match(l)]
    if not rest:
        return None
    return (f"{package}: its postinst was not run (it does e.g. '{rest[0][:60]}'); the layer holds its files only "
            "(see docs/debian-packages.md)")
