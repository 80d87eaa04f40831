"""Diagnostics: what translation tells the user about their objects.

Three kinds of failure, three behaviours (DESIGN.md §6)::

    Diagnostic                      data, never raised; collected, reported, counted
    ├── severity "error"            a user error: the object or rule is skipped, the rest translate
    │   reasons: InvalidYAML, InvalidObject, InvalidRule, ServiceNotFound, PortNotFound,
    │            MiddlewareNotFound, EntryPointNotFound, CrossNamespaceRefused, EmptyService, ...
    ├── severity "error", reason "Unsupported"
    │                               a field we understand but cannot translate the Traefik way;
    │                               the route is not served when serving it would be unsafe
    └── severity "warning"          translated, but the user should know (e.g. Ignored fields)

    TranslationError(Exception)     a system error (a bug, an inconsistent snapshot): nothing is
                                    published and the last good snapshot keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class SourceRef:
    """Where an object came from: enough to point a user at it."""

    kind: str = ""
    namespace: str = ""
    name: str = ""
    api_version: str = ""
    file: str = ""
    line: int = 0

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.file and self.line else self.file
        obj = f"{self.kind} {self.namespace}/{self.name}" if self.kind else ""
        return ", ".join(part for part in (where, obj) if part)


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Diagnostic:
    source: SourceRef
    field: str
    reason: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.severity}: {self.source.describe()}:{field} {self.message} [{self.reason}]"

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "reason": self.reason,
            "kind": self.source.kind,
            "namespace": self.source.namespace,
            "name": self.source.name,
            "file": self.source.file,
            "line": self.source.line,
            "field": self.field,
            "message": self.message,
        }


def diagnostic(
    source: SourceRef, field: str, reason: str, message: str, severity: str = "error"
) -> Diagnostic:
    """A Diagnostic; ``severity`` is "warning" or anything else for "error"."""
    return Diagnostic(
        source=source,
        field=field,
        reason=reason,
        message=message,
        severity="warning" if severity == "warning" else "error",
    )


class TranslationError(Exception):
    """A system error during translation: nothing may be published."""
