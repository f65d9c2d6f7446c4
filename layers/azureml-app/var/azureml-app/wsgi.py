"""The WSGI entry point gunicorn imports (``wsgi:app``): once in each worker, or once in
gunicorn's arbiter before it forks them when WORKER_PRELOAD=true.

A script that cannot start is reported in one log line ("User's init function
failed: ..." and the like) followed by its traceback, and the worker exits
with gunicorn's boot-error code.
"""

from aml_server.logs import configure_logging
from aml_server.print_log import install_print_logger
from create_app import create_app_or_exit

configure_logging()
install_print_logger()  # before score.py is imported: its import-time prints are log lines too
app = create_app_or_exit()
