"""The Alpaca REST adapter: every call with its own deadline, retries, one clear error.

Transport choice: **aiohttp directly**, not alpaca-py's ``TradingClient`` in a thread. The SDK
sets no request timeout (a hung broker hangs the caller, docs/broker.md §6), and a blocking call in a
thread cannot be cancelled: ``asyncio.wait_for`` would give up on it but leave the thread and its
socket behind, and SIGTERM would wait for it. It also retries on its own (3 × 3 s, only 429/504,
no jitter) underneath ours. With aiohttp each attempt has a real deadline
(``CALL_DEADLINE_S``, enforced on the socket), cancellation is immediate, and there is one retry
policy. We use raw JSON anyway (tolerant parsing in ``convert``), so the SDK's models would add
nothing; the wire requests are exactly the ones alpaca-py sends (docs/broker.md §2).

Budget (``coldharbour.broker.budget``, docs/broker-budget.md): with a ``RestBudget`` every
attempt first takes one request of the key's budget, shared by every program; an ``urgent``
client (``urgent()``: the position refresh after a fill, an unknown order's check) goes before
the background reads. A 429 pauses the whole key until the broker's ``X-RateLimit-Reset``
(counted: ``broker_rate_limited``); an answer whose ``X-RateLimit-Remaining`` is below
``KEY_BUSY_FRACTION`` of ``X-RateLimit-Limit`` (the trader's own bot is using the key) pauses it
the same way (``broker_key_busy``). Waits end at once when ``stop`` is set (``BrokerError``).

Failures:

- 429, 5xx, a timeout, a dropped connection, or a 2xx body that is not JSON (HTML, truncated)
  are transient: retried up to ``MAX_ATTEMPTS`` with capped exponential backoff and jitter,
  each attempt logged at WARNING;
- other 4xx answers are final at once;
- either way the caller gets one ``BrokerError`` naming the call, the status and the broker's
  message (or a short excerpt of a non-JSON body). Credentials never appear in it.

Lists are paged to the end (docs/defects.md D40): orders by ``after`` + ``direction=asc`` (500 a page, pages
overlap by one microsecond and are de-duplicated by id, because equal timestamps can straddle a
page edge), activities by ``page_token`` (100 a page).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec

from coldharbour.broker import budget as budget_module
from coldharbour.broker.budget import BudgetStopped, RestBudget
from coldharbour.broker.convert import BadValue, parse_time_ns
from coldharbour.config import AccountSettings
from coldharbour.domain.types import to_datetime
from coldharbour.errors import BrokerError
from coldharbour.health import NEED_BROKER, credentials_rejected
from coldharbour.retry import Backoff, RetryStopped, retry, sleep_or_stop
from coldharbour.runtime import Conditions

log = logging.getLogger(__name__)

CALL_DEADLINE_S: Final = 10.0
MAX_ATTEMPTS: Final = 5
BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 8.0
ORDERS_PAGE_LIMIT: Final = 500
ACTIVITIES_PAGE_SIZE: Final = 100
# Pages of orders overlap by this much (ns) so equal timestamps at a page edge are not lost.
PAGE_OVERLAP_NS: Final = 1_000
# Below this share of the key's limit left (X-RateLimit-Remaining / X-RateLimit-Limit), someone
# else is spending the key: we pause until its reset rather than take what is left.
KEY_BUSY_FRACTION: Final = 0.2
USER_AGENT: Final = "coldharbour-rest"  # says who we are to the broker (and to the fake's counts)
_EXCERPT_CHARS: Final = 80
_DECODER: Final = msgspec.json.Decoder()

Params = Mapping[str, str]


class BrokerRefused(BrokerError):
    """The broker answered a 4xx other than 429 (final: retrying would not help)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TransientError(Exception):
    """Internal: one attempt failed in a way worth retrying."""


