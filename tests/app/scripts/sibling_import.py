"""Imports a module next to it (the script's folder is first on sys.path) and keeps state from init()."""

import _sibling_helper

STATE = {}


def init():
    STATE["factor"] = _sibling_helper.FACTOR


def run(data):
    return {"doubled": _sibling_helper.double(data), "factor": STATE["factor"]}
