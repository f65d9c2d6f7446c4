"""Served with App Insights on (a fake ingestion endpoint): prints in init() and run(), raises on demand."""


def init():
    print("init says hello")


def run(data):
    print("run got", data)
    if data == "raise":
        raise ValueError("boom from run")
    return {"ok": True}