class RateLimited(TransientError):
    """Internal: the broker answered 429; ``reset`` is its ``X-RateLimit-Reset`` (Unix s) if given."""

    def __init__(self, message: str, reset: float | None) -> None:
        super().__init__(message)
        self.reset = reset


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    text = headers.get(name)
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def iso_time(ts_ns: int) -> str:
    """Return UTC ns as an ISO-8601 query value with microseconds and ``+00:00``."""
    return to_datetime(ts_ns).isoformat()


def _excerpt(body: bytes) -> str:
    text = body[:_EXCERPT_CHARS].decode("utf-8", "replace").replace("\n", " ")
    return repr(text)


def _broker_message(status: int, body: bytes) -> str:
    try:
        data = _DECODER.decode(body)
    except msgspec.DecodeError:
        return f"status {status}, non-JSON body {_excerpt(body)}"
    if isinstance(data, dict) and "message" in data:
        return f"status {status}, code {data.get('code')}: {str(data['message'])[:200]}"
    return f"status {status}, body {_excerpt(body)}"


class BrokerRest:
    """One account's REST client (``base_url`` + ``/v2`` + path), sharing an aiohttp session."""

    def __init__(
        self,
        account: AccountSettings,
        session: aiohttp.ClientSession,
        counters: Counter[str] | None = None,
        *,
        deadline_s: float = CALL_DEADLINE_S,
        budget: RestBudget | None = None,
        stop: asyncio.Event | None = None,
        is_urgent: bool = False,
        version: str = "/v2",
        conditions: Conditions | None = None,
    ) -> None:
        self.slug = account.slug
        # Given (the snapshot program's): every answer says whether the credentials work.
        self._conditions = conditions
        self._account = account
        self._session = session
        self._version = version
        self._base = account.base_url.rstrip("/") + version
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._deadline_s = deadline_s
        self.budget = budget
        self._stop = stop if stop is not None else asyncio.Event()
        self.is_urgent = is_urgent

    def urgent(self) -> BrokerRest:
        """Return a client of the same account and budget whose requests go before background reads."""
        return BrokerRest(
            self._account, self._session, self.counters, deadline_s=self._deadline_s, budget=self.budget,
            stop=self._stop, is_urgent=True, version=self._version, conditions=self._conditions,
        )  # fmt: skip

    async def wait_ready(self) -> None:
        """Wait until the budget could serve this client's next request (requests coalesce meanwhile)."""
        if self.budget is not None:
            try:
                await self.budget.wait_ready(self._stop, urgent=self.is_urgent)
            except BudgetStopped as e:
                raise BrokerError(f"broker call stopped account={self.slug}: {e}") from None

    def _report(self, status: int) -> None:
        assert self._conditions is not None
        if status in (401, 403):
            cause = credentials_rejected(self._account.name, self._account.base_url, f"HTTP {status}")
            self._conditions.failed(NEED_BROKER, cause, self.slug)
        elif status < 300:
            self._conditions.ok(NEED_BROKER, self.slug)

    def _headers(self) -> dict[str, str]:
        # Revealed here only, straight into the request; never stored or logged elsewhere.
        return {
            "APCA-API-KEY-ID": self._account.api_key.reveal(),
            "APCA-API-SECRET-KEY": self._account.secret_key.reveal(),
            "User-Agent": USER_AGENT,
        }

    async def get(self, path: str, params: Params | None = None) -> Any:
        """Return the decoded JSON of ``GET /v2<path>``; raise ``BrokerError`` when it fails."""
        what = f"GET {path}"
        pause_s = 0.0  # after a 429 without a budget to hold it: wait for the broker's reset too

        async def attempt() -> Any:
            if self.budget is not None:  # waits out a pause any program recorded after a 429
                await self.budget.acquire(self._stop, urgent=self.is_urgent)
            return await self._attempt(path, params)

        def failed(error: Exception, number: int, delay: float) -> None:
            nonlocal pause_s
            self.counters["broker_retries"] += 1
            pause_s = self._pause_key(error.reset, limited=True) if isinstance(error, RateLimited) else 0.0
            if number >= MAX_ATTEMPTS:
                self.counters["broker_errors"] += 1
                if self._conditions is not None:
                    self._conditions.failed(NEED_BROKER, f"broker unreachable at {self._base} ({error})", self.slug)
                raise BrokerError(
                    f"broker call failed account={self.slug} call={what}: {error} (after {number} attempts)"
                ) from None
            log.warning(
                "broker call failed, retrying account=%s call=%s attempt=%d delay_s=%.2f error=%s",
                self.slug, what, number, max(delay, pause_s), error,
            )  # fmt: skip

        async def wait(stop: asyncio.Event, delay: float) -> bool:
            return await sleep_or_stop(stop, delay if self.budget is not None else max(delay, pause_s))

        try:
            return await retry(
                attempt, stop=self._stop, backoff=Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S),
                retry_if=lambda e: isinstance(e, TransientError), on_retry=failed, sleep=wait,
            )  # fmt: skip
        except (BudgetStopped, RetryStopped) as e:
            raise BrokerError(f"broker call stopped account={self.slug} call={what}: {e}") from None

    def _pause_key(self, reset: float | None, *, limited: bool) -> float:
        """Pause the key until ``reset`` (Unix s; a backoff step when absent); return the pause in seconds.

        Never longer than the budget's ``MAX_PAUSE_S``, with or without a budget: a Reset of
        10^30 or of year 9999 is not believed (docs/broker-budget.md).
        """
        self.counters["broker_rate_limited" if limited else "broker_key_busy"] += 1
        until = reset if reset is not None else time.time() + BACKOFF_CAP_S
        if self.budget is not None:
            return self.budget.pause_until(until, limited=limited)
        return min(max(0.0, until - time.time()), budget_module.MAX_PAUSE_S)

    def _note_headers(self, headers: Mapping[str, str]) -> None:
        """Pause the key when the broker says it is nearly spent (by the trader's bot, most likely)."""
        limit = _header_number(headers, "X-RateLimit-Limit")
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        if limit and remaining is not None and remaining < limit * KEY_BUSY_FRACTION:
            reset = _header_number(headers, "X-RateLimit-Reset")
            pause = self._pause_key(reset, limited=False)
            log.info(
                "broker key nearly spent, pausing account=%s remaining=%d limit=%d pause_s=%.1f",
                self.slug, remaining, limit, pause,
            )  # fmt: skip

    async def _attempt(self, path: str, params: Params | None) -> Any:
        url = self._base + path
        timeout = aiohttp.ClientTimeout(total=self._deadline_s)
        try:
            async with self._session.get(
                url, params=dict(params or {}), headers=self._headers(), timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.read()
                status = response.status
                headers = response.headers
        except TimeoutError:
            raise TransientError(f"no answer within {self._deadline_s}s") from None
        except aiohttp.ClientError as e:
            raise TransientError(f"connection failed: {type(e).__name__}: {e}") from None
        if status == 429:
            raise RateLimited(_broker_message(status, body), _header_number(headers, "X-RateLimit-Reset"))
        self._note_headers(headers)
        if status >= 500:
            raise TransientError(_broker_message(status, body))
        if self._conditions is not None:
            self._report(status)
        if status >= 300:
            self.counters["broker_errors"] += 1
            raise BrokerRefused(
                f"broker refused account={self.slug} call=GET {path}: {_broker_message(status, body)}", status
            )
        try:
            return _DECODER.decode(body) if body else None
        except msgspec.DecodeError:
            raise TransientError(f"status {status}, malformed JSON body {_excerpt(body)}") from None

    async def get_list(self, path: str, params: Params | None = None) -> list[Any]:
        """Return ``GET`` of a route that answers a JSON list; anything else is a ``BrokerError``."""
        data = await self.get(path, params)
        if not isinstance(data, list):
            raise BrokerError(
                f"broker answer account={self.slug} call=GET {path}: expected a list, found {type(data).__name__}"
            )
        return data

    # --- routes -------------------------------------------------------------------------------

    async def account(self) -> Any:
        """Return ``GET /v2/account``."""
        return await self.get("/account")

    async def positions(self) -> list[Any]:
        """Return ``GET /v2/positions``."""
        return await self.get_list("/positions")

    async def position(self, symbol: str) -> Any | None:
        """Return ``GET /v2/positions/{symbol}``, or None when the account holds none (404)."""
        try:
            # A crypto pair in the form the position endpoint accepts and positions carry
            # (``BTCUSD``: spec.md §8; ``BTC%2FUSD`` is reported to 404 there).
            return await self.get(f"/positions/{quote(symbol.replace('/', ''), safe='')}")
        except BrokerRefused as e:
            if e.status == 404:
                return None
            raise

    async def order(self, order_id: str) -> Any:
        """Return ``GET /v2/orders/{id}?nested=true`` (the order with its legs)."""
        return await self.get(f"/orders/{order_id}", {"nested": "true"})

    async def order_exists(self, order_id: str) -> bool | None:
        """Return True if the broker knows ``order_id``, False if it answers 404, None if unsure."""
        try:
            await self.order(order_id)
        except BrokerRefused as e:
            return False if e.status in (404, 422) else None
        except BrokerError:
            return None
        return True

    async def open_orders(self) -> list[Any]:
        """Return every open order, nested (legs inside their parent), paged to the end."""
        orders: list[Any] = []
        async for page in self.order_pages("open", None):
            orders.extend(page)
        return orders

    async def order_pages(self, status: str, after_ns: int | None) -> AsyncIterator[list[Any]]:
        """Yield pages (oldest first, nested) of orders submitted after ``after_ns`` (UTC ns).

        Every order appears once; the listing is never truncated (D40).
        """
        seen: set[str] = set()
        cursor = after_ns
        while True:
            params = {"status": status, "limit": str(ORDERS_PAGE_LIMIT), "direction": "asc", "nested": "true"}
            if cursor is not None:
                params["after"] = iso_time(cursor)
            page = await self.get_list("/orders", params)
            fresh = [o for o in page if isinstance(o, Mapping) and str(o.get("id")) not in seen]
            seen.update(str(o.get("id")) for o in fresh)
            if fresh:
                yield fresh
            if len(page) < ORDERS_PAGE_LIMIT:
                return
            last = _submitted_ns(page[-1])
            if last is None:
                raise BrokerError(f"broker answer account={self.slug} call=GET /orders: order without submitted_at")
            if fresh:
                cursor = last - PAGE_OVERLAP_NS
            else:
                # A whole page shares one timestamp: step past it rather than loop for ever.
                self.counters["orders_page_stuck"] += 1
                log.warning("order page without new ids account=%s after=%s", self.slug, iso_time(last))
                cursor = last

    async def activity_pages(
        self, activity_type: str, *, after_id: str | None = None, after_ns: int | None = None
    ) -> AsyncIterator[list[Any]]:
        """Yield pages (oldest first) of activities of one type after ``after_id`` or ``after_ns``.

        Several types (``"SPLIT,SC,MA"``) go in the ``activity_types`` query parameter (the path
        form takes one type only).
        """
        path = "/account/activities"
        extra: dict[str, str] = {}
        if "," in activity_type:
            extra["activity_types"] = activity_type
        else:
            path = f"{path}/{activity_type}"
        token = after_id
        while True:
            params = {"direction": "asc", "page_size": str(ACTIVITIES_PAGE_SIZE), **extra}
            if token is not None:
                params["page_token"] = token
            elif after_ns is not None:
                params["after"] = iso_time(after_ns)
            page = await self.get_list(path, params)
            if page:
                yield page
            if len(page) < ACTIVITIES_PAGE_SIZE:
                return
            last = page[-1]
            token = str(last.get("id")) if isinstance(last, Mapping) else None
            if not token:
                raise BrokerError(f"broker answer account={self.slug} call=GET activities: activity without id")


def _submitted_ns(order: object) -> int | None:
    if not isinstance(order, Mapping):
        return None
    text = order.get("submitted_at") or order.get("created_at")
    try:
        return parse_time_ns(text if isinstance(text, str) else None, field="submitted_at")
    except BadValue:
        return None
