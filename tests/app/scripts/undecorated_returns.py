"""Undecorated run(): the body picks what run() returns or raises (JSON encoding, errors, Responses)."""

import json

import numpy as np
from flask import Response


def init():
    pass


def run(raw):
    what = json.loads(raw)["return"]
    if what == "none":
        return None
    if what == "text":
        return "h\u00e9llo \u2603"
    if what == "list":
        return [1, 2.5, "x", None, True]
    if what == "numpy":
        return np.array([1, 2, 3])  # not JSON serializable: the server's own 500
    if what == "raise":
        raise ValueError("boom from run()")
    if what == "timeout_error":
        raise TimeoutError("a downstream call timed out")
    if what == "flask_response":
        return Response("plain text", status=202, mimetype="text/plain")
    if what == "flask_503":
        return Response("busy", status=503)
    return {"unknown": what}
