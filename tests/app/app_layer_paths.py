"""Where the app's layer trees and the test scripts are, for the app tests (a helper module, not tests)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_ROOT_IN_LAYER = REPO_ROOT / "layers" / "azureml-app" / "var" / "azureml-app"
RUNIT_LAYER = REPO_ROOT / "layers" / "runit-nginx"
APP_REQUIREMENTS = REPO_ROOT / "layers" / "app-requirements.txt"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
