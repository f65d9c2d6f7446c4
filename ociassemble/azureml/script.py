"""Checking the user's entry script without running it: parse it, find init() and run().

User code is never imported at build time (it may need the model, GPUs or secrets);
``ast`` tells whether the two functions are defined, assigned or imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..errors import InputError

__all__ = ["check_entry_script"]


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        names.add(t.id)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    names.add((a.asname or a.name).split(".")[0])
            elif isinstance(node, (ast.If, ast.Try)):  # definitions under `if`/`try` count
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return names


def check_entry_script(path: Path) -> None:
    """Raise InputError unless ``path`` is Python source defining ``init`` and ``run``."""
    if not path.is_file():
        raise InputError(f"entry script {path} does not exist; write a score.py with init() and run(data), or pass --entry-script")
    try:
        source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise InputError(f"entry script {path} line {exc.lineno}: {exc.msg}; fix the syntax error") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"entry script {path} cannot be read as Python: {exc}") from None
    names = _top_level_names(tree)
    missing = [n for n in ("init", "run") if n not in names]
    if missing:
        raise InputError(f"entry script {path} defines no {' and no '.join(f'{n}()' for n in missing)}; Azure ML calls "
                         "init() once per worker and run(data) per request: add them")
