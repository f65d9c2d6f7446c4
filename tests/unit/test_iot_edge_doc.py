"""docs/iot-edge.md's deployment manifest is valid JSON whose scoring module publishes the port the
image exposes (what a device needs to reach /score), by the image's stop signal and env keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "iot-edge.md"


def _manifest() -> dict:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/iot-edge.md should hold one JSON deployment manifest"
    return json.loads(blocks[0])


def test_the_module_publishes_the_port_the_scoring_image_exposes() -> None:
    from ociassemble.azureml import recipe

    agent = _manifest()["modulesContent"]["$edgeAgent"]["properties.desired"]
    module = agent["modules"]["diabetes"]
    create = json.loads(module["settings"]["createOptions"])
    exposed = re.search(r'exposed_ports=\("([^"]+)",\)', Path(recipe.__file__).read_text())
    assert exposed, "the recipe's exposed port was not found"
    port = exposed.group(1)
    assert port in create["HostConfig"]["PortBindings"] and port in create["ExposedPorts"]
    assert "@sha256:" in module["settings"]["image"]
    for name in ("edgeAgent", "edgeHub"):
        json.loads(agent["systemModules"][name]["settings"]["createOptions"])  # each is JSON text
    assert set(module["env"]) <= {"WORKER_COUNT", "AZUREML_LOG_LEVEL"}
