"""Served as src/scoring/score.py (AZUREML_SOURCE_DIRECTORY=src): imports a package at the source root, src/nestedpkg."""

from nestedpkg.text import shout

STATE = {}


def init():
    STATE["greeting"] = shout("ready")


def run(data):
    return {"shouted": shout(data), "init": STATE["greeting"]}
