"""Shared pieces of the input models.

Foreign CRDs parse with ``extra="ignore"``: a newer Traefik or Kubernetes adding a field must not
break us. Fields we know but do not translate are declared here so the front end can name them in
an ``Unsupported`` diagnostic instead of dropping them silently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
    )


class ObjectMeta(Model):
    name: str = Field(min_length=1)
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    uid: str | None = None
    generation: int | None = None


class Resource(Model):
    """A Kubernetes object: apiVersion, kind, metadata and (for most kinds) spec."""

    api_version: str
    kind: str
    metadata: ObjectMeta

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)
