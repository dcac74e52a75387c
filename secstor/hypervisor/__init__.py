"""Hypervisors that run instances. secstor ships only the Simulator (see simulator.py); a
libvirt/KVM adapter implements the same ``Hypervisor`` interface."""

from __future__ import annotations

from secstor.hypervisor.base import Hypervisor, HypervisorError
from secstor.hypervisor.simulator import Simulator

_HYPERVISORS: dict[str, type[Hypervisor]] = {Simulator.name: Simulator}
DEFAULT = Simulator.name


def for_name(name: str) -> Hypervisor:
    return _HYPERVISORS[name]()


__all__ = ["DEFAULT", "Hypervisor", "HypervisorError", "Simulator", "for_name"]
