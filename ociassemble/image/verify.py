"""Whether an image is the one its inputs build: a rebuilt image compared with a given one, and what
differs first (a layer's files, only a layer's compression, the layer count, the config, the manifest).

The comparison streams: a layer is read as a tar, entry by entry, never held in memory. A layer
whose bytes differ while its config claims the same ``diff_id`` is decompressed and hashed, so
"only the compression differs" is checked, not assumed.

Example::

    built = build_azureml_image(project, cache).image
    report = compare_images(built, load_image("docker://registry.example.com/team/model:1.0", cache), cache)
    print(report.render())              # the first difference, in one line, or the digest
    sys.exit(0 if report.equal else 1)
"""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import ArchiveError
from .assemble import Image
from .cache import BlobCache
from .describe import SHORT_MEDIA, TAR_TYPES, open_layer
from .digest import CHUNK
from .oci import Descriptor, MediaType, parse_json
from .tarread import stream_tar

__all__ = ["VERIFY_SCHEMA_VERSION", "Difference", "VerifyReport", "compare_images"]

#: ``schemaVersion`` of ``verify --json`` (docs/json.md); changes only when a field is removed
#: or changes meaning.
VERIFY_SCHEMA_VERSION = 1

#: how much of a differing value a message quotes
_QUOTE = 80


