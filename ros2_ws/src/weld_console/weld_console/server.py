"""The console's HTTP and WebSocket server (aiohttp), in its own thread and asyncio loop.

ROS-free: it is handed the labeler client (:class:`LabelerCalls`), the live feed, the review queue
and recorder, the models panel and a :class:`ConsoleState` by the node, and turns HTTP requests
into calls on them. Who may call what is :mod:`weld_console.security`; every refusal is a JSON
``{"error": ...}`` with the message the operator should read, and nothing is changed by a refused
request (checks run before a body is read).

Routes (``/api/...`` and ``/ws`` need the token when the console is not on loopback):

    GET  /                                 the page; /static/<file> its modules and style
    GET  /api/config                       classes, limits, whether a token is needed (public)
    GET  /ws                               live feed (first message: {"type": "hello", "token": ...})
    GET  /api/state                        labeler, inference, review and capture status
    POST /api/session/start | /api/session/stop | /api/capture | /api/continuous
    GET  /api/sessions                     labeler and review sessions, frames per class
    POST /api/sessions/<id>/export         -> {"download": "/api/exports/<id>.tar.gz"}
    GET  /api/exports/<name>.tar.gz
    GET  /api/review                       the queue, most informative first
    GET  /api/review/<item>/rgb.jpg | depth.jpg
    POST /api/review/<item>/label | /api/review/<item>/discard | /api/review/finish
    POST /api/review/sessions/<id>/export
    GET  /api/models                       running model, files, rejected files and why
    POST /api/models/upload?name=<file>    the file as the body (application/octet-stream)
    POST /api/models/select                {"name": <file>}
"""

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from weld_console import security
from weld_console.errors import ConsoleError, NotFoundError
from weld_console.feed import LiveFeed
from weld_console.models_panel import InferenceView, ModelsPanel
from weld_console.review import ReviewQueue, ReviewRecorder
from weld_core.errors import WeldError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_BODY_LIMIT = 64 * 1024
HELLO_TIMEOUT_S = 10.0
STATIC_TYPES = {'.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css'}
SECURITY_HEADERS = {
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
    'Content-Security-Policy': "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class LabelerCalls(Protocol):
    """The labeler's services, awaited (the node implements them with rclpy clients)."""

    async def start_session(self, fields: dict[str, Any]) -> dict[str, Any]: ...
    async def stop_session(self) -> dict[str, Any]: ...
    async def capture(self, label: str, count: int, note: str) -> dict[str, Any]: ...
    async def set_continuous(self, label: str, note: str) -> dict[str, Any]: ...
    async def list_sessions(self) -> dict[str, Any]: ...
    async def export_session(self, session_id: str, output_dir: str) -> dict[str, Any]: ...


class ConsoleState(Protocol):
    """What the node knows from the topics, for the page."""

    def snapshot(self) -> dict[str, Any]: ...
    def inference_view(self) -> InferenceView: ...
    def session_counts(self, session_id: str, active: bool) -> dict[str, int]: ...


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    token: str  # '' when no token is required
    classes: tuple[str, ...]
    export_dir: Path
    max_upload_bytes: int
    page_config: dict[str, Any] = field(default_factory=dict)  # extra keys of /api/config

    @property
    def token_required(self) -> bool:
        return bool(self.token)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({'error': message}, status=status)


def _web_file(name: str) -> bytes:
    return resources.files('weld_console').joinpath('web').joinpath(name).read_bytes()  # 3.10: one part


class ConsoleServer:
    """Builds the aiohttp application and runs it in a thread of its own."""

    def __init__(
        self,
        settings: ServerSettings,
        feed: LiveFeed,
        labeler: LabelerCalls,
        state: ConsoleState,
        review_queue: ReviewQueue,
        review_recorder: ReviewRecorder,
        models: ModelsPanel,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.labeler = labeler
        self.state = state
        self.review_queue = review_queue
        self.review_recorder = review_recorder
        self.models = models
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._static = {
            name: (_web_file(name), STATIC_TYPES[Path(name).suffix])
            for name in ('index.html', 'console.js', 'style.css')
        }

    # --- lifecycle ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=JSON_BODY_LIMIT)
        get, post = web.get, web.post
        app.add_routes(
            [
                get('/', self._index),
                get('/static/{name}', self._static_file),
                get('/api/config', self._config),
                get('/ws', self._websocket),
                get('/api/state', self._get_state),
                post('/api/session/start', self._session_start),
                post('/api/session/stop', self._session_stop),
                post('/api/capture', self._capture),
                post('/api/continuous', self._continuous),
                get('/api/sessions', self._sessions),
                post('/api/sessions/{session_id}/export', self._session_export),
                get('/api/exports/{name}', self._download),
                get('/api/review', self._review),
                get('/api/review/{item_id}/{image}', self._review_image),
                post('/api/review/finish', self._review_finish),
                post('/api/review/{item_id}/label', self._review_label),
                post('/api/review/{item_id}/discard', self._review_discard),
                post('/api/review/sessions/{session_id}/export', self._review_export),
                get('/api/models', self._models),
                post('/api/models/upload', self._model_upload),
                post('/api/models/select', self._model_select),
            ]
        )
        return app

    def start(self, timeout_s: float = 30.0) -> int:
        """Bind and serve in a background thread; returns the port (raises what binding raised)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self.feed.attach(loop)
            ready.set()
            try:
                loop.run_until_complete(self._serve_until_stopped())
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name='console-http', daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise ConsoleError(f'the web server did not start within {timeout_s:g} s')
        if failure:
            raise failure[0]
        return self.port

    async def _bind(self) -> None:
        self._stopped = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConsoleError(
                f'cannot listen on {self.settings.host}:{self.settings.port} ({exc.strerror or exc}): '
                'another program has the port; set the port parameter (0 = any free port)'
            ) from exc
        server = site._server  # aiohttp keeps the listening sockets here; the port is needed for port 0
        sockets = getattr(server, 'sockets', None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(self.settings.port)

    async def _serve_until_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    # --- the guard: host, token, cross-site, errors ----------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._checked(request, handler)
        except web.HTTPException as exc:
            response = _error(exc.status, exc.reason) if exc.status >= 400 else exc
        except ConsoleError as exc:
            response = _error(exc.status, str(exc))
        except WeldError as exc:  # the labeler's and weld_core's own errors: the operator's to fix
            response = _error(400, str(exc))
        except OSError as exc:  # a full or read-only disk, a file removed meanwhile: say which
            response = _error(500, f'{type(exc).__name__}: {exc}')
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get('Host')
        if not security.host_allowed(host, self.settings.host):
            return _error(403, f'host {host!r} is not this console: open it as http://127.0.0.1:{self.port}/')
        path = request.path
        needs_token = self.settings.token_required and path.startswith('/api/') and path != '/api/config'
        if needs_token and not security.token_matches(
            self.settings.token, request.headers.get('Authorization')
        ):
            return _error(401, 'a valid console token is needed (Authorization: Bearer <token>)')
        if request.method not in ('GET', 'HEAD'):
            refusal = self._cross_site_refusal(request)
            if refusal:
                return _error(*refusal)
        return await handler(request)

    def _cross_site_refusal(self, request: web.Request) -> tuple[int, str] | None:
        host = request.headers.get('Host')
        if request.headers.get('Sec-Fetch-Site', 'same-origin') not in ('same-origin', 'none'):
            return 403, 'cross-site request refused'
        if not security.same_origin(request.headers.get('Origin'), host, request.scheme):
            return 403, f'cross-site request refused (Origin {request.headers.get("Origin")!r})'
        wanted = 'application/octet-stream' if request.path == '/api/models/upload' else 'application/json'
        if request.content_type != wanted:
            return 415, f'send the body as {wanted}'
        return None

    # --- page -------------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        body, content_type = self._static['index.html']
        return web.Response(body=body, content_type=content_type, charset='utf-8')

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info['name']
        if name not in self._static or name == 'index.html':
            raise NotFoundError(f'no page file {name!r}')
        body, content_type = self._static[name]
        return web.Response(body=body, content_type=content_type, charset='utf-8')

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                'classes': list(self.settings.classes),
                'token_required': self.settings.token_required,
                'max_upload_bytes': self.settings.max_upload_bytes,
                **self.settings.page_config,
            }
        )

    # --- live feed --------------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not security.same_origin(
            request.headers.get('Origin'), request.headers.get('Host'), request.scheme
        ):
            return _error(403, 'cross-site WebSocket refused')
        # no per-message deflate: the feed is mostly JPEG bytes, which zlib only spends CPU on
        socket = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, compress=False)
        await socket.prepare(request)
        if self.settings.token_required and not await self._hello(socket):
            await socket.close(code=4401, message=b'a valid console token is needed')
            return socket
        viewer = self.feed.join()
        sender = asyncio.ensure_future(self._send_loop(socket, viewer))
        try:
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            self.feed.leave(viewer)
        return socket

    async def _hello(self, socket: web.WebSocketResponse) -> bool:
        try:
            message = await asyncio.wait_for(socket.receive(), HELLO_TIMEOUT_S)
            hello = json.loads(message.data) if message.type == WSMsgType.TEXT else {}
        except (asyncio.TimeoutError, ValueError):
            return False
        token = str(hello.get('token', '')) if isinstance(hello, dict) else ''
        return security.token_matches(self.settings.token, f'Bearer {token}')

    async def _send_loop(self, socket: web.WebSocketResponse, viewer: Any) -> None:
        while not socket.closed:
            await viewer.ready.wait()
            for message in viewer.take():
                if isinstance(message, bytes):
                    await socket.send_bytes(message)
                else:
                    await socket.send_str(message)

    # --- labelling --------------------------------------------------------------------------------
    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ConsoleError(f'the request body is not JSON: {exc}') from exc
        if not isinstance(body, dict):
            raise ConsoleError('the request body must be a JSON object')
        return body

    async def _session_start(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        fields = {
            key: str(body.get(key, ''))
            for key in ('name', 'operator_name', 'material', 'process', 'wire', 'note')
        }
        try:
            fields['current_a'] = float(body.get('current_a') or 0.0)
        except (TypeError, ValueError) as exc:
            raise ConsoleError(
                f'current_a must be a number of amperes, got {body.get("current_a")!r}'
            ) from exc
        return self._answer(await self.labeler.start_session(fields))

    async def _session_stop(self, request: web.Request) -> web.Response:
        await self._body(request)
        return self._answer(await self.labeler.stop_session())

    async def _capture(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            count = int(body.get('count', 1))
        except (TypeError, ValueError) as exc:
            raise ConsoleError(f'count must be a whole number, got {body.get("count")!r}') from exc
        if count < 1:
            raise ConsoleError(f'count must be at least 1, got {count}')
        return self._answer(
            await self.labeler.capture(str(body.get('label', '')), count, str(body.get('note', '')))
        )

    async def _continuous(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return self._answer(
            await self.labeler.set_continuous(str(body.get('label', '')), str(body.get('note', '')))
        )

    @staticmethod
    def _answer(answer: dict[str, Any]) -> web.Response:
        """A service answer as it came (its message verbatim); 409 when the service said no."""
        return web.json_response(answer, status=200 if answer.get('success', True) else 409)

    async def _sessions(self, request: web.Request) -> web.Response:
        listed = await self.labeler.list_sessions()
        active = listed.get('active_session_id', '')
        sessions = [
            {
                'kind': 'labeler',
                'session_id': session_id,
                'pairs_recorded': pairs,
                'active': session_id == active,
                'label_counts': self.state.session_counts(session_id, session_id == active),
            }
            for session_id, pairs in zip(listed['session_ids'], listed['pairs_recorded'], strict=True)
        ]
        for info in await self._in_thread(self.review_recorder.sessions):
            sessions.append(
                {
                    'kind': 'review',
                    'session_id': info.session_id,
                    'pairs_recorded': info.pairs_recorded,
                    'active': self.review_recorder.session is not None
                    and self.review_recorder.session.session_id == info.session_id,
                    'label_counts': dict(info.label_counts),
                }
            )
        return web.json_response({'active_session_id': active, 'sessions': sessions})

    async def _session_export(self, request: web.Request) -> web.Response:
        session_id = security.check_safe_id(request.match_info['session_id'], 'session')
        await self._body(request)
        answer = await self.labeler.export_session(session_id, str(self.settings.export_dir))
        if not answer.get('success'):
            return self._answer(answer)
        return web.json_response({**answer, 'download': self._download_url(Path(answer['archive_path']))})

    def _download_url(self, archive: Path) -> str:
        exports = self.settings.export_dir.expanduser().resolve()
        if archive.resolve().parent != exports:
            raise ConsoleError(f'{archive} is not in the console export folder {exports}')
        return f'/api/exports/{archive.name}'

    async def _download(self, request: web.Request) -> web.StreamResponse:
        name = security.check_safe_id(request.match_info['name'], 'archive')
        if not name.endswith('.tar.gz'):
            raise NotFoundError(f'{name} is not a session archive')
        path = self.settings.export_dir.expanduser() / name
        if not path.is_file():
            raise NotFoundError(f'no archive {name} in the export folder')
        return web.FileResponse(
            path,
            headers={
                'Content-Disposition': f'attachment; filename="{name}"',
                'Content-Type': 'application/gzip',
            },
        )

    # --- review queue -----------------------------------------------------------------------------
    async def _review(self, request: web.Request) -> web.Response:
        items = [{**item.as_dict(), 'why': item.describe()} for item in self.review_queue.items()]
        open_session = self.review_recorder.session
        return web.json_response(
            {
                'items': items,
                'max_items': self.review_queue.max_items,
                'open_session': open_session.to_dict() if open_session else None,
            }
        )

    async def _review_image(self, request: web.Request) -> web.StreamResponse:
        item_id = security.check_safe_id(request.match_info['item_id'], 'review item')
        image = request.match_info['image']
        if image not in ('rgb.jpg', 'depth.jpg'):
            raise NotFoundError(f'no review image {image!r}')
        path = self.review_queue.path(item_id, image)
        return web.Response(body=await self._in_thread(path.read_bytes), content_type='image/jpeg')

    async def _review_label(self, request: web.Request) -> web.Response:
        item_id = security.check_safe_id(request.match_info['item_id'], 'review item')
        label = str((await self._body(request)).get('label', ''))
        session = await self._in_thread(self.review_recorder.record, self.review_queue, item_id, label)
        return web.json_response(
            {
                'success': True,
                'message': f'labelled {label}: {session.labels_recorded} frame(s) in review session '
                f'{session.session_id}',
                'session': session.to_dict(),
            }
        )

    async def _review_discard(self, request: web.Request) -> web.Response:
        item_id = security.check_safe_id(request.match_info['item_id'], 'review item')
        await self._body(request)
        self.review_queue.remove(item_id)
        return web.json_response({'success': True, 'message': f'review item {item_id} discarded'})

    async def _review_finish(self, request: web.Request) -> web.Response:
        await self._body(request)
        session = await self._in_thread(self.review_recorder.finish)
        return web.json_response(
            {
                'success': True,
                'message': f'review session {session.session_id} closed: '
                f'{session.labels_recorded} labelled frames',
                'session': session.to_dict(),
            }
        )

    async def _review_export(self, request: web.Request) -> web.Response:
        session_id = security.check_safe_id(request.match_info['session_id'], 'session')
        await self._body(request)
        archive = await self._in_thread(
            self.review_recorder.export, session_id, self.settings.export_dir.expanduser()
        )
        return web.json_response(
            {'success': True, 'message': f'exported to {archive}', 'download': self._download_url(archive)}
        )

    # --- models -----------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        listing = await self._in_thread(self.models.listing, self.state.inference_view())
        return web.json_response(listing)

    async def _model_upload(self, request: web.Request) -> web.Response:
        name = request.query.get('name', '')
        limit = self.settings.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(
                413, f'the file is {request.content_length} bytes, the limit is {limit} (max_upload_mb)'
            )
        with self.models.upload_file() as staged:
            size = 0
            with staged.open('wb') as handle:
                async for chunk in request.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > limit:
                        return _error(
                            413, f'the file is larger than the limit of {limit} bytes (max_upload_mb)'
                        )
                    handle.write(chunk)
            if size == 0:
                raise ConsoleError('the upload is empty: choose an exported .onnx file')
            installed = await self._in_thread(self.models.install, staged, name)
        return web.json_response({'success': True, 'message': f'installed {installed["name"]}', **installed})

    async def _model_select(self, request: web.Request) -> web.Response:
        name = str((await self._body(request)).get('name', ''))
        selected = await self._in_thread(self.models.select, name)
        return web.json_response(
            {'success': True, 'message': f'{selected["name"]} is now the newest model file', **selected}
        )

    @staticmethod
    async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
        """Disk and ONNX Runtime work off the event loop, so the live feed keeps flowing meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)
