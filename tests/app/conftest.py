"""Fixtures for the scoring app's tests: import it from the layer tree, build apps in temp app roots.

Loading a score.py touches process-wide state (sys.path, sys.modules, and
inference_schema's registry of decorated functions, keyed "entry_module.run");
``isolated_imports`` restores all three after each test so scripts never leak
into one another.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest
from app_layer_paths import APP_ROOT_IN_LAYER, SCRIPTS_DIR

# The layer tree is packed into the image as it is: no __pycache__ may appear in it.
sys.dont_write_bytecode = True

if str(APP_ROOT_IN_LAYER) not in sys.path:
    # The image has the app root on sys.path (gunicorn runs there); so do the tests.
    sys.path.insert(0, str(APP_ROOT_IN_LAYER))


@pytest.fixture
def isolated_imports(tmp_path: Path) -> Iterator[None]:
    """Undo what loading user scripts did to sys.path, sys.modules and inference_schema's registry."""
    from inference_schema import schema_util

    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    saved_schemas = dict(schema_util.__functions_schema__)
    saved_versions = dict(schema_util.__versions__)
    saved_environ = dict(os.environ)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if name == "entry_module" or module_file.startswith(str(tmp_path)):
            del sys.modules[name]
    sys.modules.pop("entry_module", None)
    schema_util.__functions_schema__.clear()
    schema_util.__functions_schema__.update(saved_schemas)
    schema_util.__versions__.clear()
    schema_util.__versions__.update(saved_versions)
    os.environ.clear()
    os.environ.update(saved_environ)


@pytest.fixture
def make_app(tmp_path: Path, isolated_imports: None) -> Callable[..., "flask.Flask"]:  # noqa: F821
    """Write ``source`` as the entry script in a fresh app root and build the app for it.

    Example::

        app = make_app("def init(): pass\\ndef run(data): return data")
    """
    from aml_server.config import ServerConfig
    from create_app import create_app

    def build(source: str, entry_script: str = "src/score.py", **config: object):
        script = tmp_path / entry_script
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        return create_app(ServerConfig(app_root=str(tmp_path), entry_script=entry_script, **config))

    return build


@pytest.fixture
def make_script_app(make_app: Callable[..., object], tmp_path: Path) -> Callable[..., object]:
    """Build the app for one of tests/app/scripts/*.py (its siblings copied along)."""

    def build(name: str, **config: object):
        source_dir = tmp_path / "src"
        source_dir.mkdir(exist_ok=True)
        for helper in SCRIPTS_DIR.glob("_*.py"):
            (source_dir / helper.name).write_text(helper.read_text(encoding="utf-8"), encoding="utf-8")
        return make_app((SCRIPTS_DIR / f"{name}.py").read_text(encoding="utf-8"), **config)

    return build
