"""Ending the room a conversation has left, through LiveKit's server API (`DeleteRoom`), best effort.

livekit-api is asynchronous (aiohttp) and the application's commands run in worker
threads, so the calls run on one event loop of their own, in a daemon thread made
at the first call, with one HTTP session kept across calls. A call waits at most
`timeout` seconds: a resume is never held up longer by a LiveKit that does not
answer. The room then empties and finishes on its own; the failure is logged
(the room's name and why, nothing of the visitor) and counted.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import structlog
from livekit import api

from infrastructure.metrics import LIVEKIT_ROOM_ENDS

log = structlog.get_logger("livekit")

TIMEOUT = 1.0  # seconds LiveKit gets to answer a DeleteRoom


def http_url(url: str) -> str:
    """LiveKit's server API lives on the same host as its WebSocket URL, over HTTP(S)."""
    if url.startswith("wss://"):
        return "https://" + url.removeprefix("wss://")
    if url.startswith("ws://"):
        return "http://" + url.removeprefix("ws://")
    return url


class LiveKitRooms:
    """The application's `RoomEnder` on LiveKit's server API."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout: float = TIMEOUT) -> None:
        self.url = http_url(url)
        self.api_key = api_key
        self.api_secret = api_secret
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._api: Any = None

    def end_room(self, room: str) -> bool:
        try:
            future = asyncio.run_coroutine_threadsafe(self._delete(room), self._running_loop())
            outcome = future.result(timeout=self.timeout + 0.5)  # the coroutine times out first; this bounds a stuck loop
        except TimeoutError:  # also asyncio's and concurrent.futures' (one class since Python 3.11)
            outcome = "timeout"
        except api.TwirpError as error:
            outcome = "absent" if error.code == api.TwirpErrorCode.NOT_FOUND else "refused"
            if outcome == "refused":
                log.warning("livekit_room_not_ended", room=room, reason="refused", code=error.code, status=error.status)
        except Exception as error:  # noqa: BLE001 - best effort: a resume never fails for it
            outcome = "error"
            log.warning("livekit_room_not_ended", room=room, reason="error", error=type(error).__name__)
        if outcome == "timeout":
            log.warning("livekit_room_not_ended", room=room, reason="timeout", timeout=self.timeout)
        LIVEKIT_ROOM_ENDS.labels(outcome).inc()
        return outcome in ("ended", "absent")

    async def _delete(self, room: str) -> str:
        if self._api is None:  # made on this loop: aiohttp's session belongs to the loop it was made on
            self._api = api.LiveKitAPI(self.url, self.api_key, self.api_secret, failover=False)
        async with asyncio.timeout(self.timeout):
            await self._api.room.delete_room(api.DeleteRoomRequest(room=room))
        return "ended"

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="livekit-rooms", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        if self._api is not None:
            lk, self._api = self._api, None
            try:
                asyncio.run_coroutine_threadsafe(lk.aclose(), loop).result(timeout=2)
            except Exception:  # noqa: BLE001 - closing at shutdown: nothing left to do about it
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()
