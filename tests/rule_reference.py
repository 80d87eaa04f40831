"""Reference evaluator for Traefik rules: what Traefik does with one request.

It follows Traefik's matchers (``pkg/muxer/http/matcher.go`` and ``matcher_v2.go``, the
gorilla/mux fork for v2) and Go's ``net/http`` / ``net/url`` request handling, so that the
conformance vectors can be checked and the translator's output compared against it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from translators.rules import (
    And,
    Expr,
    Matcher,
    Not,
    Or,
    Syntax,
    TemplateKind,
    compile_go_regex,
    routing_path,
    v2_query_pairs,
    v2_template_to_regex,
)

__all__ = ["Request", "canonical_header_key", "evaluate", "request_from_vector"]


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request as Traefik's router sees it.

    ``host`` is Go's ``req.Host`` (authority of an absolute target, else the Host header),
    ``path`` the escaped path (Go's ``URL.EscapedPath()``, no query), ``query`` the raw query
    string, ``headers`` one entry per header line (the Host header is not among them, as in Go),
    ``remote_ip`` the client address without its port.
    """

    method: str
    host: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    remote_ip: str


# --------------------------------------------------------------------------------------------
# Go helpers


def go_split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``; None where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        return None
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != i:
            return None
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            return None
    if "[" in hostport[j:] or "]" in hostport[k:]:
        return None
    return host, hostport[i + 1 :]


_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
_GO_SPACE += "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _go_lower(s: str) -> str:
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in s)


def _go_upper(s: str) -> str:
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)


def _go_equal_fold(a: str, b: str) -> bool:
    fold = {"\u017f": "s", "\u212a": "k"}
    return [fold.get(c, c.lower()) for c in a] == [fold.get(c, c.lower()) for c in b]


def canonical_host(raw_host: str) -> str:
    """Traefik's request decorator: host without port and brackets, trimmed, lower-cased."""
    host = raw_host
    if ":" in raw_host:
        split = go_split_host_port(raw_host)
        if split is not None:
            host = split[0]
        elif raw_host.startswith("[") and raw_host.endswith("]"):
            host = raw_host[1:-1]
    return _go_lower(host.strip(_GO_SPACE))


def mux_host(raw_host: str) -> str:
    """gorilla/mux's ``parseHost``: the host without its port (nothing else)."""
    if ":" not in raw_host:
        return raw_host
    split = go_split_host_port(raw_host)
    return raw_host if split is None else split[0]


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def canonical_header_key(name: str) -> str:
    """Go's ``http.CanonicalHeaderKey``."""
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _unescape(s: str, plus_is_space: bool) -> str | None:
    """Go's ``url.PathUnescape`` / ``url.QueryUnescape``; None on a bad escape."""
    data = s.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x25:
            hexpart = data[i + 1 : i + 3]
            if len(hexpart) < 2 or not all(chr(h) in "0123456789abcdefABCDEF" for h in hexpart):
                return None
            out.append(int(hexpart, 16))
            i += 3
            continue
        out.append(0x20 if plus_is_space and b == 0x2B else b)
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _should_escape_path(b: int) -> bool:
    c = chr(b)
    if c.isascii() and c.isalnum():
        return False
    if c in "-_.~":
        return False
    if c in "$&+,/:;=?@":
        return c == "?"
    return True


def _valid_encoded_path(s: str) -> bool:
    for b in s.encode("utf-8", "surrogateescape"):
        c = chr(b)
        if c in "!$&'()*+,;=:@[]%":
            continue
        if _should_escape_path(b):
            return False
    return True


def go_escaped_path(raw_path: str) -> str:
    """Go's ``URL.EscapedPath()`` for a request target whose path was ``raw_path``."""
    path = _unescape(raw_path, plus_is_space=False)
    if path is None:
        raise ValueError(f"invalid escape in path {raw_path!r} (Go answers 400)")
    if _valid_encoded_path(raw_path):
        return raw_path
    if path == "*":
        return "*"
    out = []
    for b in path.encode("utf-8", "surrogateescape"):
        out.append(f"%{b:02X}" if _should_escape_path(b) else chr(b))
    return "".join(out)


