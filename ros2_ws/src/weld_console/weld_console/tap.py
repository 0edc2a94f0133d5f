"""Topics the console reads only when it needs them: DDS keeps the newest messages, nobody wakes.

A subscription in an executor costs a wake-up, a wait-set rebuild and a copy in Python for every
message, 15 times a second per camera topic, although the console needs a frame pair only a few
times a second (a preview while a page watches, the frame of a label or of a result worth
reviewing). :class:`Tap` subscribes from a node of its own that no executor spins: the DDS reader
keeps the newest ``depth`` messages of each topic (KEEP_LAST) and :meth:`Tap.take` empties them,
raw, when the console asks. Taking is what rclpy's own executor does with a ready subscription
(``Subscription.handle.take_message``, the same in Humble's rclpy 3.3), here from the one thread
that calls :meth:`Tap.take` (the console's executor thread).

The tap's node ignores the process's command-line arguments, so a launch's ``__node:=`` rename
does not give it the console's name; its topics come fully resolved (remapped) from the console.
"""

from typing import Any

from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import QoSProfile


def _never_called(_: Any) -> None:  # pragma: no cover - no executor spins a tap's node
    raise AssertionError('a tapped subscription is only taken from')


class Tap:
    """Raw subscriptions taken from on demand; ``topics`` maps a key to (type, resolved topic, QoS)."""

    def __init__(
        self, node_name: str, namespace: str, context: Context, topics: dict[str, tuple[Any, str, QoSProfile]]
    ) -> None:
        self.node = Node(
            node_name,
            namespace=namespace,
            context=context,
            use_global_arguments=False,
            start_parameter_services=False,
            enable_rosout=False,
        )
        self._subscriptions = {
            key: self.node.create_subscription(msg_type, topic, _never_called, qos, raw=True)
            for key, (msg_type, topic, qos) in topics.items()
        }

    def take(self, key: str) -> list[bytes]:
        """The serialised messages waiting on ``key``'s topic, oldest first (at most its QoS depth)."""
        subscription = self._subscriptions[key]
        taken: list[bytes] = []
        with subscription.handle:
            while True:
                message = subscription.handle.take_message(subscription.msg_type, True)
                if message is None:
                    return taken
                taken.append(bytes(message[0]))

    def destroy(self) -> None:
        self.node.destroy_node()
