"""Importing the script fails: the worker must not boot."""

import module_that_does_not_exist  # noqa: F401


def init():
    pass


def run(data):
    return data
