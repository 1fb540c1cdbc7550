"""One queue of generation work for the page, the Gradio API and the REST route, with cancel by token.

Every generation holds a slot while it runs (at most ``concurrency`` at once, one by default: the GPU). A server
with one pipeline per GPU (``sigma webui --gpus``) gives the queue that pool: there is one slot per pipeline, and a
job runs on the pipeline its slot holds. A job is identified by a token handed out when it is submitted, so Cancel
works on a job that is still waiting for a slot (it never starts and writes nothing) as well as on a running one
(it stops at its next denoising step).

What counts against the queue's depth (:meth:`Jobs.reserve`, the REST and OpenAI routes' 429) is the jobs that hold
or wait for a slot, and the places those routes reserved: a page's token (:meth:`Jobs.submit`, handed out as
Generate is clicked) counts once its job reaches the queue. A token whose job never comes (its event was refused by
Gradio's full queue, the tab closed, or a client called the page's start event alone) expires after
:data:`PENDING_S`, and at most :data:`MOST_PENDING` wait at once, so such tokens neither fill the queue nor memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Literal

from .retention import Retention

PENDING_S = 3600.0  # a page token whose job has not reached the queue by then is forgotten
MOST_PENDING = 4096  # page tokens waiting at once; past it the oldest is forgotten


class Cancelled(Exception):
    """The job was cancelled, while waiting or while running; ``kept`` lists the (PNG, record) pairs it had
    finished by then (a job of several images), for the caller to show or to remove."""

    def __init__(self, *args):
        super().__init__(*args)
        self.kept: list[tuple[str, dict]] = []


class Jobs:
    """The generation queue: ``concurrency`` slots, or one slot per pipeline of ``pipes`` (then ``concurrency`` is
    their number). Pooled pipelines share one architecture (the same model, each on its own device)."""

    def __init__(self, concurrency: int = 1, pipes: Sequence | None = None, retention: Retention | None = None):
        self.pipes = tuple(pipes or ())
        self.retention = retention  # what the server keeps: swept as each job reaches the queue
        self.concurrency = len(self.pipes) or max(1, concurrency)
        self._free: queue.Queue[int] = queue.Queue()  # free slot numbers, first freed first taken
        for k in range(self.concurrency):
            self._free.put(k)
        self._runs = [0] * self.concurrency
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._live: dict[str, float] = {}  # every token not yet ended: when it was handed out
        self._reserved: set[str] = set()  # places taken by reserve(): they count at once
        self._started: set[str] = set()  # jobs that reached slot(): holding or waiting for one

    def submit(self) -> str:
        """A token for a new job (the page gets it the moment Generate is clicked, before the job is queued). It
        counts against the queue's depth once its job reaches :meth:`slot`; until then it expires (module doc)."""
        token = uuid.uuid4().hex
        with self._lock:
            self._forget_pending(time.monotonic())
            self._live[token] = time.monotonic()
        return token

    def _forget_pending(self, now: float) -> None:
        """Drop page tokens whose job never reached the queue: older than PENDING_S, or past MOST_PENDING (the
        oldest that were not cancelled first: a job its page stopped must not run because others were clicked)."""
        pending = [t for t in self._live if t not in self._reserved and t not in self._started]
        stale = {t for t in pending if now - self._live[t] > PENDING_S}
        pending = [t for t in pending if t not in stale]
        stopped = [t for t in pending if t in self._cancelled]
        waiting = [t for t in pending if t not in self._cancelled]
        over = len(pending) + 1 - MOST_PENDING
        stale |= set(waiting[: max(0, over)]) | set(stopped[: max(0, over - len(waiting) - MOST_PENDING)])
        for token in stale:
            del self._live[token]
            self._cancelled.discard(token)

    def reserve(self, waiting: int) -> str | None:
        """A token for a new job, unless ``waiting`` jobs already wait beyond the slots (None: the call is answered
        429). Checked and counted under one lock, so a burst of calls cannot all pass the check before any counts."""
        with self._lock:
            if len(self._reserved | self._started) >= self.concurrency + waiting:
                return None
            token = uuid.uuid4().hex
            self._live[token] = time.monotonic()
            self._reserved.add(token)
            return token

    def cancel(self, token: str | None) -> Literal["queued", "running"] | None:
        """Cancel a waiting or running job and say which it was, read under the same lock (a job cannot end or
        start between the two): "running" when it had reached :meth:`slot` (it stops at its next step), "queued"
        when it still waits in the web server's queue (it never starts); None when the token names no live job."""
        with self._lock:
            if not token or token not in self._live:
                return None
            self._cancelled.add(token)
            return "running" if token in self._started else "queued"

    def started(self, token: str | None) -> bool:
        """Whether the job has reached the queue (it runs, or waits here for a slot). A job the page submitted that
        is not started still waits in the web server's own queue: cancelled there, it never starts."""
        with self._lock:
            return token in self._started

    def discard(self, token: str | None) -> None:
        """Forget a job that ended before it reached a slot (its inputs were refused)."""
        with self._lock:
            self._live.pop(token, None)
            self._reserved.discard(token)
            self._cancelled.discard(token)

    def check(self, token: str | None) -> None:
        """Raise :class:`Cancelled` if the job was cancelled (called at every denoising step)."""
        if token and token in self._cancelled:
            raise Cancelled

    @property
    def live(self) -> int:
        """Jobs submitted and not yet ended (waiting or running)."""
        with self._lock:
            return len(self._live)

    @property
    def runs(self) -> list[int]:
        """Jobs each slot (each pooled pipeline, in order) has started."""
        with self._lock:
            return list(self._runs)

    @contextlib.contextmanager
    def slot(self, token: str | None) -> Iterator:
        """Wait for a free slot (checking for cancellation while waiting), hold it while the body runs; the body
        gets the slot's pipeline (None without a pool: the caller's one pipeline)."""
        with self._lock:
            self._started.add(token)
            if token:
                self._live.setdefault(token, time.monotonic())  # (a page token that had expired counts again)
        try:
            if self.retention is not None:  # every door's generations come here: the page's, the API's, the REST's
                self.retention.sweep()
            while True:
                try:
                    k = self._free.get(timeout=0.1)
                    break
                except queue.Empty:
                    self.check(token)
            try:
                self.check(token)
                with self._lock:
                    self._runs[k] += 1
                yield self.pipes[k] if self.pipes else None
            finally:
                self._free.put(k)
        finally:
            with self._lock:
                self._live.pop(token, None)
                self._reserved.discard(token)
                self._cancelled.discard(token)
                self._started.discard(token)
