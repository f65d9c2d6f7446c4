"""extraDockerfileSteps: apt-get install lines become the apt list; anything else is one line naming it."""

from __future__ import annotations

import pytest

from ociassemble.azureml.dockersteps import apt_from_dockerfile_steps
from ociassemble.errors import UsageError


def test_apt_get_install_lines_become_packages() -> None:
    steps = ("RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
             "libgomp1 \\\n    libxml2=2.9.14+dfsg-1.3~deb12u1 && rm -rf /var/lib/apt/lists/*\n"
             "# a comment\nRUN apt-get install -y libgomp1 curl")
    assert apt_from_dockerfile_steps(steps) == ["libgomp1", "libxml2=2.9.14+dfsg-1.3~deb12u1", "curl"]


@pytest.mark.parametrize("steps,named", [
    ("COPY ./x /opt/x", "COPY"),
    ("ENV A=1", "ENV"),
    ("RUN pip install lightgbm", "pip install lightgbm"),
    ("RUN apt-get update && curl -o /x https://example.invalid/x", "curl -o"),
    ("RUN apt-get install -y --reinstall-weird x", "--reinstall-weird"),
])
def test_anything_else_is_one_line(steps: str, named: str) -> None:
    with pytest.raises(UsageError, match="extraDockerfileSteps") as err:
        apt_from_dockerfile_steps(steps)
    assert named in str(err.value) and "\n" not in str(err.value)
