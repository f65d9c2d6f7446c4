"""Served with WORKER_PRELOAD=true and two workers: says which process ran init() and which answers."""

import os

STATE = {}


def init():
    STATE["init_pid"] = os.getpid()


def run(data):
    return {"init_pid": STATE["init_pid"], "pid": os.getpid()}
