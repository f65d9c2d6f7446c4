"""Served with AML_CORS_ORIGINS: answers are compared with their CORS and Vary headers."""


def init():
    pass


def run(data):
    return {"echo": data}