def go_parse_query(raw_query: str) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery`` (invalid pairs are skipped, as ``URL.Query()`` does)."""
    values: dict[str, list[str]] = {}
    for part in raw_query.split("&"):
        if ";" in part or part == "":
            continue
        raw_key, _, raw_value = part.partition("=")
        key = _unescape(raw_key, plus_is_space=True)
        value = _unescape(raw_value, plus_is_space=True)
        if key is None or value is None:
            continue
        values.setdefault(key, []).append(value)
    return values


def _go_ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``net.ParseIP`` semantics with IPv4-mapped IPv6 addresses turned into IPv4."""
    if not s or not s.isascii():
        return None
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            ip = ipaddress.IPv6Address(s.split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _ip_entry_matches(entry: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """One ``ip.Checker`` entry (an IP or a CIDR) against a client IP (Go's net.IP rules)."""
    if "/" not in entry or _go_ip(entry) is not None:
        return _go_ip(entry) == client
    addr, _, bits_text = entry.partition("/")
    bits = int(bits_text)
    network = ipaddress.ip_network(f"{ipaddress.ip_address(addr)}/{bits}", strict=False)
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and bits >= 96:
            network = ipaddress.ip_network(f"{mapped}/{bits - 96}")
    return client.version == network.version and client in network


# --------------------------------------------------------------------------------------------
# Requests from the corpus

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def request_from_vector(vec: dict[str, Any]) -> Request:
    """Build a :class:`Request` from a corpus request entry (see the corpus README)."""
    target: str = vec["url"]
    authority = ""
    rest = target
    scheme = _SCHEME.match(target)
    if scheme:
        rest = target[scheme.end() :]
    rest, _, query = rest.partition("?")
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        authority = authority.rpartition("@")[2]
    host = authority or (vec.get("host") or "")
    headers = tuple(
        (name, value)
        for name, values in vec.get("headers", {}).items()
        if canonical_header_key(name) != "Host"
        for value in values
    )
    remote = vec.get("remote_addr") or ""
    split = go_split_host_port(remote)
    return Request(
        method=vec["method"],
        host=host,
        path=go_escaped_path(rest),
        query=query,
        headers=headers,
        remote_ip=remote if split is None else split[0],
    )


# --------------------------------------------------------------------------------------------
# Evaluation


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> Any:
    return compile_go_regex(pattern)


def _search(pattern: str, text: str) -> bool:
    return _regex(pattern).search(text) is not None


def _header_values(request: Request, name: str) -> list[str]:
    key = canonical_header_key(name)
    return [v for n, v in request.headers if canonical_header_key(n) == key]


def _domain_match(domain: str, expr: str) -> bool:
    if expr.startswith("*"):
        labels = domain.split(".")
        labels[0] = "*"
        return _go_equal_fold(expr, ".".join(labels))
    return _go_equal_fold(domain, expr)


def _host_v3(expr: str, request: Request) -> bool:
    if expr == "*":
        return True
    expr = _go_lower(expr)
    host = canonical_host(request.host)
    if not host:
        return False
    if _domain_match(host, expr):
        return True
    if expr.endswith(".") and _domain_match(host, expr[:-1]):
        return True
    return host.endswith(".") and _domain_match(host[:-1], expr)


def _host_v2(hosts: tuple[str, ...], request: Request) -> bool:
    host = canonical_host(request.host)
    if not host:
        return False
    for h in (_go_lower(h) for h in hosts):
        if host == h or (h.endswith(".") and host == h[:-1]):
            return True
        if host.endswith(".") and host[:-1] == h:
            return True
    return False


def _client_ip(entries: tuple[str, ...], request: Request) -> bool:
    client = _go_ip(request.remote_ip)
    if client is None:
        return False
    return any(_ip_entry_matches(entry, client) for entry in entries)


def _query_v2(args: tuple[str, ...], request: Request) -> bool:
    values = go_parse_query(request.query)
    for key, value in v2_query_pairs(args):
        template = f"{key}={value}"
        template_key = template.split("=", 1)[0]
        found = values.get(template_key)
        text = f"{template_key}={found[0]}" if found else ""
        if not _search(v2_template_to_regex(template, "query"), text):
            return False
    return True


def _pairs_v2(args: tuple[str, ...], request: Request, regex: bool) -> bool:
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    for key, value in pairs.items():
        values = _header_values(request, key)
        if not values:
            return False
        if regex and not any(_search(value, v) for v in values):
            return False
        if not regex and value not in values:
            return False
    return True


def _match_v3(m: Matcher, request: Request) -> bool:
    name, args = m.name, m.args
    if name == "Host":
        return _host_v3(args[0], request)
    if name == "HostRegexp":
        # Traefik also tries the CNAME-flattened host, which is "" unless CNAME flattening is
        # on: a regex that matches the empty string matches every request.
        host = canonical_host(request.host)
        return _search(args[0], host) or _search(args[0], "")
    if name in ("Path", "PathPrefix", "PathRegexp"):
        path = routing_path(request.path)
        if name == "Path":
            return path == args[0]
        if name == "PathPrefix":
            return path.startswith(args[0])
        return _search(args[0], path)
    if name == "Method":
        return _go_upper(args[0]) == request.method
    if name == "Header":
        return args[1] in _header_values(request, args[0])
    if name == "HeaderRegexp":
        return any(_search(args[1], v) for v in _header_values(request, args[0]))
    if name in ("Query", "QueryRegexp"):
        values = go_parse_query(request.query).get(args[0])
        if values is None:
            return False
        if name == "Query" or len(args) == 1:
            return (args[1] if len(args) == 2 else "") in values
        return any(_search(args[1], v) for v in values)
    if name == "ClientIP":
        return _client_ip(args, request)
    raise ValueError(f"not a v3 matcher: {name}")


def _match_v2(m: Matcher, request: Request) -> bool:
    name, args = m.name, m.args
    if name in ("Host", "HostHeader"):
        return _host_v2(args, request)
    if name == "HostRegexp":
        host = mux_host(request.host)
        return any(_search(v2_template_to_regex(a, "host"), host) for a in args)
    if name in ("Path", "PathPrefix"):
        path = routing_path(request.path)
        kind: TemplateKind = "path" if name == "Path" else "pathprefix"
        return any(_search(v2_template_to_regex(a, kind), path) for a in args)
    if name == "Method":
        return request.method in {_go_upper(a) for a in args}
    if name == "Headers":
        return _pairs_v2(args, request, regex=False)
    if name == "HeadersRegexp":
        return _pairs_v2(args, request, regex=True)
    if name == "Query":
        return _query_v2(args, request)
    if name == "ClientIP":
        return _client_ip(args, request)
    raise ValueError(f"not a v2 matcher: {name}")


def evaluate(expr: Expr, syntax: Syntax, request: Request) -> bool:
    """Does Traefik route ``request`` to a router whose rule is ``expr`` (parsed with
    ``syntax``)?"""
    if isinstance(expr, Matcher):
        return _match_v3(expr, request) if syntax == "v3" else _match_v2(expr, request)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, syntax, request)
    if isinstance(expr, And):
        return evaluate(expr.left, syntax, request) and evaluate(expr.right, syntax, request)
    if isinstance(expr, Or):
        return evaluate(expr.left, syntax, request) or evaluate(expr.right, syntax, request)
    raise TypeError(f"not an expression: {expr!r}")
