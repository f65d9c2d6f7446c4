"""Undecorated run(data, request_headers): the server passes the request's headers too."""


def init():
    pass


def run(data, request_headers):
    return {"data": data, "custom": request_headers.get("X-Custom"), "has_host": "Host" in request_headers}
