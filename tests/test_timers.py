"""The coarse timers: never early, not much late, and idle when there is nothing to time."""

from __future__ import annotations

import asyncio

from gateway.core.timers import Timers


async def test_a_timer_fires_after_its_delay_and_never_early():
    loop = asyncio.get_running_loop()
    timers = Timers(resolution=0.02, idle=0.05)
    timers.start(loop)
    fired: list[float] = []
    started = loop.time()
    timers.add("a", 0.1, lambda: fired.append(loop.time() - started))
    await asyncio.sleep(0.3)
    await timers.stop()
    assert len(fired) == 1
    assert 0.1 <= fired[0] <= 0.1 + 0.05 + 0.05  # one sweep interval late at most, plus slack


async def test_a_removed_timer_does_not_fire_and_remove_tells_whether_it_had():
    loop = asyncio.get_running_loop()
    timers = Timers(resolution=0.01)
    timers.start(loop)
    fired: list[str] = []
    timers.add("gone", 0.02, fired.append, "gone")
    timers.add("kept", 0.02, fired.append, "kept")
    assert timers.remove("gone") is True
    await asyncio.sleep(0.1)
    assert fired == ["kept"]
    assert timers.remove("kept") is False  # it had fired already
    await timers.stop()


async def test_the_sweep_slows_down_while_no_timer_is_set():
    loop = asyncio.get_running_loop()
    timers = Timers(resolution=0.01, idle=0.2)
    timers.start(loop)
    await asyncio.sleep(0.5)
    assert timers.sweeps <= 3  # every 0.2 s while idle, not every 0.01 s
    fired: list[int] = []
    timers.add("late", 0.01, fired.append, 1)
    await asyncio.sleep(0.3)
    assert fired == [1]  # within the idle interval
    await timers.stop()


async def test_a_failing_callback_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    timers = Timers(resolution=0.01)
    timers.start(loop)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.add("boom", 0.01, boom)
    timers.add("ok", 0.01, fired.append, 1)
    await asyncio.sleep(0.08)
    assert fired == [1]
    await timers.stop()
