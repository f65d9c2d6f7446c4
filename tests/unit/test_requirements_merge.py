"""The deps layer's one requirement set: the scoring server's pins merged with the user's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociassemble.azureml.requirements import merge_requirements, read_app_pins
from ociassemble.errors import BuildError
from ociassemble.resources import layers_dir

APP = read_app_pins(layers_dir() / "app-requirements.txt")


def test_the_shipped_pins_have_ranges_that_hold_them() -> None:
    assert set(APP) == {"flask", "werkzeug", "gunicorn", "inference-schema", "flask-cors"}
    for pin in APP.values():
        assert pin.works_with.contains(pin.version), pin


def test_nothing_from_the_user_gives_the_server_pins() -> None:
    merged = merge_requirements(APP, [])
    assert merged.lines == [str(p.requirement) for p in APP.values()]
    assert merged.notes == []


def test_a_shared_package_is_named_once_with_extras_merged() -> None:
    merged = merge_requirements(APP, ["inference-schema[numpy-support]", "Inference_Schema[pandas-support]>=1.5",
                                      "numpy==2.4.6"], source="requirements.txt")
    assert "inference-schema[numpy-support,pandas-support]==1.8" in merged.lines
    assert sum("inference" in line.lower() for line in merged.lines) == 1
    assert merged.lines[-1] == "numpy==2.4.6"
    assert any("installed once: inference-schema[numpy-support,pandas-support]==1.8" in n for n in merged.notes)


def test_the_users_exact_pin_wins_where_the_server_works_with_it() -> None:
    merged = merge_requirements(APP, ["flask==2.3.3", "gunicorn==20.1.0"], source="requirements.txt")
    assert merged.lines[:3] == ["flask==2.3.3", "werkzeug==3.1.8", "gunicorn==20.1.0"]
    assert any("flask==2.3.3: requirements.txt's pin replaces the scoring server's 3.1.3" in n for n in merged.notes)


def test_a_range_is_intersected_with_what_the_server_works_with() -> None:
    merged = merge_requirements(APP, ["flask>=3.1.4"])
    assert [line for line in merged.lines if line.startswith(("flask<", "flask>", "flask="))] == ["flask<4,>=2.3,>=3.1.4"]
    assert merge_requirements(APP, ["flask<3.2"]).lines[0] == "flask==3.1.3"  # the server's pin fits: kept


def test_a_real_conflict_is_one_line_naming_both_sides_and_the_fix() -> None:
    with pytest.raises(BuildError) as err:
        merge_requirements(APP, ["gunicorn==19.9.0"], source="myenv.yml")
    message = str(err.value)
    assert "\n" not in message
    assert "myenv.yml asks for gunicorn==19.9.0" in message
    assert "the scoring server needs gunicorn<28,>=20.1 (it ships gunicorn==27.0.1)" in message
    assert "pin a version in <28,>=20.1, or drop the pin to take 27.0.1" in message


def test_serving_stack_packages_are_satisfied_by_the_image_unless_asked_for() -> None:
    user = ["azureml-defaults>=1.44", "azureml_inference_server_http", "scikit-learn==1.9.1"]
    merged = merge_requirements(APP, user)
    assert not any("azureml" in line for line in merged.lines)
    assert merged.lines[-1] == "scikit-learn==1.9.1"
    [note] = [n for n in merged.notes if "not installed" in n]
    assert note.startswith("azureml-defaults, azureml_inference_server_http not installed: the image already has")
    assert "install_serving_stack = true (or --install-serving-stack)" in note
    kept = merge_requirements(APP, user, install_serving_stack=True)
    assert "azureml-defaults>=1.44" in kept.lines and "azureml_inference_server_http" in kept.lines


def test_the_users_own_duplicates_are_merged_and_other_lines_pass_through() -> None:
    merged = merge_requirements(APP, ["numpy>=2", "numpy<3", "--extra-index-url https://example.invalid/simple",
                                      "./wheels/mylib-1.0-py3-none-any.whl", "pandas; python_version < '3'"])
    tail = merged.lines[len(APP):]
    assert tail == ["numpy<3,>=2", "--extra-index-url https://example.invalid/simple",
                    "./wheels/mylib-1.0-py3-none-any.whl", 'pandas; python_version < "3"']


def test_azureml_core_is_installed_when_listed() -> None:
    assert merge_requirements(APP, ["azureml-core==1.61.0"]).lines[-1] == "azureml-core==1.61.0"


# pex's failures as pex 2.105 prints them (captured from real runs, shortened), and the one line each becomes
PEX_FAILURES = {
    "pex's check of what it resolved": (
        "Failed to resolve compatible distributions for 1 target:\n"
        "1: complete platform cp311-cp311-manylinux_2_36_x86_64 is not compatible with:\n"
        "    azureml-core 1.61.0.post4 requires python-dateutil<3.0.0,>=2.7.3 but 1 incompatible dist was resolved:\n"
        "        python_dateutil-4.0.0-py3-none-any.whl\n"
        "    adal 1.2.7 requires python-dateutil<3,>=2.1.0 but 1 incompatible dist was resolved:\n"
        "        python_dateutil-4.0.0-py3-none-any.whl\n",
        "azureml-core 1.61.0.post4 requires python-dateutil<3.0.0,>=2.7.3, but python_dateutil-4.0.0-py3-none-any.whl "
        "was chosen (and 1 more conflicts; --debug shows them)"),
    "pip's resolver": (
        "pid 1 -> /root/.cache/pex/venvs/4/x/bin/python /root/.cache/pex/venvs/4/x/pex --isolated download -q\n"
        "pip: ERROR: Cannot install -r requirements.txt (line 1) and werkzeug==2.0.1 because these package versions "
        "have conflicting dependencies.\n"
        "pip: ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/user_guide/\n"
        "pip:  \npip:  The conflict is caused by:\npip:      The user requested werkzeug==2.0.1\n"
        "pip:      flask 3.1.3 depends on werkzeug>=3.1.0\npip:  \npip:  To fix this you could try to:\n",
        "you asked for werkzeug==2.0.1; flask 3.1.3 depends on werkzeug>=3.1.0"),
    "no such version": (
        "pid 1 -> /root/.cache/pex/venvs/4/x/bin/python ... exited with 1 and STDERR:\n"
        "pip: ERROR: Could not find a version that satisfies the requirement requests==0.0.999 (from -r r.txt (line 1)) "
        "(from versions: 0.2.0, 2.31.0, 2.32.0, 2.32.1, 2.32.2, 2.32.3)\n"
        "pip: ERROR: No matching distribution found for requests==0.0.999 (from -r r.txt (line 1))\n",
        "nothing matches requests==0.0.999 (newest available: 2.31.0, 2.32.0, 2.32.1, 2.32.2, 2.32.3)"),
    "a git requirement whose clone failed": (
        "pip: WARNING: Discarding git+https://git.example/foo/bar.git#egg=bar. Command errored out with exit status "
        "128: git clone -q https://git.example/foo/bar.git /root/.cache/pex/pip/x/pip-export-1 Check the logs for full "
        "command output.\n"
        "pip: ERROR: Could not find a version that satisfies the requirement bar (unavailable)\n"
        "pip: ERROR: No matching distribution found for bar (unavailable)\n",
        "cannot fetch git+https://git.example/foo/bar.git#egg=bar: the clone failed (check the URL, that this machine "
        "can reach it, and its credentials), or name a released package instead"),
    "a git requirement with no git here": (
        "pip:   ERROR: Error [Errno 2] No such file or directory: 'git' while executing command git clone -q "
        "https://git.example/foo/bar.git /root/.cache/pex/pip/x/bar_1\n"
        "pip: ERROR: Cannot find command 'git' - do you have 'git' installed and in your PATH?\n",
        "https://git.example/foo/bar.git is fetched with git, which this machine does not have: install it "
        "(apt-get install git), or name a released package instead"),
    "a source distribution only, for another architecture": (
        "No pre-built wheel was available for python-Levenshtein 0.12.2.\n"
        "Successfully built the wheel python_Levenshtein-0.12.2-cp311-cp311-linux_x86_64.whl from the sdist "
        "python-Levenshtein-0.12.2.tar.gz but it is not compatible with the requested foreign target complete "
        "platform cp311-cp311-manylinux_2_36_aarch64.\n"
        "You'll need to build a wheel from python-Levenshtein-0.12.2.tar.gz on the foreign target platform and make "
        "it available to Pex via a `--find-links` repo or a custom `--index`.\n",
        "no wheel of python-Levenshtein 0.12.2 is published for this platform, and pex builds a wheel from the source "
        "distribution only for the build machine"),
}


@pytest.mark.parametrize("case", sorted(PEX_FAILURES))
def test_pex_failures_are_summarised_in_one_line(case: str) -> None:
    from ociassemble.azureml.deps import _summarise_pex_error

    stderr, expected = PEX_FAILURES[case]
    assert _summarise_pex_error(stderr) == expected
