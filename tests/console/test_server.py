"""The console's HTTP layer without ROS: the token, cross-site refusals, upload limits and checks.

A real aiohttp server on 127.0.0.1 (any free port) with a stand-in for the labeler's services that
records every call, so a refused request can be shown to have changed nothing.
"""

import asyncio
import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.inference.models import build_model, model_metadata
from weld_console.feed import LiveFeed
from weld_console.models_panel import InferenceView, ModelsPanel
from weld_console.review import ReviewQueue, ReviewRecorder
from weld_console.server import ConsoleServer, ServerSettings
from weld_core.classes import DEFAULT_CLASSES
from weld_core.model_file import ModelError
from weld_core.model_store import check_model

TOKEN = 'k' * 43
LIMIT = 200_000


class RecordingLabeler:
    """Answers like the labeler and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def _answer(self, name: str, *args: Any) -> dict[str, Any]:
        self.calls.append((name, args))
        return {'success': True, 'message': f'{name} done'}

    async def start_session(self, fields: dict[str, Any]) -> dict[str, Any]:
        return await self._answer('start_session', fields)

    async def stop_session(self) -> dict[str, Any]:
        return await self._answer('stop_session')

    async def capture(self, label: str, count: int, note: str) -> dict[str, Any]:
        if label == 'crack':
            self.calls.append(('capture', (label, count, note)))
            return {
                'success': False,
                'message': "unknown label 'crack': give one of good, ...",
                'captured': 0,
            }
        return await self._answer('capture', label, count, note)

    async def set_continuous(self, label: str, note: str) -> dict[str, Any]:
        return await self._answer('set_continuous_label', label, note)

    async def list_sessions(self) -> dict[str, Any]:
        return {'session_ids': [], 'pairs_recorded': [], 'active_session_id': ''}

    async def export_session(self, session_id: str, output_dir: str) -> dict[str, Any]:
        return await self._answer('export_session', session_id, output_dir)


class NoState:
    def snapshot(self) -> dict[str, Any]:
        return {'labeler': {}, 'inference': {}}

    def inference_view(self) -> InferenceView:
        return InferenceView()

    def session_counts(self, session_id: str, active: bool) -> dict[str, int]:
        return {}


class Console:
    def __init__(self, tmp_path: Path, token: str) -> None:
        self.models_dir = tmp_path / 'models'
        self.labeler = RecordingLabeler()
        self.queue = ReviewQueue(tmp_path / 'review', 10)
        self.server = ConsoleServer(
            ServerSettings('127.0.0.1', 0, token, DEFAULT_CLASSES, tmp_path / 'exports', LIMIT),
            LiveFeed(),
            self.labeler,
            NoState(),
            self.queue,
            ReviewRecorder(tmp_path / 'review' / 'sessions', DEFAULT_CLASSES, min_free_space_mb=0.0),
            ModelsPanel(self.models_dir, LIMIT),
        )
        self.port = self.server.start()
        self.host = f'127.0.0.1:{self.port}'

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        sent = {'Host': self.host}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            sent['Content-Type'] = 'application/json'
        if token is not None:
            sent['Authorization'] = f'Bearer {token}'
        sent.update(headers or {})
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {'raw': data.decode(errors='replace')}

    def folder(self) -> list[str]:
        return sorted(p.name for p in self.models_dir.iterdir()) if self.models_dir.is_dir() else []


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    running = Console(tmp_path, TOKEN)
    yield running
    running.server.stop()


STATE_CHANGING = [
    ('/api/session/start', {'name': 'p7'}),
    ('/api/session/stop', {}),
    ('/api/capture', {'label': 'porosity', 'count': 5}),
    ('/api/continuous', {'label': 'gap'}),
    ('/api/sessions/20261207-000000_p7/export', {}),
    ('/api/review/1790000000000000000/label', {'label': 'good'}),
    ('/api/review/1790000000000000000/discard', {}),
    ('/api/review/finish', {}),
    ('/api/models/select', {'name': 'net.onnx'}),
]


@pytest.mark.parametrize('token', [None, '', 'wrong-token', TOKEN + 'x'])
def test_without_the_right_token_every_request_is_401_and_nothing_changes(
    console: Console, token: Any
) -> None:
    for path, body in STATE_CHANGING:
        status, answer = console.request('POST', path, body, token=token)
        assert status == 401, (path, answer)
        assert 'token' in answer['error']
    model = build_model('valid')
    status, _ = console.request(
        'POST', '/api/models/upload?name=net.onnx', model, {'Content-Type': 'application/octet-stream'}, token
    )
    assert status == 401
    for path in ('/api/state', '/api/sessions', '/api/review', '/api/models', '/api/exports/a.tar.gz'):
        assert console.request('GET', path, token=token)[0] == 401, path
    assert console.labeler.calls == []
    assert console.folder() == []
    # the page itself and its configuration are public: the page asks for the token
    status, config = console.request('GET', '/api/config', token=token)
    assert status == 200 and config['token_required'] is True
    assert console.request('GET', '/', token=token)[0] == 200


def test_the_right_token_is_let_through_and_service_answers_come_back_verbatim(console: Console) -> None:
    status, answer = console.request('POST', '/api/capture', {'label': 'porosity', 'count': 5, 'note': 's3'})
    assert (status, answer['message']) == (200, 'capture done')
    status, answer = console.request('POST', '/api/capture', {'label': 'crack', 'count': 1})
    assert status == 409 and answer['message'] == "unknown label 'crack': give one of good, ..."
    assert console.request('POST', '/api/capture', {'label': 'gap', 'count': 0})[0] == 400
    assert console.labeler.calls == [('capture', ('porosity', 5, 's3')), ('capture', ('crack', 1, ''))]


def test_cross_site_requests_are_refused(console: Console) -> None:
    body = {'label': 'porosity', 'count': 1}
    for headers, status in (
        ({'Origin': 'http://evil.example'}, 403),
        ({'Origin': f'http://{console.host}', 'Sec-Fetch-Site': 'cross-site'}, 403),
        ({'Content-Type': 'text/plain'}, 415),  # what a cross-site <form> can send without a preflight
        ({'Content-Type': 'application/x-www-form-urlencoded'}, 415),
        ({'Host': 'evil.example:80'}, 403),  # DNS rebinding onto 127.0.0.1
    ):
        assert console.request('POST', '/api/capture', body, headers)[0] == status, headers
    assert console.labeler.calls == []
    same = {'Origin': f'http://{console.host}', 'Sec-Fetch-Site': 'same-origin'}
    assert console.request('POST', '/api/capture', body, same)[0] == 200


def _upload(console: Console, name: str, data: bytes) -> tuple[int, Any]:
    sent = {'Content-Type': 'application/octet-stream'}
    return console.request('POST', f'/api/models/upload?name={quote(name)}', data, sent)


def test_uploads_are_limited_named_safely_and_checked_by_the_loader(console: Console, tmp_path: Path) -> None:
    status, answer = _upload(console, 'big.onnx', b'x' * (LIMIT + 1))
    assert status == 413 and 'limit' in answer['error']
    status, answer = _upload(console, '../escape.onnx', build_model('valid'))
    assert status == 400 and 'not a model file name' in answer['error']
    for bad_name in ('.hidden.onnx', 'net.onnx;rm -rf', 'net.txt'):
        assert _upload(console, bad_name, build_model('valid'))[0] == 400, bad_name
    # files the inference node's loader refuses are refused with its message
    incomplete = dict(model_metadata('net', '1'))
    del incomplete['training_data']
    for data in (b'not an onnx file' * 100, build_model('valid', metadata=incomplete)):
        reference = tmp_path / 'bad.onnx'
        reference.write_bytes(data)
        with pytest.raises(ModelError) as expected:
            check_model(reference)
        status, answer = _upload(console, 'bad.onnx', data)
        assert status == 400
        assert answer['error'] == str(expected.value).replace(str(reference), 'bad.onnx')
    assert console.folder() == ['.uploads']  # nothing placed; the hidden upload folder is empty
    assert list((console.models_dir / '.uploads').iterdir()) == []

    status, answer = _upload(console, 'net-v2.onnx', build_model('valid', name='net', version='2'))
    assert status == 200, answer
    assert answer['model_id'].startswith('net-2-')
    assert console.folder() == ['.uploads', 'net-v2.onnx', 'net-v2.onnx.sha256']
    status, answer = _upload(console, 'net-v2.onnx', build_model('valid', name='net', version='3'))
    assert status == 409 and 'already in' in answer['error']
    status, listing = console.request('GET', '/api/models')
    assert [entry['name'] for entry in listing['files']] == ['net-v2.onnx']
    assert listing['files'][0]['class_names'] == list(DEFAULT_CLASSES)
    status, answer = console.request('POST', '/api/models/select', {'name': 'net-v2.onnx'})
    assert status == 200 and answer['model_id'].startswith('net-2-')
    assert console.request('POST', '/api/models/select', {'name': 'missing.onnx'})[0] == 404


def test_live_feed_needs_the_token_in_its_first_message(console: Console) -> None:
    async def session(token: str) -> tuple[int | None, list[Any]]:
        received: list[Any] = []
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f'http://{console.host}/ws') as socket,
        ):
            await socket.send_str(json.dumps({'type': 'hello', 'token': token}))
            console.server.feed.publish('status', {'answer': 42})
            with contextlib.suppress(asyncio.TimeoutError):
                message = await socket.receive(timeout=5)
                if message.type == aiohttp.WSMsgType.TEXT:
                    received.append(json.loads(message.data))
            await socket.close()
            return socket.close_code, received

    code, received = asyncio.run(session('wrong'))
    assert code == 4401 and received == []
    code, received = asyncio.run(session(TOKEN))
    assert received == [{'type': 'status', 'answer': 42}]

    async def cross_site() -> int:
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(
                    f'http://{console.host}/ws', headers={'Origin': 'http://evil.example'}
                )
            return refused.value.status

    assert asyncio.run(cross_site()) == 403
