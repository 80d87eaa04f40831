"""Typed models of every input kind, and the one function that turns a decoded document into one.

``load_object`` never raises for user input: a document that does not fit its model becomes a
``Diagnostic`` naming the object and the field path (``spec.routes[0].services[1].port``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from translators.errors import Diagnostic, SourceRef
from translators.errors import diagnostic as _diag
from translators.models.base import ObjectMeta, Resource
from translators.models.k8s import (
    ConfigMap,
    Endpoint,
    EndpointSlice,
    Secret,
    Service,
    ServicePort,
)
from translators.models.traefik import (
    TRAEFIK_GROUPS,
    IngressRoute,
    LoadBalancerSpec,
    Middleware,
    MiddlewareRef,
    ServersTransport,
    TLSOption,
    TraefikService,
)

__all__ = [
    "ConfigMap",
    "Endpoint",
    "EndpointSlice",
    "IngressRoute",
    "LoadBalancerSpec",
    "Middleware",
    "MiddlewareRef",
    "ObjectMeta",
    "Resource",
    "Secret",
    "ServersTransport",
    "Service",
    "ServicePort",
    "TLSOption",
    "TraefikService",
    "api_group",
    "load_object",
]

_CORE: dict[tuple[str, str], type[Resource]] = {
    ("v1", "Service"): Service,
    ("v1", "Secret"): Secret,
    ("v1", "ConfigMap"): ConfigMap,
    ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice,
}
_TRAEFIK: dict[str, type[Resource]] = {
    "IngressRoute": IngressRoute,
    "TraefikService": TraefikService,
    "Middleware": Middleware,
    "ServersTransport": ServersTransport,
    "TLSOption": TLSOption,
}
# Kinds we know exist and deliberately do not read yet: reported once, never silently dropped.
_KNOWN_UNTRANSLATED = frozenset(
    {
        "IngressRouteTCP",
        "IngressRouteUDP",
        "MiddlewareTCP",
        "TLSStore",
        "ServersTransportTCP",
    }
)


def api_group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


_UNION_TAGS = frozenset({"int", "str", "float", "bool", "list", "dict", "none", "nullable"})


def _is_union_tag(part: str) -> bool:
    """pydantic names the member of a union it tried (``port.int``, ``port.str``)."""
    return part in _UNION_TAGS or part.startswith(("literal[", "function-", "list[", "dict["))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _ref(doc: Mapping[str, Any], file: str, line: int) -> SourceRef:
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return SourceRef(
        kind=str(doc.get("kind") or ""),
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        api_version=str(doc.get("apiVersion") or ""),
        file=file,
        line=line,
    )


def model_for(api_version: str, kind: str) -> type[Resource] | None:
    if api_group(api_version) in TRAEFIK_GROUPS and api_version.endswith("/v1alpha1"):
        return _TRAEFIK.get(kind)
    return _CORE.get((api_version, kind))


def load_object(
    doc: object, *, file: str = "", line: int = 0
) -> tuple[Resource | None, SourceRef, list[Diagnostic]]:
    """Validate one decoded document. Returns the model (or None) and what went wrong."""
    if not isinstance(doc, Mapping):
        ref = SourceRef(file=file, line=line)
        found = type(doc).__name__
        return None, ref, [_diag(ref, "", "InvalidObject", f"expected a mapping, found {found}")]
    ref = _ref(doc, file, line)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version:
        return None, ref, [_diag(ref, "apiVersion", "InvalidObject", "apiVersion is required")]
    if not isinstance(kind, str) or not kind:
        return None, ref, [_diag(ref, "kind", "InvalidObject", "kind is required")]
    model = model_for(api_version, kind)
    if model is None:
        group = api_group(api_version)
        if group in TRAEFIK_GROUPS and kind in _KNOWN_UNTRANSLATED:
            msg = f"{kind} is not translated by this version of Switchman; the object is ignored"
            return None, ref, [_diag(ref, "kind", "Unsupported", msg, "warning")]
        if group in TRAEFIK_GROUPS or kind in _TRAEFIK:
            msg = f"unknown kind {kind!r} in {api_version!r}; the object is ignored"
            return None, ref, [_diag(ref, "kind", "UnknownKind", msg, "warning")]
        return None, ref, []  # Deployments, Namespaces, ...: not ours to read.
    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        # One diagnostic per field: a union reports each member it tried.
        messages: dict[str, list[str]] = {}
        for err in exc.errors(include_url=False):
            path = _field_path(tuple(err["loc"]))
            if err["msg"] not in messages.setdefault(path, []):
                messages[path].append(err["msg"])
        diags = [
            _diag(ref, path, "InvalidObject", "; or ".join(msgs)) for path, msgs in messages.items()
        ]
        return None, ref, diags
    return obj, ref, []
