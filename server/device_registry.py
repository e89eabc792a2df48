"""The device registry: which devices there are, and their limits.

Limits changed by `UpdateLimits` are saved in the store per device and per group
(`cuda` for every GPU, `cpu` for every node's CPU on a cluster), so that they survive a
restart and a device that appears later (a node that joins) gets the limits last set
for its group. A group with no device at all (`cuda` on a host without a GPU) keeps
its limits too, and reports them back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from scheduler import DEFAULT_CPU_LIMITS, DEFAULT_GPU_LIMITS, ArbiterStatistics, Kind, Limits
from scheduler.devices import CPU, device_group, resolve_among
from server.dispatcher import Dispatcher
from server.errors import not_found
from server.store import TaskStore

log = logging.getLogger(__name__)

ALL_GPUS = "cuda"
GROUPS = (ALL_GPUS, CPU)
_GROUP_DEFAULTS = {ALL_GPUS: DEFAULT_GPU_LIMITS, CPU: DEFAULT_CPU_LIMITS}

# (training, inference); None keeps a limit as it is.
LimitChange = tuple[int | None, int | None]


def with_saved_limits(
    defaults: Mapping[str, Limits], saved: Mapping[tuple[str, str], int]
) -> dict[str, Limits]:
    """`defaults` (device -> limits), overridden by limits saved by `UpdateLimits`: the
    device's own, else its group's."""
    limits: dict[str, Limits] = {}
    for device, default in defaults.items():
        values = {"training": default.training, "inference": default.inference}
        for key in (device_group(device), device):
            for kind in values:
                values[kind] = saved.get((key, kind), values[kind]) if key else values[kind]
        limits[device] = Limits(**values)
    return limits


def groups_of(device: str) -> list[str]:
    """The names a device's figures are shown under: its own, and `cuda` for every GPU
    or (on a cluster) `cpu` for every node's CPU."""
    group = device_group(device)
    return [device, group] if group else [device]


class DeviceRegistry:
    """Devices and their limits, kept in step with the arbiter and the store."""

    def __init__(self, store: TaskStore, dispatcher: Dispatcher) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._saved = store.load_limits()

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device jobs may ask for (not those that are leaving)."""
        return self._dispatcher.devices

    def limits(self, device: str) -> Limits:
        return self._dispatcher.arbiter.limits(device)

    def statistics(self) -> ArbiterStatistics:
        """The arbiter's frozen snapshot: every pool's limit, running and waiting."""
        return self._dispatcher.arbiter.statistics()

    def candidates(self, requested: str) -> tuple[str, ...]:
        """The devices a request (`cpu`, `cuda`, `node-2/cpu`...) may use now; () if none."""
        try:
            return resolve_among(requested, self.devices)
        except ValueError:  # DeviceError: a device that is gone
            return ()

    # -- limits ------------------------------------------------------------------------

    def targets(self, name: str) -> tuple[list[str], str]:
        """The devices a limit change for `name` applies to, and the group it is kept
        for ("" for one device). NOT_FOUND for a name that is neither."""
        key = name.strip().lower()
        devices = self.devices
        if key in devices:
            return [key], ""
        if key in GROUPS:
            return [d for d in devices if d != key and key in groups_of(d)], key
        raise not_found(f"unknown device {name!r}; devices here: {', '.join(devices)}")

    def set_limits(
        self, changes: Mapping[str, LimitChange], groups: Mapping[str, LimitChange]
    ) -> None:
        """Applies and saves limit changes per device, and saves those for groups (for
        devices that join later). Growing admits waiting tasks at once; shrinking stops
        no running task."""
        for device, (training, inference) in changes.items():
            self._dispatcher.set_limits(device, training=training, inference=inference)
        for key, (training, inference) in {**groups, **changes}.items():
            for kind, value in (("training", training), ("inference", inference)):
                if value is not None:
                    self._store.save_limit(key, kind, value)
                    self._saved[(key, kind)] = value

    def group_limits(self, group: str) -> Limits | None:
        """The limits saved for a group, over its defaults; None if none were saved."""
        default = _GROUP_DEFAULTS[group]
        if not any((group, kind.value) in self._saved for kind in Kind):
            return None
        return Limits(
            training=self._saved.get((group, "training"), default.training),
            inference=self._saved.get((group, "inference"), default.inference),
        )

    # -- devices that come and go (a Ray cluster's nodes) ------------------------------

    def add_devices(self, defaults: Mapping[str, Limits]) -> None:
        """New devices with their default limits, or the limits saved for them; waiting
        tasks that may use them start at once."""
        self._dispatcher.add_devices(with_saved_limits(defaults, self._saved).items())

    def hold_devices(self, devices: Iterable[str]) -> None:
        """Nothing new starts on `devices` (their node is leaving); not saved."""
        for device in devices:
            if device in self.devices:
                self._dispatcher.set_limits(device, training=0, inference=0)

    def remove_devices(self, devices: Sequence[str], why: str) -> None:
        """Forgets `devices` (the jobs that ran there have ended). A waiting job that
        could run only there fails with `why`; others keep their place."""
        for device in devices:
            try:
                self._dispatcher.remove_device(device, why)
            except (KeyError, ValueError) as exc:
                log.error("cannot remove device %s: %s", device, exc)
