"""`verify --json` has the shape docs/json.md documents, and `verify`'s text and exit codes (in-process, no registry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociassemble import cli
from tests.unit.test_cli import _doc_examples, _same_shape, _shape


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "score.py").write_text("def init():\n    pass\n")
    (root / "notes.txt").write_text("notes\n")
    return root


def test_verify_json_matches_docs_json_md(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "src")
    flags = ["--plain", "--layer", f"{src}:/var/azureml-app/src", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["build", *flags, "-o", f"oci:{tmp_path / 'image'}", "-q"]) == 0
    digest = capsys.readouterr().out.strip()

    assert cli.main(["verify", *flags, "--against", f"oci:{tmp_path / 'image'}"]) == 0
    assert capsys.readouterr().out.strip() == digest

    (src / "score.py").write_text("def init():\n    return 1\n")
    assert cli.main(["verify", *flags, "--against", f"oci:{tmp_path / 'image'}", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    _same_shape(_shape(_doc_examples()["verify"]), _shape(doc))
    assert doc["difference"] == doc["differences"][0] and doc["against"]["digest"] == digest
    assert doc["difference"]["entry"]["path"] == "var/azureml-app/src/score.py"

    assert cli.main(["verify", *flags, "--against", f"oci:{tmp_path / 'image'}"]) == 1
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"oci:{tmp_path / 'image'} differs from the rebuilt image: layer 0 ")
    assert "first differing file /var/azureml-app/src/score.py: size" in text[0]
    assert text[-1] == f"  image:   {digest}"


def test_verify_refuses_what_it_cannot_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "src")
    flags = ["--plain", "--layer", f"{src}:/app", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(["verify", *flags, "--against", f"rootfs:{src}"]) == 1
    assert "a rootfs is not an image" in capsys.readouterr().err
    assert cli.main(["verify", *flags, "--against", f"oci:{tmp_path / 'image'}", "--sbom"]) == 1
    assert "drop --sbom" in capsys.readouterr().err
    assert cli.main(["verify", *flags, "--against", f"oci:{tmp_path / 'missing'}"]) == 1
    assert "is not an OCI layout" in capsys.readouterr().err
