"""The live feed: the newest message of each kind per page; held kinds ride with the next message."""

import asyncio
import json

from weld_console.feed import LiveFeed


def kinds(messages: list[bytes | str]) -> list[str]:
    return sorted(json.loads(message)['type'] for message in messages if isinstance(message, str))


def test_held_messages_wait_for_the_next_sent_one_or_hold_s_and_only_the_newest_is_kept() -> None:
    async def scenario() -> None:
        feed = LiveFeed(hold_s=0.3)
        feed.attach(asyncio.get_running_loop())
        viewer = feed.join()
        for number in range(5):
            feed.publish('result', {'n': number}, hold=True)
        await asyncio.sleep(0.05)
        assert not viewer.ready.is_set(), 'a held result woke the page at once'
        feed.publish('status', {'up': True})
        await asyncio.wait_for(viewer.ready.wait(), 1.0)
        sent = viewer.take()
        assert kinds(sent) == ['result', 'status']
        assert {'type': 'result', 'n': 4} in [json.loads(message) for message in sent], (
            'the newest result only'
        )

        await asyncio.sleep(0.4)  # the flush the first held result scheduled has passed
        started = asyncio.get_running_loop().time()
        feed.publish('measurements', {'n': 1}, hold=True)
        await asyncio.wait_for(viewer.ready.wait(), 2.0)
        waited = asyncio.get_running_loop().time() - started
        assert kinds(viewer.take()) == ['measurements'] and waited >= 0.25

    asyncio.run(scenario())


def test_without_a_page_nothing_is_held_and_a_new_page_gets_the_newest_of_each_kind() -> None:
    async def scenario() -> None:
        feed = LiveFeed(hold_s=0.1)
        feed.attach(asyncio.get_running_loop())
        feed.publish('result', {'n': 1}, hold=True)
        feed.publish('result', {'n': 2}, hold=True)
        feed.publish('status', {'up': True})
        await asyncio.sleep(0.2)
        viewer = feed.join()
        sent = [json.loads(message) for message in viewer.take()]
        assert sorted(message['type'] for message in sent) == ['result', 'status']
        assert {'type': 'result', 'n': 2} in sent

    asyncio.run(scenario())
