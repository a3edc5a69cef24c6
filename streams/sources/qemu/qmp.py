"""A small client for QEMU's QMP monitor on a unix socket (JSON lines, asyncio).

Only what the QEMU source needs: the capabilities handshake, commands with an id,
and QMP's asynchronous events skipped. No dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson


class QmpError(RuntimeError):
    """QEMU answered a command with an error, or the monitor went away."""


class QmpClient:
    """One QMP session: ``async with QmpClient(path) as qmp: await qmp.execute(...)``."""

    def __init__(self, socket_path: str, timeout_s: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.version: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> QmpClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.socket_path, limit=1 << 22), self.timeout_s)
        greeting = await self._message()
        self.version = greeting.get("QMP", {}).get("version", {})
        await self.execute("qmp_capabilities")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, BrokenPipeError):
                pass  # QEMU quit first
            self._writer = None

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command; its ``return`` value. Events in between are skipped."""
        if self._writer is None:
            raise QmpError("not connected")
        request_id = next(self._ids)
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        self._writer.write(orjson.dumps(request) + b"\n")
        await self._writer.drain()
        while True:
            message = await self._message()
            if message.get("id") != request_id:
                continue  # an event such as SHUTDOWN, or a late answer
            if "error" in message:
                raise QmpError(f"{command}: {message['error'].get('desc', message['error'])}")
            return message.get("return")

    async def _message(self) -> dict[str, Any]:
        assert self._reader is not None
        line = await asyncio.wait_for(self._reader.readline(), self.timeout_s)
        if not line:
            raise QmpError(f"QMP socket {self.socket_path} closed")
        message: dict[str, Any] = orjson.loads(line)
        return message

    async def blockstats(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self.execute("query-blockstats")
        return entries


async def query_blockstats(socket_path: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """One query-blockstats over a short-lived session."""
    async with QmpClient(socket_path, timeout_s) as qmp:
        return await qmp.blockstats()


def qmp_command(socket_path: str, command: str, arguments: dict[str, Any] | None = None,
                timeout_s: float = 10.0) -> Any:
    """One command over a short-lived session, from synchronous code."""
    async def run() -> Any:
        async with QmpClient(socket_path, timeout_s) as qmp:
            return await qmp.execute(command, arguments)

    return asyncio.run(run())
