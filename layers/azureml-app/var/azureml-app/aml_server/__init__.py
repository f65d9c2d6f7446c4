"""The scoring server behind ``create_app.py``: Azure ML SDK v1's HTTP contract, re-implemented.

The package name is deliberately unusual so that it cannot shadow (or be
shadowed by) a module in the user's source directory, which shares
``sys.path`` with it.  Everything here is created per application by
``create_app``; no module keeps mutable state of its own.
"""
