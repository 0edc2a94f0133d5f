"""The live side of the console: what the ROS callbacks learn, handed to the page's WebSockets.

ROS callbacks run in the executor's thread, the web server in its own asyncio loop. :class:`LiveFeed`
is the one crossing point: callbacks :meth:`LiveFeed.publish` messages from any thread, and every
connected page (:class:`Viewer`) keeps only the newest message of each kind until it is sent. A slow
browser therefore holds at most one preview, one result and one status, never a growing queue, and
the camera, labeler and inference never wait for it. Messages published with ``hold=True`` (a result
and the rules' measurements, 15 a second each) do not wake the loop: they travel with the next
preview, or ``hold_s`` later at the latest, so the page gets the newest of each a few times a second
instead of a message per frame.
"""

import asyncio
import contextlib
import json
import struct
import threading
from collections.abc import Mapping
from typing import Any

PREVIEW = 'preview'


class Viewer:
    """One connected page: the newest unsent message of each kind, and an event that says one is there."""

    def __init__(self) -> None:
        self.pending: dict[str, bytes | str] = {}
        self.ready = asyncio.Event()
        self.sent = 0
        self.replaced = 0

    def offer(self, kind: str, message: bytes | str) -> None:
        if kind in self.pending:
            self.replaced += 1
        self.pending[kind] = message
        self.ready.set()

    def take(self) -> list[bytes | str]:
        messages = list(self.pending.values())
        self.pending.clear()
        self.ready.clear()
        self.sent += len(messages)
        return messages


def pack_preview(header: Mapping[str, Any], rgb_jpeg: bytes, depth_jpeg: bytes) -> bytes:
    """One binary WebSocket message: 4-byte big-endian header length, JSON header, rgb JPEG, depth JPEG."""
    text = json.dumps({**header, 'rgb_bytes': len(rgb_jpeg), 'depth_bytes': len(depth_jpeg)}).encode()
    return struct.pack('>I', len(text)) + text + rgb_jpeg + depth_jpeg


class LiveFeed:
    """Latest message of each kind, fanned out to the viewers in the web server's loop; thread-safe."""

    def __init__(self, hold_s: float = 0.2) -> None:
        self.hold_s = float(hold_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._viewers: set[Viewer] = set()
        self._latest: dict[str, bytes | str] = {}
        self._held: dict[str, bytes | str] = {}
        self._flush_due = False
        self._lock = threading.Lock()
        self._viewer_count = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def viewers(self) -> int:
        """Pages connected now (the node renders previews only while this is above 0)."""
        return self._viewer_count

    def join(self) -> Viewer:
        """A new page (call in the loop); it gets the latest message of every kind at once."""
        viewer = Viewer()
        with self._lock:
            latest = dict(self._latest)
        for kind, message in latest.items():
            viewer.offer(kind, message)
        self._viewers.add(viewer)
        self._viewer_count = len(self._viewers)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        self._viewer_count = len(self._viewers)

    def publish(self, kind: str, message: bytes | Mapping[str, Any], hold: bool = False) -> None:
        """From any thread: remember ``message`` as the newest of ``kind`` and offer it to every page,
        now, or with the next message that is sent now (``hold``, ``hold_s`` at the latest)."""
        data: bytes | str = message if isinstance(message, bytes) else json.dumps({'type': kind, **message})
        wake = False
        with self._lock:
            self._latest[kind] = data
            if not self._viewer_count:  # no page: nothing to send, no wake-up
                self._held.clear()
                return
            if hold:
                self._held[kind] = data
                wake, self._flush_due = not self._flush_due, True
                batch: dict[str, bytes | str] = {}
            else:
                batch, self._held = {**self._held, kind: data}, {}
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            if batch:
                loop.call_soon_threadsafe(self._fan_out, batch)
            elif wake:
                loop.call_soon_threadsafe(loop.call_later, self.hold_s, self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch, self._held, self._flush_due = self._held, {}, False
        self._fan_out(batch)

    def _fan_out(self, batch: Mapping[str, bytes | str]) -> None:
        for viewer in list(self._viewers):
            for kind, data in batch.items():
                viewer.offer(kind, data)
