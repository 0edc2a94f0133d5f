"""The operator console in a real browser against the real graph (simulator camera, labeler,
inference, console: four processes on loopback DDS; chromium headless driven by Playwright)."""

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from tests.console.graph import URL_LINE, Graph, browser_page, converted_labels, node_args, wait_until
from tests.inference.models import write_model
from weld_core.bag_types import DEFECT_LABEL, weld_typestore
from weld_core.model_file import ModelError, read_model_info
from weld_core.model_store import check_model
from weld_interfaces.msg import DefectResult

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / 'docs' / 'images' / 'console.png'


class Results:
    """The DefectResults on /weld/defects, heard by this test's own node."""

    def __init__(self, ros_node: Any) -> None:
        self.lock = threading.Lock()
        self.items: list[DefectResult] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        ros_node.node.create_subscription(DefectResult, '/weld/defects', self._on, qos)

    def _on(self, msg: DefectResult) -> None:
        with self.lock:
            self.items.append(msg)

    def model_ids(self) -> set[str]:
        with self.lock:
            return {msg.model_id for msg in self.items}


def message(page: Any, contains: str, timeout_s: float = 40.0) -> str:
    return wait_until(
        lambda: (text := page.inner_text('#message')) and contains in text and text,
        timeout_s,
        f'the page to say {contains!r} (it says {page.inner_text("#message")!r})',
    )


def test_live_view_updates_and_key_2_with_burst_5_records_5_porosity_pairs(
    spawn_node: Any, tmp_path: Path
) -> None:
    graph = Graph(spawn_node, tmp_path)
    with browser_page() as page:
        page.goto(graph.url())
        wait_until(lambda: page.evaluate('window.weldConsole.previews') >= 3, 60, 'live previews')
        first = page.get_attribute('#rgb', 'src')
        seq = page.evaluate('window.weldConsole.lastSeq')
        wait_until(lambda: page.evaluate('window.weldConsole.lastSeq') > seq + 2, 60, 'newer previews')
        assert page.get_attribute('#rgb', 'src') != first, 'the live image did not change'
        wait_until(lambda: page.evaluate('window.weldConsole.results') > 0, 30, 'a DefectResult on the page')
        assert page.inner_text('#result-source') in ('rules', 'model')
        # the rules' measurements (the inference node runs them on every pair here)
        wait_until(lambda: 'bead width mm' in page.inner_text('#measurements'), 30, "the rules' measurements")
        assert page.inner_text('#health').startswith(('sensor ok', 'not fit'))

        page.fill('#session-form input[name=name]', 'plate7')
        page.fill('#session-form input[name=operator_name]', 'ana')
        page.click('#session-start')
        message(page, 'recording session')
        page.fill('#burst', '5')
        page.click('h3')  # keys go to the page, not to the burst field
        page.keyboard.press('2')
        message(page, 'captured 5 porosity pair(s)')
        wait_until(lambda: page.locator('#captures figure').count() >= 5, 60, 'five capture thumbnails')
        assert page.locator('#captures figcaption').first.inner_text() == 'porosity'
        # an unknown class from a forged request: the labeler's refusal verbatim, nothing captured
        refused = page.evaluate(
            """async () => { const r = await fetch('/api/capture', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({label: 'crack', count: 1})});
            return [r.status, await r.json()]; }"""
        )
        assert refused[0] == 409 and "unknown label 'crack'" in refused[1]['message']
        page.click('#session-stop')
        text = message(page, 'stopped')
        assert '5 pairs' in text

        def plate7_row() -> str:
            rows = page.locator('#sessions tr', has_text='plate7')
            return rows.inner_text() if rows.count() == 1 else ''

        # pairs 5; good 0, porosity 5, spatter 0, gap 0, undercut 0; stopped
        wait_until(lambda: 'plate7\tlabeler\t5\t0\t5\t0\t0\t0' in plate7_row(), 60, 'the stopped session row')
        wait_until(
            lambda: page.inner_text('#active-session') == 'none', 60, "the labeler's status: no session"
        )
        if os.environ.get('WELD_SCREENSHOTS') == '1':
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        page.screenshot(path=str(tmp_path / 'console.png'))

        # export from the page: a .tar.gz download of the session
        with page.expect_download() as download:
            page.locator('#sessions tr', has_text='plate7').locator('button').click()
        archive = tmp_path / download.value.suggested_filename
        download.value.save_as(archive)
        assert archive.name.endswith('.tar.gz') and archive.stat().st_size > 0

        # continuous labelling from the page: on with a class key, off with the toggle
        page.check('#continuous')
        page.wait_for_timeout(2500)  # status pushes (1 s) while no class is chosen must not undo the toggle
        assert page.is_checked('#continuous')
        page.click('h3')
        page.keyboard.press('4')
        message(page, 'labelling every pair gap')
        wait_until(lambda: 'labelling every pair gap' in page.inner_text('#continuous-state'), 60, 'the mode')
        page.uncheck('#continuous')
        message(page, 'continuous mode cleared (was gap)')

    (bag,) = [path for path in graph.sessions.iterdir() if path.name.endswith('plate7')]
    store = weld_typestore()
    frames, labels = [], []
    with Reader(bag) as reader:
        for connection, _, data in reader.messages():
            if connection.msgtype == DEFECT_LABEL:
                labels.append(store.deserialize_cdr(data, DEFECT_LABEL))
            elif connection.topic.startswith('/weld/rgb/image_raw'):
                frames.append(data)
    assert [label.label for label in labels] == ['porosity'] * 5
    assert len(frames) == 5 and len({label.header.stamp.nanosec for label in labels}) == 5
    assert {label.session_id for label in labels} == {bag.name}


