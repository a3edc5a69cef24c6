"""What produces events registers its volumes first (as admin): `ioacct produce --register`
(by default with `--sim`), `make run`, the bench. Each volume is registered to the tenant
its events claim before the first of them is sent, so the worker counts them; a volume
registered to another tenant already is left as it is (its events are dead-lettered)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.config import Settings
from streams.core.events import IoEvent
from streams.core.registry import REGISTRY_OFF, VolumeRegistry
from streams.kafka.registry import RegisterReport, read_registry, register_volumes

ADMIN_USER = "admin"  # the local broker's super user (kafka/local.py)


class Registrar:
    """Registers the volumes of the events it is shown, once each."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.report = RegisterReport()
        self._seen: set[str] = set()
        self._registry: VolumeRegistry | None = None

    async def ensure(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Register the (volume, tenant) pairs not seen before, in order of appearance."""
        new = [p for p in dict.fromkeys(pairs) if p[0] not in self._seen]
        if not new:
            return
        if self._registry is None:
            self._registry = await read_registry(self.settings)
        done = await register_volumes(self.settings, new, self._registry)
        self.report.registered += done.registered
        self.report.unchanged += done.unchanged
        self.report.refused += done.refused
        self._seen.update(volume for volume, _ in new)

    async def ensure_events(self, events: Iterable[IoEvent]) -> None:
        await self.ensure((e.volume_id, e.tenant_id) for e in events)


def may_register(settings: Settings) -> bool:
    """Whether this login may write the registry (the admin, or a broker without security)."""
    return (settings.kafka_security.upper() == "PLAINTEXT"
            or settings.kafka_user == ADMIN_USER)


def registrar_for(args: Any, settings: Settings) -> tuple[Registrar | None, str | None]:
    """`ioacct produce`'s registrar (None: it registers nothing) and a hint to print.
    ``--register``/``--no-register`` decide; by default only the simulator registers, and
    only when this login may."""
    if settings.volume_registry == REGISTRY_OFF or args.register is False:
        return None, None
    if args.register:
        return Registrar(settings), None
    if not args.sim:
        return None, None
    if may_register(settings):
        return Registrar(settings), None
    return None, (f"note: the simulated volumes are not registered ({settings.kafka_user} is "
                  "not admin): the worker dead-letters their events until an admin runs "
                  "`ioacct volume register VOL --tenant T` or `ioacct produce --sim` for them")
