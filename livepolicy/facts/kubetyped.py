"""Typed decoding of JSON snapshots: materialise only the fields livepolicy reads.

Why: at 150k pods, parsing the whole tree with orjson and walking its dicts took ~10 s and
most of 2 GiB. msgspec decodes straight into the Structs below instead, keeping the parts
replicas share (containers' resources, tolerations, labels, owner references, affinity,
volumes) as raw JSON bytes; those bytes key the converter's memos, so each distinct part
is parsed once, by the same code as the generic path (kubepods, kubeconvert).

msgspec only splits the document: every value the generic code reads reaches it through
orjson, as in the generic path (raw parts are loaded, the fields a memo key holds are
loaded back from that key), so the two cannot disagree on numbers or strings; pod fields
read directly must be strings. A document of another shape, invalid UTF-8 anywhere, or any
problem at all returns None and the caller falls back to the generic path, which reports
every problem located: both paths give the same facts and the same diagnostics
(tests/test_typed_decode.py checks that on every case and on fuzzed snapshots). One
difference remains, on purpose: a number beyond orjson's range (1e400, 400 digits) in a
field livepolicy never reads is skipped here, where the generic path refuses the file.
"""

from __future__ import annotations

from sys import intern
from typing import Any, Union

import msgspec
import orjson
from msgspec import Raw, Struct, field

from livepolicy.core.selectors import NodeSelectorTerms
from livepolicy.facts.kubeconvert import Converter
from livepolicy.facts.kubeobjects import ByKind, assemble
from livepolicy.facts.kubepods import _SpecShape, own_annotations
from livepolicy.facts.kubevalues import _EMPTY, _NO_ANNOTATIONS, KNOWN_KINDS, _str_map
from livepolicy.facts.model import ClusterFacts, OwnerKind, PodFacts, VolumeFacts

# A field the object does not have: null, which the generic code reads as it reads a
# missing key for every Raw field below (compared by identity to skip the lookups).
_ABSENT = Raw(b"null")


# Defaults are what the generic path's `.get(key, default)` gives for a missing key.
class _Container(Struct, gc=False):
    name: Any = ""
    tty: Any = False
    stdin: Any = False
    resources: Raw = _ABSENT
    securityContext: Raw = _ABSENT


class _PodMeta(Struct, gc=False):
    name: Any = None
    namespace: Any = "default"
    uid: Any = ""
    labels: Raw = _ABSENT
    annotations: Raw = _ABSENT
    ownerReferences: Raw = _ABSENT
    deletionTimestamp: Any = None


class _PodSpec(Struct, gc=False):
    nodeName: Any = ""
    containers: list[_Container] = []
    initContainers: list[_Container] = []
    overhead: Raw = _ABSENT
    tolerations: Raw = _ABSENT
    nodeSelector: Raw = _ABSENT
    priority: Any = 0
    priorityClassName: Any = ""
    hostNetwork: Any = False
    affinity: Raw = _ABSENT
    volumes: list[Raw] = []


class _PodStatus(Struct, gc=False):
    phase: Any = "Unknown"


class _Pod(Struct, tag_field="kind", tag="Pod", gc=False):
    metadata: _PodMeta = field(default_factory=_PodMeta)
    spec: _PodSpec = field(default_factory=_PodSpec)
    status: _PodStatus = field(default_factory=_PodStatus)


# Other kinds are few (nodes, owners, volumes, budgets): their read fields stay raw and
# orjson loads them for the generic converters; _MISSING keeps a missing field missing.
_MISSING = Raw(b"")
_FIELDS = {"Node": ("metadata", "spec", "status"),
           "PersistentVolume": ("metadata", "spec"),
           "PersistentVolumeClaim": ("metadata", "spec", "status"),
           "PodDisruptionBudget": ("metadata", "spec", "status"),
           "ClusterInfo": ("apiVersion", "metadata", "spec")}
_OTHERS = tuple(
    msgspec.defstruct(kind, [(f, Raw, _MISSING) for f in _FIELDS.get(kind, ("metadata",))],
                      tag_field="kind", tag=kind, gc=False)
    for kind in sorted(KNOWN_KINDS - {"Pod"}))

_TYPES: tuple[type[Struct], ...] = (_Pod, *_OTHERS)


class _List(Struct, gc=False):
    items: list[Union[_TYPES]]  # type: ignore[valid-type]  # noqa: UP007 (a runtime tuple)


_DECODER = msgspec.json.Decoder(_List)
_ENCODE = msgspec.json.Encoder().encode


class _Fallback(Exception):
    """Raised at the first problem: the generic path reports them all, located."""


def _fallback(pointer: str, message: str) -> None:
    raise _Fallback(pointer)


