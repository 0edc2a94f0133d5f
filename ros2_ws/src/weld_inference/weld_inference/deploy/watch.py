"""Watching ``/weld/defects`` for the model a deploy put in place (rclpy; Humble's API only)."""

import contextlib
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from weld_inference.deploy.report import Confirmation
from weld_interfaces.msg import DefectResult

DEFECTS_TOPIC = '/weld/defects'
# the inference node publishes results RELIABLE, depth 10
RESULT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
# DDS discovery takes well under a second on an idle board; a loaded 2-core machine took over 3 s
DISCOVERY_S = 10.0


class DefectsWatch:
    """A node of its own context listening to /weld/defects while a deploy runs; a context manager."""

    def __init__(self, topic: str = DEFECTS_TOPIC, domain_id: int | None = None) -> None:
        self.topic = topic
        self._domain_id = domain_id
        self._lock = threading.Lock()
        self._results: list[tuple[float, DefectResult]] = []

    def __enter__(self) -> 'DefectsWatch':
        self._context = rclpy.Context()
        if self._domain_id is None:
            rclpy.init(context=self._context)
        else:
            rclpy.init(context=self._context, domain_id=self._domain_id)
        self._node = rclpy.create_node('weld_deploy_watch', context=self._context)
        self._node.create_subscription(DefectResult, self.topic, self._on_result, RESULT_QOS)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name='weld-deploy-watch', daemon=True)
        self._thread.start()
        self.started = time.monotonic()
        return self

    def _spin(self) -> None:
        with contextlib.suppress(ExternalShutdownException):
            self._executor.spin()

    def _on_result(self, msg: DefectResult) -> None:
        with self._lock:
            self._results.append((time.monotonic(), msg))
            del self._results[:-100]

    def publishers(self) -> int:
        return self._node.count_publishers(self.topic)

    def wait_for(
        self, model_id: str, since: float, timeout_s: float, discovery_s: float = DISCOVERY_S
    ) -> Confirmation:
        """Wait until a result published after ``since`` (time.monotonic) has ``model_id``
        ('' = the rules answer); ``unreachable`` when neither a publisher nor a result shows up within
        ``discovery_s`` of the watch's start."""
        deadline = since + timeout_s
        while True:
            now = time.monotonic()
            with self._lock:
                recent = [msg for stamp, msg in self._results if stamp >= since]
            for msg in recent:
                if msg.model_id == model_id and (model_id or msg.source == 'rules'):
                    return Confirmation('confirmed', now - since)
            heard = bool(self._results) or self.publishers() > 0
            if not heard and now - self.started >= min(discovery_s, timeout_s):
                return Confirmation('unreachable', now - since)
            if now >= deadline:
                last = recent[-1] if recent else None
                return Confirmation(
                    'timeout',
                    timeout_s,
                    last.model_id if last else '',
                    last.source if last else '',
                    last.fallback_reason if last else '',
                )
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown()
        self._thread.join(timeout=5.0)
        self._node.destroy_node()
        rclpy.try_shutdown(context=self._context)