@dataclass(frozen=True)
class Difference:
    """One way the images differ. ``kind``: ``layer-content`` (other files), ``layer-integrity``
    (the given layer does not decompress to the diff_id its config claims), ``layer-count``,
    ``config``, ``layer-compression`` (same diff_id, other bytes or media type), ``manifest``.
    ``detail`` holds the kind's own fields (``entry`` for layer-content, ``key`` for config …)."""

    kind: str
    message: str
    layer: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "layer": self.layer, "message": self.message, **self.detail}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome: ``equal`` when the given image is the rebuilt one (for a docker-archive,
    which keeps no compressed layers, when the manifests differ: the same config, so the same
    layers uncompressed; ``compared_by`` says which).
    ``differences`` are in the order they matter, the first being *the* reason."""

    rebuilt: Image
    against: Image
    name: str
    equal: bool
    differences: tuple[Difference, ...]
    layers: tuple[dict[str, Any], ...]
    config_keys: tuple[str, ...]
    compared_by: str  # "manifest" | "config"

    @property
    def digest(self) -> str:
        return self.rebuilt.digest

    def to_json(self) -> dict[str, Any]:
        """The ``verify --json`` document (docs/json.md)."""
        return {
            "schemaVersion": VERIFY_SCHEMA_VERSION,
            "equal": self.equal,
            "digest": self.rebuilt.digest,
            "comparedBy": self.compared_by,
            "against": {"name": self.name, "digest": self.against.digest,
                        "config": self.against.manifest.config.digest},
            "rebuilt": {"digest": self.rebuilt.digest, "config": self.rebuilt.manifest.config.digest},
            "difference": self.differences[0].to_json() if self.differences else None,
            "differences": [d.to_json() for d in self.differences],
            "configKeys": list(self.config_keys),
            "layers": list(self.layers),
        }

    def render(self) -> str:
        """What ``verify`` prints: the digest when equal, else the reasons, one per line."""
        if self.equal:
            return self.rebuilt.digest
        lines = [f"{self.name} differs from the rebuilt image: {self.differences[0].message}"]
        lines += [f"  also: {d.message}" for d in self.differences[1:]]
        lines.append(f"  rebuilt: {self.rebuilt.digest}")
        lines.append(f"  image:   {self.against.digest}")
        return "\n".join(lines)


def compare_images(rebuilt: Image, against: Image, cache: BlobCache, *, name: str = "",
                   compressed_comparable: bool = True) -> VerifyReport:
    """Compare ``against`` (the image to check) with ``rebuilt`` (what the inputs build).

    ``compressed_comparable=False`` for a source that keeps no compressed layers (a
    docker-archive): then only the uncompressed layers and the config must match. Layers
    are fetched into ``cache`` as needed. Raises ArchiveError for a layer that is not a
    readable tar, RegistryError when a registry layer cannot be fetched.
    """
    name = name or against.digest
    if rebuilt.digest == against.digest:
        return VerifyReport(rebuilt, against, name, True, (), _layer_rows(rebuilt, against, {}), (),
                            "manifest")
    mine, theirs = list(rebuilt.manifest.layers), list(against.manifest.layers)
    my_ids, their_ids = list(rebuilt.config.diff_ids), list(against.config.diff_ids)
    history = _created_by(rebuilt)
    status: dict[int, str] = {}
    for i in range(max(len(mine), len(theirs))):
        if i >= len(mine) or i >= len(theirs):
            status[i] = "only-rebuilt" if i < len(mine) else "only-image"
        elif mine[i].digest == theirs[i].digest:
            status[i] = "same"
        elif my_ids[i] == their_ids[i]:
            status[i] = "compression"
        else:
            status[i] = "content"

    differences: list[Difference] = []
    content = [i for i, s in status.items() if s == "content"]
    if content:
        differences.append(_content_difference(rebuilt, against, cache, content[0], history[content[0]]))
    elif len(mine) != len(theirs):
        extra = (f"the rebuilt image's layer {len(theirs)} ({history[len(theirs)]}) is not in the image"
                 if len(mine) > len(theirs) else f"the image's layer {len(mine)} is not in the rebuilt image")
        differences.append(Difference(
            "layer-count", f"the rebuilt image has {len(mine)} layers, the image {len(theirs)}: {extra} "
                           "(the layers below it are the same)", None, {"rebuilt": len(mine), "image": len(theirs)}))
    recompressed = [i for i, s in status.items() if s == "compression"]
    if not content and compressed_comparable:
        # other bytes under the same diff_id must still decompress to it: hashed, not assumed
        # (a docker-archive's layers were checked against their diff_ids when it was read)
        for i in recompressed:
            actual = _uncompressed_digest(against, cache, theirs[i])
            if actual != their_ids[i]:
                status[i] = "content"
                differences.insert(0, Difference(
                    "layer-integrity", f"layer {i} ({history[i]}): the image's layer {theirs[i].digest[:19]} "
                                       f"decompresses to {actual[:19]}, not to the diff_id {their_ids[i][:19]} "
                                       "its config claims: the image is corrupt or was altered", i,
                    {"createdBy": history[i], "claimed": their_ids[i], "actual": actual}))
                recompressed.remove(i)
                break

    # a layer that differs makes rootfs.diff_ids differ too: that is no separate finding
    layers_differ = any(s not in ("same", "compression") for s in status.values())
    config_keys = _json_differences(rebuilt.config_bytes, against.config_bytes)
    independent = [(k, d) for k, d in config_keys if not (layers_differ and k.startswith("rootfs.diff_ids"))]
    if independent:
        key, detail = independent[0]
        differences.append(Difference("config", f"the config differs at {key}: {detail}", None,
                                      {"key": key, "keys": [k for k, _ in independent]}))
    if compressed_comparable and recompressed:
        i = recompressed[0]
        more = len(recompressed) - 1
        differences.append(Difference(
            "layer-compression",
            f"layer {i} ({history[i]}): only the compression differs: the same files (diff_id {my_ids[i][:19]}), "
            f"other bytes: rebuilt {_blob(mine[i])}, image {_blob(theirs[i])}"
            + (f"; so do {more} more layer(s), each only in compression" if more else ""), i,
            {"createdBy": history[i], "diffID": my_ids[i], "rebuilt": mine[i].to_json(), "image": theirs[i].to_json(),
             "layers": recompressed}))
    if not differences and compressed_comparable:
        keys = _json_differences(rebuilt.manifest_bytes, against.manifest_bytes)
        key, detail = keys[0] if keys else ("(bytes)", "the same content in another JSON encoding")
        differences.append(Difference("manifest", f"the manifest differs at {key}: {detail}", None, {"key": key}))
    equal = not differences
    return VerifyReport(rebuilt, against, name, equal, tuple(differences), _layer_rows(rebuilt, against, status),
                        tuple(k for k, _ in config_keys), "manifest" if compressed_comparable else "config")


# -- layers ----------------------------------------------------------------------------------

def _created_by(image: Image) -> list[str]:
    """Each layer's history line ("layer N" when the history does not line up with the layers)."""
    built = [h for h in image.config.history if not h.empty_layer]
    n = len(image.manifest.layers)
    if len(built) == n:
        return [h.created_by or f"layer {i}" for i, h in enumerate(built)] + ["?"]
    return [f"layer {i}" for i in range(n)] + ["?"]


