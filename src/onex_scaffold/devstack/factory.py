"""The service object of each member: which class runs it, with which options and peers."""

from __future__ import annotations

from onex_scaffold.devstack.base import Service
from onex_scaffold.devstack.consul import ConsulCluster, ConsulService
from onex_scaffold.devstack.errors import UnknownServiceError
from onex_scaffold.devstack.kafka import KafkaCluster, KafkaService
from onex_scaffold.devstack.layout import Layout, index_of, members_of, service_of
from onex_scaffold.devstack.options import SERVICE_ORDER, StackOptions
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, PipelineStageService
from onex_scaffold.devstack.postgres import PostgresService
from onex_scaffold.devstack.registry import RegistryService
from onex_scaffold.devstack.state import ServiceRecord
from onex_scaffold.devstack.tansu import TansuService


class ServiceFactory:
    """Builds the members of one stack; members of a cluster share one cluster object."""

    def __init__(self, options: StackOptions, layout: Layout) -> None:
        self.options = options
        self.layout = layout
        self.kafka_cluster = KafkaCluster(layout.kafka, options.kafka_port)
        self.consul_cluster = (
            ConsulCluster(layout.consul, options.consul_port) if layout.consul > 1 else None
        )

    def build(self, name: str, previous: ServiceRecord | None) -> Service:
        """The service object for member `name`, honouring what ran before where options
        leave it open."""
        service, index = service_of(name), index_of(name)
        if name not in members_of(service, self.layout.size(service)):
            raise UnknownServiceError(
                f"unknown member {name!r}; this stack has: {', '.join(self.all_members())}"
            )
        if service == "kafka":
            kind = self.options.kafka
            if kind is None:
                kind = "tansu" if previous is not None and previous.kind == "tansu" else "apache"
            if kind == "tansu":
                return TansuService(port=self.options.kafka_port)
            return KafkaService(
                port=self.options.kafka_port, cluster=self.kafka_cluster, index=index
            )
        if service == "consul":
            return ConsulService(
                port=self.options.consul_port, cluster=self.consul_cluster, index=index
            )
        if name == "postgres":
            return PostgresService(port=self.options.postgres_port)
        ran_from = previous.cwd if previous is not None else None
        if service == "registry":
            return RegistryService(index=index, size=self.layout.registry, ran_from=ran_from)
        if name in PIPELINE_SERVICES:
            return PipelineStageService(name, ran_from=ran_from)
        raise UnknownServiceError(
            f"unknown service {name!r}; known services: {', '.join(SERVICE_ORDER)}"
        )

    def all_members(self) -> list[str]:
        names: list[str] = []
        for service in SERVICE_ORDER:
            names += members_of(service, self.layout.size(service))
        return names


def build_service(
    name: str, options: StackOptions, previous: ServiceRecord | None, layout: Layout | None = None
) -> Service:
    """The service object for member `name` (see `ServiceFactory.build`)."""
    return ServiceFactory(options, layout or Layout()).build(name, previous)
