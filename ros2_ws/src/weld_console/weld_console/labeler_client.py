"""The labeler's services, awaited from the web server's asyncio loop.

The console is a client of the labeler's existing interfaces (weld_interfaces/srv/Capture and the
session services) and nothing more: it asks, the labeler decides and records, and its answer is
handed to the page verbatim. rclpy answers a request in the executor's thread; the answer is moved
into the web server's loop, so a Capture that takes seconds blocks neither the executor nor the page.
"""

import asyncio
from typing import Any

from rclpy.node import Node

from weld_console.errors import ServiceUnavailableError
from weld_interfaces.srv import (
    Capture,
    ExportSession,
    ListSessions,
    SetContinuousLabel,
    StartSession,
    StopSession,
)

SERVICES: dict[str, Any] = {
    'capture': Capture,
    'start_session': StartSession,
    'stop_session': StopSession,
    'list_sessions': ListSessions,
    'export_session': ExportSession,
    'set_continuous_label': SetContinuousLabel,
}
DISCOVERY_WAIT_S = 5.0


def message_fields(message: Any) -> dict[str, Any]:
    """A service response as plain JSON-able values."""
    fields = {}
    for name in message.get_fields_and_field_types():
        value = getattr(message, name)
        fields[name] = list(value) if not isinstance(value, (str, bytes, int, float, bool)) else value
    return fields


class LabelerClient:
    """One rclpy client per labeler service, made at start (creating clients later races the executor)."""

    def __init__(self, node: Node, labeler_node: str, timeout_s: float) -> None:
        self.prefix = f'/{labeler_node.strip("/")}'
        self.timeout_s = float(timeout_s)
        self._clients = {
            name: node.create_client(srv_type, f'{self.prefix}/{name}') for name, srv_type in SERVICES.items()
        }

    async def _call(self, name: str, request: Any) -> dict[str, Any]:
        client = self._clients[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DISCOVERY_WAIT_S
        while not client.service_is_ready():
            if loop.time() > deadline:
                raise ServiceUnavailableError(
                    f'{self.prefix}/{name} is not offered: is the labeler ({self.prefix}) running?'
                )
            await asyncio.sleep(0.1)
        answer: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if answer.done():
                return
            if result.exception() is not None:
                answer.set_exception(result.exception())
            else:
                answer.set_result(result.result())

        future = client.call_async(request)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(settle, done))
        try:
            response = await asyncio.wait_for(answer, self.timeout_s)
        except asyncio.TimeoutError as exc:
            client.remove_pending_request(future)
            raise ServiceUnavailableError(
                f'{self.prefix}/{name} did not answer within {self.timeout_s:g} s (service_timeout_s)'
            ) from exc
        return message_fields(response)

    async def start_session(self, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._call('start_session', StartSession.Request(**fields))

    async def stop_session(self) -> dict[str, Any]:
        return await self._call('stop_session', StopSession.Request())

    async def capture(self, label: str, count: int, note: str) -> dict[str, Any]:
        return await self._call('capture', Capture.Request(label=label, count=count, note=note))

    async def set_continuous(self, label: str, note: str) -> dict[str, Any]:
        return await self._call('set_continuous_label', SetContinuousLabel.Request(label=label, note=note))

    async def list_sessions(self) -> dict[str, Any]:
        return await self._call('list_sessions', ListSessions.Request())

    async def export_session(self, session_id: str, output_dir: str) -> dict[str, Any]:
        return await self._call(
            'export_session', ExportSession.Request(session_id=session_id, output_dir=output_dir)
        )
