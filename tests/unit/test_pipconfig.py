"""pip's configuration files read as pip reads them: its file order, its sections, PIP_* above them,
requirements-file lines above all; PIP_CONFIG_FILE=/dev/null reads none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociassemble.azureml.indexes import PYPI, index_config
from ociassemble.azureml.pipconfig import config_files, for_pex, read_pip_config
from ociassemble.errors import InputError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose site-wide, user and venv folders are all under ``tmp_path``."""
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "etc-xdg"), **extra}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pips_file_order_sections_and_the_environment_over_them(tmp_path: Path) -> None:
    _write(tmp_path / "etc-xdg/pip/pip.conf", "[global]\nindex-url = https://site.example/simple\n"
                                              "trusted-host = site.example\n")
    _write(tmp_path / "home/.config/pip/pip.conf",
           "[global]\nindex_url = https://user.example/simple\n"  # pip's names with _ too
           "extra-index-url =\n    https://a.example/simple\n    https://b.example/simple\n"
           "[install]\nfind-links = /wheels\n[freeze]\nindex-url = https://ignored.example/simple\n")
    _write(tmp_path / "venv/pip.conf", "[global]\nextra-index-url = https://venv.example/simple\n")
    env = _env(tmp_path, VIRTUAL_ENV=str(tmp_path / "venv"))
    cfg, rest = index_config(["x"], environ=env, pip_config=read_pip_config(env))
    assert rest == ["x"]
    assert cfg.index_url == "https://user.example/simple"  # the user's file is read after the site's
    assert cfg.extra_index_urls == ("https://venv.example/simple",)  # the venv's replaces the user's key
    assert cfg.find_links == ("/wheels",) and cfg.trusted_hosts == ("site.example",)
    assert str(tmp_path / "home/.config/pip/pip.conf") in cfg.sources
    # [install] beats [global] whichever file each is in; a PIP_* variable beats both
    _write(tmp_path / "venv/pip.conf", "[install]\nindex-url = https://install.example/simple\n")
    assert index_config(["x"], environ=env, pip_config=read_pip_config(env))[0].index_url == \
        "https://install.example/simple"
    env["PIP_INDEX_URL"] = "https://env.example/simple"
    assert index_config(["x"], environ=env, pip_config=read_pip_config(env))[0].index_url == "https://env.example/simple"
    # the requirements file's own line beats everything; its extras add to the configured ones
    cfg, _ = index_config(["-i https://req.example/simple", "--extra-index-url https://r2.example/simple"],
                          environ=env, pip_config=read_pip_config(env))
    assert cfg.index_url == "https://req.example/simple"
    assert cfg.extra_index_urls == ("https://r2.example/simple", "https://a.example/simple", "https://b.example/simple")


def test_pip_config_file_replaces_the_users_files_and_dev_null_reads_none(tmp_path: Path) -> None:
    _write(tmp_path / "home/.pip/pip.conf", "[global]\nindex-url = https://legacy.example/simple\n")
    own = _write(tmp_path / "own.conf", "[download]\nextra-index-url = http://127.0.0.1:9/simple/\nno-index = false\n")
    env = _env(tmp_path)
    assert read_pip_config(env).get("index-url") == ("https://legacy.example/simple",
                                                     str(tmp_path / "home/.pip/pip.conf"))
    env["PIP_CONFIG_FILE"] = str(own)
    assert tmp_path / "home/.pip/pip.conf" not in config_files(env)  # pip skips the user's files then
    cfg, _ = index_config(["x"], environ=env, pip_config=read_pip_config(env))
    assert cfg.indexes == [PYPI, "http://127.0.0.1:9/simple/"] and not cfg.no_index
    env["PIP_CONFIG_FILE"] = os.devnull
    assert config_files(env) == [] and read_pip_config(env).values == ()


def test_no_index_from_a_file_and_a_broken_file_is_one_line(tmp_path: Path) -> None:
    own = _write(tmp_path / "own.conf", "[global]\nno-index = yes\nfind-links = /w\n")
    env = _env(tmp_path, PIP_CONFIG_FILE=str(own))
    cfg, _ = index_config(["x"], environ=env, pip_config=read_pip_config(env))
    assert cfg.no_index and cfg.pex_args() == ["--no-pypi", "--find-links", "/w"]
    _write(own, "index-url = https://no-section.example/simple\n")
    with pytest.raises(InputError, match=r"own\.conf: pip's configuration file cannot be read .*PIP_CONFIG_FILE=/dev/null"):
        read_pip_config(env)


def test_pexs_pip_gets_pip_config_file_without_its_index_keys(tmp_path: Path) -> None:
    import configparser

    own = _write(tmp_path / "own.conf", "[global]\ncert = /corp/ca.pem\nextra-index-url = https://u@feed.example/s\n"
                                        "[download]\nfind_links = /w\ntimeout = 60\n")
    text = for_pex({"PIP_CONFIG_FILE": str(own)})
    assert text is not None and "feed.example" not in text and "/w" not in text
    parsed = configparser.RawConfigParser()
    parsed.read_string(text)
    assert parsed.get("global", "cert") == "/corp/ca.pem" and parsed.get("download", "timeout") == "60"
    for section in ("global", "download", "install", "wheel"):  # a site-wide file's section cannot add one back
        assert parsed.get(section, "extra-index-url") == "" and parsed.get(section, "no-index") == "false"
    assert for_pex({"PIP_CONFIG_FILE": os.devnull}) is None
    assert "find-links = \n" in (for_pex({}) or "")