class TypedConverter(Converter):
    """Pod conversion from the typed Structs, memoised on the raw bytes of each part."""

    def __init__(self) -> None:
        super().__init__(_fallback)
        self._raw_shapes: dict[bytes, _SpecShape] = {}
        self._raw_labels: dict[bytes, dict[str, str]] = {}
        self._raw_owners: dict[tuple[str, bytes], tuple[OwnerKind, str, str]] = {}
        self._raw_affinities: dict[bytes, NodeSelectorTerms] = {}
        self._raw_volumes: dict[tuple[str, bytes], VolumeFacts] = {}

    def _typed_shape(self, key: bytes, ptr: str) -> _SpecShape:
        # The key is the JSON of every field the shape reads (containers with theirs).
        containers, inits, overhead, tolerations, selector, priority, pclass, host = \
            orjson.loads(key)
        plain = {"overhead": overhead, "tolerations": tolerations, "nodeSelector": selector,
                 "priority": priority, "priorityClassName": pclass, "hostNetwork": host}
        found = self._raw_shapes[key] = self._derive_shape(plain, containers, inits, ptr)
        return found

    def _typed_volume(self, ns: str, key: tuple[str, bytes]) -> VolumeFacts:
        v = orjson.loads(key[1])
        found = self._raw_volumes[key] = self._volume(ns, v if isinstance(v, dict) else _EMPTY)
        return found

    def _annotations(self, raw: Raw) -> dict[str, str]:
        if raw is _ABSENT:
            return _NO_ANNOTATIONS
        data = bytes(raw)
        # A JSON escape could spell the prefix otherwise: decode whenever one appears.
        if b"livepolicy.io" not in data and b"\\" not in data:
            return _NO_ANNOTATIONS
        value = orjson.loads(data)
        return own_annotations(value) if isinstance(value, dict) and value \
            else _NO_ANNOTATIONS

    def typed_pods(self, items: list[tuple[int, _Pod]], base: str) -> list[PodFacts]:
        """Every pod, in item order. The hottest loop of a large plan: each part is looked
        up by its raw bytes in a local memo, and converted (by the generic code) on a miss."""
        shapes, labels_memo, owners = self._raw_shapes, self._raw_labels, self._raw_owners
        affinities, volumes_memo = self._raw_affinities, self._raw_volumes
        no_affinity, bare = self._affinity(None), self._resolve_owner("", _EMPTY)
        finish, encode = self._finish, _ENCODE
        out = []
        for i, obj in items:
            meta, spec = obj.metadata, obj.spec
            name, ns, uid, node, phase = (meta.name, meta.namespace, meta.uid, spec.nodeName,
                                          obj.status.phase)
            if not (type(name) is type(ns) is type(uid) is type(node) is type(phase) is str
                    and name and spec.containers):
                _fallback(f"{base}/{i}", "")  # the generic path says what it makes of them
            ns = intern(ns)
            key = encode((spec.containers, spec.initContainers, spec.overhead,
                          spec.tolerations, spec.nodeSelector, spec.priority,
                          spec.priorityClassName, spec.hostNetwork))
            shape = shapes.get(key) or self._typed_shape(key, f"{base}/{i}")
            raw = meta.labels
            if raw is not _ABSENT:
                lkey = bytes(raw)
                labels = labels_memo.get(lkey)
                if labels is None:  # replicas share one dict (facts are never mutated)
                    labels = labels_memo[lkey] = _str_map(orjson.loads(lkey))
            else:
                labels = {}
            raw = meta.ownerReferences
            if raw is not _ABSENT:
                okey = (ns, bytes(raw))
                owner = owners.get(okey)
                if owner is None:
                    owner = owners[okey] = self._resolve_owner(
                        ns, {"ownerReferences": orjson.loads(okey[1])})
            else:
                owner = bare
            raw = spec.affinity
            if raw is not _ABSENT:
                akey = bytes(raw)
                affinity = affinities.get(akey)
                if affinity is None:
                    affinity = affinities[akey] = self._affinity(orjson.loads(akey))
            else:
                affinity = no_affinity
            vols = []
            for v in spec.volumes:
                vkey = (ns, bytes(v))
                vols.append(volumes_memo.get(vkey) or self._typed_volume(ns, vkey))
            out.append(finish(
                ns, name, uid, intern(node), intern(phase), labels,
                self._annotations(meta.annotations), owner, shape, len(spec.initContainers),
                tuple(vols), affinity, bool(meta.deletionTimestamp), f"{base}/{i}"))
        return out


_KIND = {cls: str(cls.__struct_config__.tag) for cls in _TYPES}


def _plain(obj: Struct) -> dict[str, Any]:
    """A non-pod Struct as the dict the generic path would have parsed (read fields only)."""
    out: dict[str, Any] = {"kind": _KIND[type(obj)]}
    for f in obj.__struct_fields__:
        raw = getattr(obj, f)
        if raw is not _MISSING:
            out[f] = orjson.loads(bytes(raw))
    return out


def typed_facts(data: bytes, source: str) -> ClusterFacts | None:
    """The facts of a JSON `kind: List` snapshot, or None when the generic path must read
    it (another shape, or any problem to report)."""
    try:
        if not data.isascii():
            data.decode("utf-8")  # msgspec checks only the strings it keeps
        doc = _DECODER.decode(data)
    except (msgspec.MsgspecError, ValueError, RecursionError):  # RecursionError: nesting
        return None
    conv = TypedConverter()
    by_kind: ByKind = {kind: [] for kind in KNOWN_KINDS}
    pods = by_kind["Pod"]
    try:
        for i, obj in enumerate(doc.items):
            if type(obj) is _Pod:
                pods.append((i, obj))
            else:
                by_kind[_KIND[type(obj)]].append((i, _plain(obj)))
        del doc
        return assemble(conv, by_kind, conv.typed_pods, "/items", source)
    except (_Fallback, orjson.JSONDecodeError):
        return None
