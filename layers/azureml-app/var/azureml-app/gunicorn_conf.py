"""Gunicorn settings for the scoring app (``gunicorn -c gunicorn_conf.py wsgi:app``).

nginx on :5001 is the only client, so gunicorn listens on loopback only.
Workers are the sync kind, as in Azure ML's image: the SCORING_TIMEOUT_MS
deadline is a SIGALRM timer that needs run() on the worker's main thread.
No preload by default: each worker imports wsgi.py and so calls the user's init()
itself.  WORKER_PRELOAD=true (as the reference's ``--preload``) imports it once in
the arbiter before forking, so the workers share the loaded model's memory
(copy-on-write); init() then runs once, in the arbiter.
"""

import os

bind = "127.0.0.1:9090"
worker_class = "sync"
workers = int(os.environ.get("WORKER_COUNT", "1"))
# Seconds a worker may stay silent (one long run()) before the arbiter kills it;
# nginx's proxy timeouts in sites-available/app use the same default of 300 s.
timeout = int(os.environ.get("WORKER_TIMEOUT", "300"))
graceful_timeout = 30
# Only the word "true" (any case) turns it on, as in the reference's launcher.
preload_app = os.environ.get("WORKER_PRELOAD", "false").strip().lower() == "true"
# Gunicorn >= 24 opens a control socket under $HOME by default; nothing in the
# image uses it, and the container's HOME may not be writable.
control_socket_disable = True

loglevel = os.environ.get("AZUREML_LOG_LEVEL", "INFO").lower()
errorlog = "-"  # stderr; the runit run script joins it to stdout
accesslog = "-"
# One line per request: method, path (no query string: for GET /score it is the
# model's input), status, milliseconds, and the request id to correlate with the
# client. Never the body.
access_log_format = '%(m)s %(U)s %(s)s %(M)sms x-request-id=%({x-request-id}o)s'
