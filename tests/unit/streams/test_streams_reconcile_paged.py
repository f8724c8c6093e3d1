"""Stripe listed a page per request through the gateway, and the scratch spool matched by id."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from paystream.domain.reconcile import StripeIntent, StripeRefund
from streams.errors import StripeRejected
from streams.reconcile import Spool, StripeLister


@dataclass
class Obj:
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.body


class FakeGateway:
    """The two things the lister uses: the SDK client and the budgeted call."""

    def __init__(self, objects: list[dict[str, Any]], *, filters: bool) -> None:
        self.objects, self.filters = objects, filters
        self.calls: list[dict[str, Any]] = []
        self.lanes: list[bool] = []  # each request's budget share: background or not
        self._client = SimpleNamespace(v1=SimpleNamespace(
            payment_intents=SimpleNamespace(list_async=self.list_async),
            refunds=SimpleNamespace(list_async=self.list_async)))

    async def _call(self, operation: str, fn: Any, *, background: bool = False) -> Any:
        self.lanes.append(background)
        return await fn()

    async def list_async(self, params: dict[str, Any]) -> Any:
        self.calls.append(params)
        if "created" in params and not self.filters:
            raise StripeRejected("Unexpected created", operation="list", code=None)
        found = self.objects
        if "starting_after" in params:
            at = [o["id"] for o in found].index(params["starting_after"])
            found = found[at + 1:]
        page = found[:params["limit"]]
        return SimpleNamespace(data=[Obj(o) for o in page], has_more=len(found) > len(page))


def pi(n: int, created: int) -> dict[str, Any]:
    return {"id": f"pi_{n}", "status": "succeeded", "amount": 100, "currency": "usd",
            "created": created, "metadata": {"payment_id": f"pay_{n}"}}


async def listed(lister: StripeLister, **window: int | None) -> list[list[str]]:
    return [[o["id"] for o in page] async for page in lister.pages("payment_intents", **window)]


async def test_pages_of_a_hundred_one_request_each() -> None:
    gateway = FakeGateway([pi(n, 1000 + n) for n in range(250)], filters=True)
    lister = StripeLister(gateway)  # type: ignore[arg-type]
    pages = await listed(lister, created_gte=None, created_lt=None)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert lister.requests == 3
    assert gateway.calls[1]["starting_after"] == "pi_99"
    assert gateway.lanes == [False] * 3  # an operator's run: the foreground of its own budget


async def test_the_leaders_timer_lists_in_the_budgets_background_share() -> None:
    gateway = FakeGateway([pi(n, 1000 + n) for n in range(150)], filters=True)
    lister = StripeLister(gateway, background=True)  # type: ignore[arg-type]
    await listed(lister, created_gte=None, created_lt=None)
    assert gateway.lanes == [True, True]


async def test_a_peer_that_refuses_the_time_filter_is_filtered_here_from_then_on() -> None:
    gateway = FakeGateway([pi(n, 1000 + n) for n in range(150)], filters=False)
    lister = StripeLister(gateway)  # type: ignore[arg-type]
    pages = await listed(lister, created_gte=1100, created_lt=1120)
    assert sum(pages, []) == [f"pi_{n}" for n in range(100, 120)]
    assert lister.requests == 3  # the refused one, then two pages
    await listed(lister, created_gte=1100, created_lt=None)
    assert all("created" not in call for call in gateway.calls[-2:])


def test_the_spool_hands_each_page_its_intents_and_keeps_the_rest_for_later(tmp_path) -> None:
    spool = Spool(str(tmp_path))
    try:
        spool.add_intents([StripeIntent(f"pi_{n}", "succeeded", 100, "usd", f"pay_{n % 5}")
                           for n in range(10)] + [StripeIntent("pi_r", "succeeded", 100,
                                                               "usd", None, refund_id="re_1")])
        spool.add_refunds([StripeRefund("re_s", "succeeded", 100, "re_1")])
        taken = spool.take_intents(["pay_0", "pay_1", "pay_9"])
        assert {k: [i.id for i in v] for k, v in taken.items()} == {
            "pay_0": ["pi_0", "pi_5"], "pay_1": ["pi_1", "pi_6"]}
        rest = [group for batch in spool.unmatched(batch=2) for group in batch.items()]
        assert sorted((pid, [i.id for i in intents]) for pid, intents in rest) == [
            ("", ["pi_r"]), ("pay_2", ["pi_2", "pi_7"]), ("pay_3", ["pi_3", "pi_8"]),
            ("pay_4", ["pi_4", "pi_9"])]
        [by_refund] = dict(rest)[""]
        assert by_refund.refund_id == "re_1" and by_refund.payment_id is None
        assert spool.refunds_for(["re_1", "re_2"]) == {
            "re_1": StripeRefund("re_s", "succeeded", 100, "re_1")}
        assert list(tmp_path.iterdir())
    finally:
        spool.close()
    assert not list(tmp_path.iterdir())


def test_an_empty_spool_has_nothing_unmatched(tmp_path) -> None:
    spool = Spool(str(tmp_path))
    try:
        assert list(spool.unmatched()) == [] and spool.take_intents([]) == {}
    finally:
        spool.close()
