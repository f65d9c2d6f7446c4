"""The WSGI entry point gunicorn imports (``wsgi:app``), once in each worker (no preload).

A script that cannot start is reported in one log line ("User's init function
failed: ..." and the like) followed by its traceback, and the worker exits
with gunicorn's boot-error code.
"""

from aml_server.logs import configure_logging
from create_app import create_app_or_exit

configure_logging()
app = create_app_or_exit()
