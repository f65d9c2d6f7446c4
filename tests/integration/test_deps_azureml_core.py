"""A user who really lists azureml-core gets it: pex, with pip's backtracking resolver, finds
versions that go with the scoring server's pins for the image's platform (the legacy resolver
took python-dateutil 4 and then refused azureml-core's <3 pin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociassemble.azureml.baseinfo import BaseInfo
from ociassemble.azureml.deps import resolve_deps
from ociassemble.azureml.requirements import merge_requirements, read_app_pins
from ociassemble.image.cache import BlobCache
from ociassemble.resources import layers_dir
from tests.hostarch import HOST

pytestmark = pytest.mark.slow

#: this machine's architecture: the test is about the server's pins, not about another platform's wheels
BOOKWORM = BaseInfo("3.11", "3.11.2", "2.36", HOST.architecture, ("python3", "nginx", "runsvdir"))


def test_azureml_core_resolves_with_the_servers_pins(tmp_path: Path) -> None:
    merged = merge_requirements(read_app_pins(layers_dir() / "app-requirements.txt"),
                                ["azureml-defaults", "azureml-core"], source="requirements.txt")
    assert merged.lines[-1] == "azureml-core"
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(merged.text())
    site = resolve_deps(BlobCache(tmp_path / "cache"), [reqs], BOOKWORM).site
    assert (site / "azureml" / "core" / "model.py").is_file()
    assert not list(site.glob("azureml_defaults-*.dist-info"))
    [dateutil] = site.glob("python_dateutil-*.dist-info")
    assert dateutil.name.startswith("python_dateutil-2.")
    [flask] = site.glob("flask-*.dist-info")
    assert flask.name == "flask-3.1.3.dist-info"
