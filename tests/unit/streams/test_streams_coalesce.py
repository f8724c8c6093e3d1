"""The coalescer behind the Stripe sequence's claims and write-backs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streams.coalesce import Coalescer


async def test_callers_waiting_together_share_one_flush_and_get_their_own_answers() -> None:
    flushes: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        flushes.append(list(items))
        await gate.wait()
        return [i * 10 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(flush)
    first = asyncio.create_task(coalescer.put(1))
    await asyncio.sleep(0)
    # While the first flush is out, the others queue for the next one.
    rest = [asyncio.create_task(coalescer.put(i)) for i in range(2, 6)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert [await t for t in rest] == [20, 30, 40, 50]
    assert flushes == [[1], [2, 3, 4, 5]]


async def test_one_bad_item_fails_alone() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        if 3 in items:
            raise ValueError("3 violates a constraint")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush)
    results = await asyncio.gather(*(coalescer.put(i) for i in range(1, 6)),
                                   return_exceptions=True)
    assert results[:2] == [1, 2] and results[3:] == [4, 5]
    assert isinstance(results[2], ValueError)


async def test_batches_are_capped() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, max_size=3)
    assert await asyncio.gather(*(coalescer.put(i) for i in range(7))) == list(range(7))
    assert max(sizes) <= 3 and sum(sizes) == 7


@pytest.mark.parametrize("n", [1, 50])
async def test_every_caller_is_answered(n: int) -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return [-i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(flush)
    assert await asyncio.gather(*(coalescer.put(i) for i in range(n))) == [-i for i in range(n)]
