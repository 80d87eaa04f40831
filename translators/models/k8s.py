"""The core Kubernetes kinds Switchman reads: Service, EndpointSlice, Secret, ConfigMap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from translators.models.base import Model, Resource

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ServicePort(Model):
    name: str = ""
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = None
    protocol: str = "TCP"
    node_port: int | None = None
    app_protocol: str | None = None


class ServiceSpec(Model):
    type: str = "ClusterIP"
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    external_name: str | None = None


class Service(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class EndpointConditions(Model):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(Model):
    addresses: list[str] = Field(min_length=1)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None


class EndpointPort(Model):
    name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: str = "TCP"
    app_protocol: str | None = None


class EndpointSlice(Resource):
    api_version: Literal["discovery.k8s.io/v1"] = "discovery.k8s.io/v1"
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    address_type: str = "IPv4"
    endpoints: list[Endpoint] | None = None
    ports: list[EndpointPort] | None = None

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)


class Secret(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)


class ConfigMap(Resource):
    """Read only as a source of CA certificates (a ServersTransport's ``rootCAs[].configMap``)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] = Field(default_factory=dict)
