"""No run(): the worker must not boot."""


def init():
    pass