def test_review_queue_fills_from_an_unsure_model_and_page_labels_land_in_a_session_training_reads(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    graph = Graph(spawn_node, tmp_path)
    results = Results(ros_node)
    unsure = read_model_info(write_model(graph.models / 'unsure.onnx', name='unsure', weight_scale=0.01))
    wait_until(lambda: unsure.model_id in results.model_ids(), 60, f'results from {unsure.model_id}')
    with browser_page() as page:
        page.goto(graph.url())
        page.click('button[data-tab=review]')
        wait_until(
            lambda: page.get_attribute('#review-current', 'data-item'), 60, 'a frame in the review queue'
        )
        assert 'unsure: margin 0.0' in page.inner_text('#review-why')
        labelled = []
        for key, label in (('3', 'spatter'), ('1', 'good')):
            item = wait_until(
                lambda: page.get_attribute('#review-current', 'data-item'), 30, 'a review frame'
            )
            page.keyboard.press(key)
            message(page, f'labelled {label}')
            wait_until(
                lambda item=item: page.get_attribute('#review-current', 'data-item') != item,
                20,
                'the next frame',
            )
            labelled.append(label)
        page.screenshot(path=str(tmp_path / 'review.png'))
        page.click('#review-finish')
        text = message(page, 'closed')
        assert '2 labelled frames' in text

    (session,) = list((graph.review / 'sessions').iterdir())
    assert converted_labels(session, tmp_path / 'dataset') == sorted(labelled)


def test_models_panel_upload_is_picked_up_and_an_invalid_upload_is_refused_with_the_loaders_message(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    graph = Graph(spawn_node, tmp_path)
    results = Results(ros_node)
    first = read_model_info(write_model(graph.models / 'net-v1.onnx', name='net', version='1'))
    wait_until(lambda: first.model_id in results.model_ids(), 60, f'results from {first.model_id}')
    upload = tmp_path / 'upload' / 'net-v2.onnx'
    upload.parent.mkdir()
    second = read_model_info(write_model(upload, name='net', version='2', seed=3))
    broken = tmp_path / 'upload' / 'broken.onnx'
    broken.write_bytes(upload.read_bytes()[: upload.stat().st_size // 2])
    with pytest.raises(ModelError) as loader:
        check_model(broken)
    with browser_page() as page:
        page.goto(graph.url())
        page.click('button[data-tab=models]')
        wait_until(lambda: 'net-v1.onnx' in page.inner_text('#models'), 30, 'the models table')
        wait_until(lambda: first.model_id in page.inner_text('#model-running'), 30, 'the running model')
        # a file copied in by other means that the node refuses: listed with the node's reason
        (graph.models / 'copied.onnx').write_bytes(b'half a model')

        def rejected_row() -> str:
            page.click('button[data-tab=models]')  # reloads the panel
            rows = page.locator('#models tr', has_text='copied.onnx')
            return rows.inner_text() if rows.count() == 1 else ''

        wait_until(lambda: 'rejected: ' in rejected_row(), 30, 'the rejected file and its reason')
        assert 'ONNX Runtime cannot load it' in rejected_row()
        (graph.models / 'copied.onnx').unlink()

        page.set_input_files('#upload-file', str(broken))
        page.click('#upload-form button')
        refusal = message(page, 'broken.onnx: ')
        assert refusal == str(loader.value).replace(str(broken), 'broken.onnx')
        assert sorted(p.name for p in graph.models.iterdir() if not p.name.startswith('.')) == ['net-v1.onnx']

        page.set_input_files('#upload-file', str(upload))
        page.click('#upload-form button')
        message(page, 'installed net-v2.onnx')
        wait_until(
            lambda: second.model_id in results.model_ids(), 60, f'results from the upload {second.model_id}'
        )
        assert (graph.models / 'net-v2.onnx.sha256').is_file()

        # switch back to the first file from the page
        page.click('button[data-tab=models]')
        wait_until(lambda: second.model_id in page.inner_text('#model-running'), 30, 'the upload running')
        with results.lock:
            results.items.clear()
        page.locator('#models tr', has_text='net-v1.onnx').locator('button').click()
        message(page, 'net-v1.onnx is now the newest model file')
        wait_until(lambda: first.model_id in results.model_ids(), 60, 'results from the first model again')


def _post(url: str, path: str, body: dict[str, Any], token: str = '') -> tuple[int, dict[str, Any]]:
    headers = {'Content-Type': 'application/json'}
    if token:
        headers['Authorization'] = f'Bearer {token}'
    request = urllib.request.Request(
        url + path.lstrip('/'), json.dumps(body).encode(), headers, method='POST'
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_with_a_token_requests_without_it_are_refused_and_change_nothing(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    graph = Graph(spawn_node, tmp_path, 'require_token:=true')
    url = graph.url()
    token_file = tmp_path / 'token'
    wait_until(lambda: 'new access token' in graph.console.output, 60, 'the token printed at first start')
    token = token_file.read_text().strip()
    assert graph.console.output.count(token) == 2  # the token and the address with it, printed once
    assert oct(token_file.stat().st_mode & 0o777) == '0o600'
    for body_token in ('', 'wrong'):
        status, answer = _post(url, '/api/capture', {'label': 'porosity', 'count': 1}, body_token)
        assert status == 401, answer
        status, answer = _post(url, '/api/session/start', {'name': 'intruder'}, body_token)
        assert status == 401, answer
    assert not graph.sessions.exists() or not any(graph.sessions.iterdir()), 'a refused request recorded'
    with browser_page() as page:
        page.goto(url)
        wait_until(lambda: page.is_visible('#token-form'), 60, 'the page to ask for the token')
        assert page.evaluate('window.weldConsole.previews') == 0
        page.fill('#token-input', token)
        page.click('#token-form button')
        wait_until(
            lambda: page.evaluate('window.weldConsole.previews') >= 2, 60, 'live previews with the token'
        )
    status, answer = _post(url, '/api/capture', {'label': 'porosity', 'count': 1}, token)
    assert status == 200 and answer['captured'] == 1, answer

    # a restart keeps the token and does not print it again
    graph.console.stop()
    restarted = graph.start_console(spawn_node, 'require_token:=true')
    wait_until(lambda: 'operator console at' in restarted.output, 60, 'the restarted console')
    assert token not in restarted.output and token_file.read_text().strip() == token


def test_beyond_loopback_the_node_requires_a_token_made_with_mode_0600(ros_node: Any, tmp_path: Path) -> None:
    from weld_console.console_node import ConsoleNode

    token_file = tmp_path / 'secret' / 'token'
    overrides = [
        Parameter('host', value='0.0.0.0'),
        Parameter('token_file', value=str(token_file)),
        Parameter('review_dir', value=str(tmp_path / 'review')),
        Parameter('models_dir', value=str(tmp_path / 'models')),
    ]
    node = ConsoleNode(context=ros_node.context, parameter_overrides=overrides)  # not started: no socket
    try:
        assert node.token_created and node.server.settings.token_required
        assert node.server.settings.token == token_file.read_text().strip()
        assert oct(token_file.stat().st_mode & 0o777) == '0o600'
    finally:
        node.close()
        node.destroy_node()


def test_a_renamed_console_keeps_one_node_of_its_name_and_its_tap_follows_topic_remaps(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    """The runner and launch rename nodes (``__node:=``) and may remap topics: the frame tap is a
    second node that must take neither the console's name nor miss a remapped camera topic."""
    import asyncio

    import aiohttp

    camera = spawn_node(
        node_args(
            'weld_camera.camera_node',
            'source:=sim',
            'width:=320',
            'height:=240',
            'rate_hz:=10.0',
            'rgb_topic:=/cell/rgb',
            'depth_topic:=/cell/depth',
        ),
        name='camera',
    )
    console = spawn_node(
        [
            *node_args(
                'weld_console.console_node',
                'port:=0',
                f'models_dir:={tmp_path / "models"}',
                f'recording_dir:={tmp_path / "sessions"}',
                f'export_dir:={tmp_path / "exports"}',
                f'review_dir:={tmp_path / "review"}',
                'min_free_space_mb:=0.0',
            ),
            '-r',
            '__node:=site_console',
            '-r',
            '/weld/rgb/image_raw:=/cell/rgb',
            '-r',
            '/weld/depth/image_raw:=/cell/depth',
        ],
        name='console',
    )
    found = wait_until(lambda: URL_LINE.search(console.output), 60, 'the console to start')
    ros_node.wait_for(lambda: 'site_console_frames' in ros_node.node.get_node_names(), 30, 'the tap node')
    names = ros_node.node.get_node_names()
    assert names.count('site_console') == 1 and names.count('site_console_frames') == 1, names

    async def first_preview() -> bytes:
        async with aiohttp.ClientSession() as client, client.ws_connect(f'{found.group(1)}ws') as socket:
            while True:
                message = await socket.receive(timeout=30)
                if message.type == aiohttp.WSMsgType.BINARY:
                    return message.data

    preview = asyncio.run(first_preview())
    header = json.loads(preview[4 : 4 + int.from_bytes(preview[:4], 'big')])
    assert header['width'] == 320 and header['stamp_ns'] > 0, 'a preview of the remapped camera'
    assert camera.process.poll() is None
