"""Undecorated run(data): echoes the text it got, so tests see exactly what the server passed."""


def init():
    pass


def run(data):
    return {"data": data, "length": len(data)}
