"""The package's import layering: no import cycle between modules, and packages import only downward.

The layers, lowest first; a module may import from its own layer and any layer below
it, never from one above (every import counts: at the top of a module, inside a
function, under ``TYPE_CHECKING``). No modules may import each other in a circle,
directly or through others, whether at the top or inside a function; an import under
``if TYPE_CHECKING:`` is left out of that check only (it never runs, and it is how a
module names a type of a module that uses it, e.g. ``image.upkeep``'s ``BlobCache``):

0. shared: the root package (``__version__``), ``errors``, ``redact`` (what may be printed), ``resources``, ``sizes``,
   ``atomicfile`` (a file a user reads, written whole or not at all),
   ``emulation`` (whether this machine runs another architecture's programs, via qemu);
1. ``image``: the engine (digests, OCI types, layers, compression, the blob cache,
   assembling, describing, verifying, the SBOM document); it knows nothing of where
   images go;
1b. ``debian``: Debian packages into a layer (repository client, resolver, .deb unpacking);
   needs only ``image`` (its layer writer and blob cache);
1c. ``sign``: keys, the simple-signing payload, DSSE envelopes, the SLSA statement: pure
   documents and cryptography, which ``registry`` stores beside images;
2. ``transport``: images on disk (OCI layouts, archives); needs only ``image``;
3. ``registry``: images over HTTP (references, auth, push, pull, the layer cache, the
   SBOM artifact push); ``pull_to_layout`` writes a layout, so it sits above ``transport``;
3b. ``imageio``: reading and writing an image by its spec string (``oci:``, ``oci-archive:``,
   ``docker-archive:``, ``docker://``): it picks ``transport`` or ``registry``, so it sits above both;
4. ``inputs``: what a build starts from; a base image is read by ``imageio`` (or made
   from a rootfs), so it sits above it;
4b. the settings: ``settings`` (one immutable value of every setting of a run: flags over
   the config file over the environment; ``settingparts``: its registry, layer cache and signing
   parts), ``settingsload`` (how it is made), ``configfile``
   (ociassemble.toml read into typed values), ``modelspec`` (a model to serve), ``built``
   (what a build produced: the recipe's and a plain build's one result type), ``events``
   (the ``Progress`` protocol the library tells its work to); below ``azureml``, which reads them;
5. ``azureml``: the recipe, built on ``inputs`` and the settings;
5b. ``build``: one build from settings (the recipe or a plain image) into ``Built`` images;
   ``materials``: what a build was made from, by digest (the provenance's inputs);
6. ``run``: running an image without a daemon; needs only ``image``;
6b. ``jobs`` and ``pushjob``: the library's whole jobs (build, push, pull, verify, run), each from one
   ``Settings`` to a result with ``to_json()``: what each command calls;
7. the command line: ``cli`` (its ``cli.progress`` shows work as bars and step lines; the
   library only tells an ``events.Progress``) and ``__main__``.

A new top-level module or package fails ``test_every_module_has_a_layer`` until it is
given a layer here (and in docs/design.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "ociassemble"

#: Lowest first: the top-level names (a module or a package) in each layer ("" is the root package).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("shared", frozenset({"", "atomicfile", "emulation", "errors", "redact", "resources", "sizes"})),
    ("image", frozenset({"image"})),
    ("debian", frozenset({"debian"})),
    ("sign", frozenset({"sign"})),
    ("transport", frozenset({"transport"})),
    ("registry", frozenset({"registry"})),
    ("imageio", frozenset({"imageio"})),
    ("inputs", frozenset({"inputs"})),
    ("settings", frozenset({"settings", "settingparts", "settingsload", "configfile", "modelspec", "built", "events"})),
    ("azureml", frozenset({"azureml"})),
    ("build", frozenset({"build", "materials"})),
    ("run", frozenset({"run"})),
    ("jobs", frozenset({"jobs", "pushjob"})),
    ("cli", frozenset({"cli", "__main__"})),
)


def _modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (``__init__`` is the package)."""
    root = package_dir.name
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` but those in the body of an ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, known: dict[str, Path], *,
             type_only: bool) -> Iterator[tuple[str, int]]:
    """(the package module imported, line) for each import of ``name``, wherever it is in the file
    (with ``type_only`` False, not those under ``if TYPE_CHECKING:``)."""
    root = name.split(".")[0]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree) if type_only else _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            bases = [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                base_name = ".".join(base)
            else:
                base_name = node.module or ""
            bases = [(base_name, alias.name) for alias in node.names]
        else:
            continue
        for base_name, attr in bases:
            if base_name != root and not base_name.startswith(root + "."):
                continue
            target = f"{base_name}.{attr}" if attr and f"{base_name}.{attr}" in known else base_name
            while target not in known and "." in target:  # ``import pkg.missing``: its nearest module
                target = target.rsplit(".", 1)[0]
            if target != name:
                yield target, node.lineno


def import_graph(package_dir: Path, *, type_only: bool = True) -> dict[str, dict[str, int]]:
    """Module → {module it imports: the first line that does}; ``type_only`` False leaves
    out the imports under ``if TYPE_CHECKING:``."""
    known = _modules(package_dir)
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known, type_only=type_only):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    top = _top(module)
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    return None


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """One line per import that goes to a higher layer than its module's."""
    out = []
    for module, edges in sorted(graph.items()):
        low = layer_of(module)
        for target, line in sorted(edges.items()):
            high = layer_of(target)
            if low is not None and high is not None and high > low:
                out.append(f"{module} (line {line}) imports {target}: "
                           f"{LAYERS[high][0]} is above {LAYERS[low][0]}")
    return out


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each strongly connected group of modules (Tarjan), as a sorted list; none means no cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


# -- the package -------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 40  # the walk found the package, not an empty folder
    assert [m for m in sorted(graph) if layer_of(m) is None] == []


def test_the_package_imports_only_downward() -> None:
    assert upward_imports(import_graph(PACKAGE_DIR)) == []


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph(PACKAGE_DIR, type_only=False)
    assert "ociassemble.registry.http" in graph["ociassemble.registry.auth"]  # relative imports are seen
    assert "ociassemble.registry.pull" in graph["ociassemble.imageio"]  # and those inside a function
    assert import_cycles(graph) == []


# -- the check itself ----------------------------------------------------------------


#: The files every fake package below has, empty.
_EMPTY = ("__init__.py", "errors.py", "registry/__init__.py")


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    """A package ``ociassemble`` made of ``files`` (path → source) under ``root``."""
    for rel, text in {**dict.fromkeys(_EMPTY, ""), **files}.items():
        path = root / "ociassemble" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "ociassemble"


def test_the_check_finds_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    graph = import_graph(_fake_package(tmp_path, {
        "image/__init__.py": "from .oci import Descriptor\n",
        "image/oci.py": "from ..errors import X\n",
        "image/sbom.py": "def push():\n    from ..registry.push import push_image\n",
        "registry/push.py": "from ..image import oci\nimport ociassemble.image.sbom\n",
    }))
    assert graph["ociassemble.registry.push"] == {"ociassemble.image.oci": 1, "ociassemble.image.sbom": 2}
    assert upward_imports(graph) == [
        "ociassemble.image.sbom (line 2) imports ociassemble.registry.push: registry is above image"]
    assert import_cycles(graph) == [["ociassemble.image.sbom", "ociassemble.registry.push"]]


def test_the_check_finds_a_cycle_within_a_package_but_not_through_type_checking(tmp_path: Path) -> None:
    pkg = _fake_package(tmp_path, {
        "registry/__init__.py": "from .client import Client\n",
        "registry/client.py": "from .auth import Authenticator\nfrom .http import Session\n",
        "registry/auth.py": "def login():\n    from .client import Client\n",
        "registry/http.py": "import typing\nif typing.TYPE_CHECKING:\n    from .client import Client\n",
    })
    assert upward_imports(import_graph(pkg)) == []
    assert import_cycles(import_graph(pkg)) == [
        ["ociassemble.registry.auth", "ociassemble.registry.client", "ociassemble.registry.http"]]
    assert import_cycles(import_graph(pkg, type_only=False)) == [["ociassemble.registry.auth", "ociassemble.registry.client"]]
