"""The asyncio API, beside the thread-safe one: the same client, run in worker threads.

    async with AsyncAspectsClient("triton:8001", s3=S3Settings(...)) as client:
        results = await asyncio.gather(*(client.segment(url) for url in urls))

Cancelling the awaiting task (``task.cancel()``, ``asyncio.wait_for`` timing out) sets the
call's cancel event: its in-flight gRPC requests and download stop within about 0.2 s and
nothing is returned; ``asyncio.CancelledError`` propagates as asyncio expects.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import AspectsClient, Progress, SegmentationResult, SourceLike
from .errors import UsageError
from .request import SegmentRequest


class AsyncAspectsClient:
    """``await client.segment(source)``; at most ``max_concurrency`` volumes at once.

    Keyword arguments are those of ``AspectsClient`` (s3, inference, limits, overlay,
    wait_s); connecting happens on ``__aenter__`` (or ``connect``), off the event loop."""

    def __init__(self, url: str = "127.0.0.1:8001", *, max_concurrency: int = 4, **kwargs: Any):
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise UsageError(f"max_concurrency must be an int, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise UsageError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._url = url
        self._kwargs = kwargs
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="aspects-aio")
        self._client: AspectsClient | None = None

    async def connect(self) -> AsyncAspectsClient:
        if self._client is None:
            loop = asyncio.get_running_loop()
            make = functools.partial(AspectsClient, self._url, **self._kwargs)
            self._client = await loop.run_in_executor(self._executor, make)
        return self

    async def segment(
        self,
        source: SourceLike | None = None,
        *,
        request: SegmentRequest | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> SegmentationResult:
        """``AspectsClient.segment`` without blocking the event loop; cancellable.  A ready
        ``request``, or ``source`` with the request's options as keywords (``name``,
        ``priority``, ``score``, ``adc``, ...; see ``SegmentRequest``)."""
        if request is None:  # validated here, before a worker thread is taken
            request = SegmentRequest.build(source, **options)
        elif source is not None or options:
            raise UsageError("give either a request or a source with options, not both")
        await self.connect()
        assert self._client is not None
        cancel = threading.Event()
        call = functools.partial(
            self._client.segment, request=request, cancel=cancel, progress=progress
        )
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()  # the worker thread stops its requests and returns promptly
            raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        loop = asyncio.get_running_loop()
        if client is not None:
            await loop.run_in_executor(self._executor, client.close)
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))

    async def __aenter__(self) -> AsyncAspectsClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
