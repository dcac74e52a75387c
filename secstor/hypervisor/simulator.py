"""The Simulator hypervisor: it holds state only.

Nothing is executed: no process starts, no guest reads or writes its disks. "Running" is a row in
the database. It exists so that the volume life cycle CloudStack ties to instances (a ROOT disk
made from a template, attach/detach, stop before revert) can be driven through the API.
"""

from __future__ import annotations

from secstor.hypervisor.base import DiskSpec, Hypervisor, InstanceSpec


class Simulator(Hypervisor):
    name = "Simulator"

    def start(self, instance: InstanceSpec) -> None:
        pass

    def stop(self, instance: InstanceSpec, forced: bool) -> None:
        pass

    def attach(self, instance: InstanceSpec, disk: DiskSpec) -> None:
        pass

    def detach(self, instance: InstanceSpec, disk: DiskSpec) -> None:
        pass