def _blob(d: Descriptor) -> str:
    from ..sizes import human_size

    media = SHORT_MEDIA.get(MediaType.to_oci(d.media_type), d.media_type)
    return f"{d.digest[:19]} ({media}, {human_size(d.size)})"


def _layer_rows(rebuilt: Image, against: Image, status: dict[int, str]) -> tuple[dict[str, Any], ...]:
    history = _created_by(rebuilt)
    rows = []
    for i in range(max(len(rebuilt.manifest.layers), len(against.manifest.layers))):
        def side(image: Image) -> dict[str, Any] | None:
            if i >= len(image.manifest.layers):
                return None
            d = image.manifest.layers[i]
            return {"digest": d.digest, "diffID": image.config.diff_ids[i], "mediaType": d.media_type, "size": d.size}

        rows.append({"index": i, "status": status.get(i, "same"),
                     "createdBy": history[i] if i < len(rebuilt.manifest.layers) else None,
                     "rebuilt": side(rebuilt), "image": side(against)})
    return tuple(rows)


class _Hashing:
    """A read-only stream that hashes everything read through it (a layer's diff_id)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._h.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self._h.hexdigest()


def _uncompressed_digest(image: Image, cache: BlobCache, desc: Descriptor) -> str:
    with open_layer(image, cache, desc) as raw:
        return _Hashing(raw).drain()


@dataclass(frozen=True)
class _Entry:
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str
    sha256: str | None
    xattrs: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "mode": self.mode, "uid": self.uid, "gid": self.gid,
                "size": self.size, "mtime": self.mtime, "linkname": self.linkname or None, "sha256": self.sha256,
                "xattrs": dict(self.xattrs)}


#: the attributes compared, in the order a message names them
_ATTRS = ("type", "linkname", "size", "sha256", "mode", "uid", "gid", "mtime", "xattrs")


def _entries(raw: BinaryIO, where: str) -> Iterator[_Entry]:
    """A tar stream's entries with each file's content hash, one at a time (flat memory)."""
    try:
        tf = stream_tar(raw)
        while True:
            m = tf.next()
            if m is None:
                return
            tf.members.clear()  # stream mode would keep every header of the layer otherwise
            path = (m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")).rstrip("/")
            digest = None
            if m.isreg():
                h = hashlib.sha256()
                f = tf.extractfile(m)
                assert f is not None
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
                digest = "sha256:" + h.hexdigest()
            xattrs = tuple(sorted((k, v) for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")))
            yield _Entry(path, TAR_TYPES.get(m.type, "other"), stat.S_IMODE(m.mode), m.uid, m.gid,
                         m.size if m.isreg() else 0, int(m.mtime), m.linkname, digest, xattrs)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{where} is not a readable tar layer: {exc}") from None


def _content_difference(rebuilt: Image, against: Image, cache: BlobCache, i: int, created_by: str) -> Difference:
    """The first entry (in tar order) where layer ``i`` of the two images differs."""
    a_desc, b_desc = rebuilt.manifest.layers[i], against.manifest.layers[i]
    head = f"layer {i} ({created_by}): the files differ"
    base = {"createdBy": created_by, "rebuilt": a_desc.to_json(), "image": b_desc.to_json()}
    with open_layer(rebuilt, cache, a_desc) as ra, open_layer(against, cache, b_desc) as rb:
        mine = _entries(ra, f"the rebuilt layer {i}")
        theirs = _entries(rb, f"layer {i} of the image")
        position = 0
        while True:
            a, b = next(mine, None), next(theirs, None)
            if a is None and b is None:
                return Difference("layer-content", f"{head}: the same entries, but other tar bytes (header "
                                  "encoding, padding or trailing blocks)", i, {**base, "entry": None})
            if a is None or b is None or a.path != b.path:
                if b is None or (a is not None and a.path.encode() < b.path.encode()):
                    assert a is not None
                    where, only = "rebuilt layer", a
                else:
                    where, only = "image's layer", b
                message = f"{head}: /{only.path} is only in the {where} (entry {position})"
                return Difference("layer-content", message, i, {
                    **base, "entry": {"path": only.path, "position": position, "onlyIn": "rebuilt" if only is a else "image",
                                      "attributes": ["path"], "rebuilt": a.to_json() if a else None,
                                      "image": b.to_json() if b else None}})
            changed = [attr for attr in _ATTRS if getattr(a, attr) != getattr(b, attr)]
            if changed:
                said = ", ".join(_attr_text(attr, getattr(a, attr), getattr(b, attr)) for attr in changed)
                return Difference("layer-content", f"{head}: first differing file /{a.path}: {said}", i, {
                    **base, "entry": {"path": a.path, "position": position, "onlyIn": None, "attributes": changed,
                                      "rebuilt": a.to_json(), "image": b.to_json()}})
            position += 1


def _attr_text(attr: str, mine: Any, theirs: Any) -> str:
    def show(v: Any) -> str:
        if attr == "mode":
            return f"{v:04o}"
        if attr == "sha256":
            return str(v)[:19] if v else "none"
        if attr == "linkname":
            return repr(v)
        return str(v)

    label = {"linkname": "link target", "sha256": "content", "xattrs": "xattrs"}.get(attr, attr)
    return f"{label} {show(mine)} (rebuilt) vs {show(theirs)} (image)"


# -- config and manifest ----------------------------------------------------------------------

def _json_differences(mine: bytes, theirs: bytes) -> list[tuple[str, str]]:
    """Every differing key of two JSON documents, as ``(key path, what differs)``, in key order:
    ``config.Env``, ``config.Labels["x"]``, ``history[5].created_by``, ``rootfs.diff_ids[3]``."""
    try:
        a, b = parse_json(mine), parse_json(theirs)
    except ValueError as exc:
        raise ArchiveError(f"a config or manifest is not JSON: {exc}") from None
    out: list[tuple[str, str]] = []
    _walk(a, b, "", out)
    return out


def _key(prefix: str, key: str) -> str:
    if key.isidentifier():
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{json.dumps(key)}]"


def _quote(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= _QUOTE else text[:_QUOTE - 1] + "…"


def _walk(a: Any, b: Any, path: str, out: list[tuple[str, str]]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = _key(path, key)
            if key not in b:
                out.append((sub, f"{_quote(a[key])} only in the rebuilt image"))
            elif key not in a:
                out.append((sub, f"{_quote(b[key])} only in the image"))
            else:
                _walk(a[key], b[key], sub, out)
        return
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, str) for x in a + b) \
            and path.endswith("Env"):
        out.append((path, _env_text(a, b)))
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for n, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{n}]", out)
        return
    out.append((path, f"{_quote(a)} (rebuilt) vs {_quote(b)} (image)"))


def _env_text(a: list[str], b: list[str]) -> str:
    """The first variable that differs between two ``Env`` lists."""
    da = dict(item.partition("=")[::2] for item in a)
    db = dict(item.partition("=")[::2] for item in b)
    for key in sorted(set(da) | set(db)):
        if key not in db:
            return f"{key}={da[key]} only in the rebuilt image"
        if key not in da:
            return f"{key}={db[key]} only in the image"
        if da[key] != db[key]:
            return f"{key}={_quote(da[key])} (rebuilt) vs {key}={_quote(db[key])} (image)"
    return "the same variables in another order"
