"""This machine's architecture, and the other one the cross-architecture tests emulate.

The suite runs on amd64 and on arm64 hosts alike. A test whose image must run natively builds
for ``HOST``; one about emulation builds for ``FOREIGN`` (arm64 on an amd64 host, amd64 on an
arm64 one), so neither kind passes only because the machine happens to be x86.
"""

from __future__ import annotations

import platform

from ociassemble.debian.repository import debian_arch
from ociassemble.emulation import qemu_name
from ociassemble.image.platform import host_platform, parse_platform, short_name

#: this machine's platform, normalized (``linux/amd64``, ``linux/arm64/v8``)
HOST = host_platform()
#: how people and ``--platform`` write it (``linux/amd64``, ``linux/arm64``)
HOST_NAME = short_name(HOST)
#: Debian's name for it (``amd64``, ``arm64``): .deb names, ``binary-*`` indexes, dpkg's status
HOST_DEB = debian_arch(HOST.architecture, HOST.variant)
#: ``uname -m`` here (``x86_64``, ``aarch64``)
HOST_MACHINE = platform.machine()

#: the other of amd64 and arm64: what the emulation tests run through qemu
FOREIGN_ARCH = "amd64" if HOST.architecture == "arm64" else "arm64"
FOREIGN = parse_platform(f"linux/{FOREIGN_ARCH}")
FOREIGN_NAME = short_name(FOREIGN)
FOREIGN_DEB = debian_arch(FOREIGN.architecture, FOREIGN.variant)
#: ``uname -m`` of a program run for it (``aarch64``, ``x86_64``): also qemu's name for it
FOREIGN_MACHINE = qemu_name(FOREIGN_ARCH)
#: pip's ``--platform`` names of its wheels (``pip download --platform …``)
FOREIGN_WHEELS = (f"manylinux2014_{FOREIGN_MACHINE}", f"manylinux_2_28_{FOREIGN_MACHINE}")
