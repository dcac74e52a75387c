"""The interface between instance operations and whatever runs the instances."""

from __future__ import annotations

import abc
from dataclasses import dataclass


class HypervisorError(Exception):
    """The hypervisor could not do what was asked; the instance keeps its previous state."""


@dataclass(frozen=True)
class DiskSpec:
    """A disk as the hypervisor sees it: the file, its format and its place on the bus."""

    volume_uuid: str
    file: str
    format: str
    device_id: int


@dataclass(frozen=True)
class InstanceSpec:
    uuid: str
    name: str
    disks: tuple[DiskSpec, ...]


class Hypervisor(abc.ABC):
    """Called by the instance service after the database says the operation may happen and
    before it records the new state; raising HypervisorError rolls the state back."""

    name: str

    @abc.abstractmethod
    def start(self, instance: InstanceSpec) -> None: ...

    @abc.abstractmethod
    def stop(self, instance: InstanceSpec, forced: bool) -> None: ...

    @abc.abstractmethod
    def attach(self, instance: InstanceSpec, disk: DiskSpec) -> None:
        """Hot-plug ``disk`` into a running instance."""

    @abc.abstractmethod
    def detach(self, instance: InstanceSpec, disk: DiskSpec) -> None:
        """Hot-unplug ``disk`` from a running instance."""
