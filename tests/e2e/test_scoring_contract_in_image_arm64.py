"""The in-image differential suite again, on the other CPU's build of the same scoring image, under qemu.

Opt-in (``OCIASSEMBLE_TEST_ARM64_CONTRACT=1``): every test of
``test_scoring_contract_in_image`` (imported below, so pytest collects them here as well) runs
against the image built for the architecture this machine emulates (``tests.hostarch.FOREIGN``:
``--platform linux/arm64`` on an amd64 host, hence the name; linux/amd64 on an arm64 host, whose
native run covers arm64) on ``make-base``'s default base for it (from .debs), each run served by
``RunningImage`` through qemu user emulation (binfmt_misc),
the answers compared with the same native oracle. About three minutes on a 2-core machine
(15 emulated servers importing numpy and pandas at once), so the default suite skips it;
asked for on a machine that cannot emulate it, it fails with ``run``'s one line naming
the fix (qemu-user-static, binfmt_misc)::

    OCIASSEMBLE_TEST_ARM64_CONTRACT=1 python -m pytest -q tests/e2e/test_scoring_contract_in_image_arm64.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociassemble.image.assemble import Image
from ociassemble.image.cache import BlobCache
from tests.e2e import test_scoring_contract_in_image as contract
from tests.e2e.test_scoring_contract_in_image import *  # noqa: F401,F403  (the same tests, collected here too)
from tests.hostarch import FOREIGN, FOREIGN_MACHINE, FOREIGN_NAME

OPT_IN = "OCIASSEMBLE_TEST_ARM64_CONTRACT"

pytestmark = [
    *contract.pytestmark,
    pytest.mark.skipif(os.environ.get(OPT_IN) != "1", reason=f"{FOREIGN_NAME} under qemu takes minutes: set {OPT_IN}=1"),
]


@pytest.fixture(scope="module")
def scoring_image(foreign_base: str, shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The contract image for the other CPU (``served`` runs it through qemu: its boot wait allows for that)."""
    return contract.build_scoring_image(foreign_base, FOREIGN_NAME, shared_cache,
                                        tmp_path_factory.mktemp("contract-foreign"))


def test_the_runs_are_the_foreign_image_under_qemu(scoring_image: Image, served: contract.Served) -> None:
    """What the other tests here talked to: the other CPU's image, every program of it (runit, nginx,
    gunicorn's python3) executed by qemu (qemu-aarch64 on an amd64 host: the kernel's binfmt_misc
    handler), only bwrap native."""
    assert scoring_image.platform.architecture == FOREIGN.architecture
    run = served.image["undecorated_echo"]
    assert run.running.emulated
    exes: dict[str, set[str]] = {}
    for pid in run.running.pids():
        try:
            exes.setdefault(Path(f"/proc/{pid}/comm").read_text().strip(), set()).add(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
    assert {"runsvdir", "nginx", "python3"} <= set(exes), exes
    for name, paths in exes.items():
        if name != "bwrap":
            assert all(Path(p).name.startswith(f"qemu-{FOREIGN_MACHINE}") for p in paths), exes
