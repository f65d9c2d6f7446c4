"""run() sleeps for as many seconds as the body says: served with SCORING_TIMEOUT_MS=500."""

import time


def init():
    pass


def run(data):
    time.sleep(float(data or 0))
    return "done"
