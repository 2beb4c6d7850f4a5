"""What one account's trade_updates connection does with what it hears; it never raises.

Every frame is converted (``convert.convert_trade_update``) and published on ``trade.<slug>``,
then forgotten. The WAC refresh after a fill (``ResyncRequested(symbols=(symbol,))``) is
asked by ``state`` once the fill is committed, not here (one request per fill, not two).
Every (re)connect publishes ``ResyncRequested(reason="reconnect")``: the stream has no replay,
so whatever happened while it was down comes from REST.

A fill for an order this listener has never heard of (no earlier event, not in a snapshot) is
checked against REST before it is published: an order the broker answers 404 for is a phantom,
rejected and counted (``rejects_stream_unknown_order``), never booked. When REST cannot answer,
the fill is published anyway: losing a real fill is worse, and reconciliation heals the rest.

The listener also keeps what the watchdog needs: when the last frame arrived and which orders
are open (from the stream itself and from ``snap.<slug>`` snapshots).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol

import msgspec

from coldharbour.broker.convert import Rejected, convert_trade_update
from coldharbour.health import NEED_STREAM, credentials_rejected
from coldharbour.messages import Msg, OrderUpdated, ResyncRequested, topic_resync, topic_trade
from coldharbour.runtime import Conditions

log = logging.getLogger(__name__)

REJECT_LOG_INTERVAL_S: Final = 10.0
STREAM_FAILS_SHOWN: Final = 2  # failed connects in a row before the stream is reported down
SEEN_ORDERS_MAX: Final = 200_000  # order ids remembered for the unknown-order check

OrderCheck = Callable[[str], Awaitable[bool | None]]
FRAME_DECODER: Final = msgspec.json.Decoder()


def decode_frame(raw: str | bytes) -> object:
    """Return the JSON value of one stream frame; ``ValueError`` when it is not JSON.

    msgspec decodes in C (a few times faster than ``json.loads``); what it refuses goes to
    ``json.loads``, so every frame the SDK's own decoder accepted is still accepted (``NaN``,
    ``1E400``, a lone surrogate escape: the converter rejects those with a reason).
    """
    try:
        try:
            return FRAME_DECODER.decode(raw)
        except msgspec.DecodeError:
            return json.loads(raw)
    except RecursionError as e:  # nested beyond the interpreter's limit: not a frame we can read
        raise ValueError("frame nested too deeply") from e


class Sink(Protocol):
    """Where messages go (``bus.Publisher`` in production)."""

    def publish(self, topic: str, message: Msg) -> Msg:
        """Send ``message`` on ``topic``."""
        ...


class UpdateListener:
    """Converts and publishes one account's trade updates; tracks liveness for the watchdog."""

    def __init__(
        self,
        slug: str,
        sink: Sink,
        counters: Counter[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        check_order: OrderCheck | None = None,
        conditions: Conditions | None = None,
        account_name: str = "",
    ) -> None:
        self.slug = slug
        self._conditions = conditions if conditions is not None else Conditions()
        self._account_name = account_name or slug
        self._check_order = check_order
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._checks: set[asyncio.Task[None]] = set()
        self._sink = sink
        self.counters = counters
        self._clock = clock
        self.last_frame_at = clock()
        self.open_orders: set[str] = set()
        self._last_reject_log: dict[str, float] = {}
        self._auth_error_logged = False
        self.open = asyncio.Event()  # set while the stream is authorized and open (start-up progress)

    # --- connection lifecycle -------------------------------------------------------------

    def connected(self, client: str) -> None:
        """A (re)connect: ask ``snapshot`` for a full resync (no replay on this stream)."""
        self.counters["stream_connects"] += 1
        self.open.set()
        self._conditions.ok(NEED_STREAM, self.slug)
        self.last_frame_at = self._clock()
        log.info(
            "stream connected account=%s client=%s connects=%d", self.slug, client, self.counters["stream_connects"]
        )
        self._sink.publish(topic_resync(self.slug), ResyncRequested(account=self.slug, reason="reconnect"))

    def disconnected(self, client: str) -> None:
        """The connection ended; the client reconnects with backoff."""
        self.counters["stream_disconnects"] += 1
        self.open.clear()
        self._conditions.failed(NEED_STREAM, "trade stream disconnected (reconnecting)", self.slug)
        log.warning("stream disconnected account=%s client=%s", self.slug, client)

    def connect_failed(self, client: str, error: BaseException, attempt: int) -> None:
        """A connection attempt failed; authentication refusals are logged once at ERROR."""
        self.counters["stream_connect_failures"] += 1
        refused = "authenticat" in str(error) or "unauthorized" in str(error)
        if refused:
            self.counters["stream_auth_failures"] += 1
            cause = credentials_rejected(self._account_name, "the trade stream", "unauthorized")
            self._conditions.failed(NEED_STREAM, cause, self.slug)
            if not self._auth_error_logged:
                self._auth_error_logged = True
                log.error(
                    "stream authentication refused account=%s client=%s: check the API key and secret",
                    self.slug,
                    client,
                )
                return
        elif attempt >= STREAM_FAILS_SHOWN:
            self._conditions.failed(NEED_STREAM, f"trade stream unreachable ({type(error).__name__})", self.slug)
        log.warning(
            "stream connect failed account=%s client=%s attempt=%d error=%s: %s",
            self.slug, client, attempt, type(error).__name__, str(error)[:200],
        )  # fmt: skip

    def frame_seen(self) -> None:
        """Any frame arrived (the watchdog's liveness signal)."""
        self.last_frame_at = self._clock()

    def frame_not_json(self, raw: str | bytes) -> None:
        """A frame that is not JSON arrived: counted (``rejects_stream_not_json``), never raised."""
        self.frame_seen()
        self._reject(Rejected("not_json", f"a frame of {len(raw)} characters is not JSON"))

    def silent_for_s(self) -> float:
        """Return seconds since the last frame (or since the connection opened)."""
        return self._clock() - self.last_frame_at

    def set_open_orders(self, order_ids: Iterable[str]) -> None:
        """Replace the open-order set with a snapshot's (authoritative when it was taken)."""
        self.open_orders = set(order_ids)
        for order_id in self.open_orders:
            self._remember(order_id)

    def _remember(self, order_id: str) -> None:
        self._seen[order_id] = None
        self._seen.move_to_end(order_id)
        if len(self._seen) > SEEN_ORDERS_MAX:
            self._seen.popitem(last=False)

    # --- frames ---------------------------------------------------------------------------

    async def on_update(self, envelope: object) -> None:
        """The SDK's handler (async, as it requires); see ``handle``."""
        self.handle(envelope)

    def handle(self, envelope: object) -> None:
        """Convert and publish one frame; count and drop what is not a valid update. Never raises."""
        try:
            self.frame_seen()
            result = convert_trade_update(envelope, self.slug, now_ns=time.time_ns())
            if result is None:
                return
            if isinstance(result, Rejected):
                self._reject(result)
                return
            if result.fill is not None and self._check_order is not None and result.order.id not in self._seen:
                task = asyncio.get_running_loop().create_task(self._check_then_publish(result))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)
                return
            self._publish(result)
        except Exception:  # the task boundary: a handler must never raise (docs/broker.md §7)
            self.counters["stream_handler_errors"] += 1
            log.exception("stream handler failed account=%s", self.slug)

    async def _check_then_publish(self, update: OrderUpdated) -> None:
        assert self._check_order is not None
        try:
            exists = await self._check_order(update.order.id)
        except Exception:  # the task boundary: never lose the fill because the check broke
            log.exception("unknown-order check failed account=%s order=%s", self.slug, update.order.id)
            exists = None
        if exists is False:
            self._reject(Rejected("unknown_order", f"fill for order {update.order.id} the broker does not know"))
            return
        self._publish(update)

    def _publish(self, update: OrderUpdated) -> None:
        self.counters["trade_updates"] += 1
        for order in (update.order, *update.legs):
            self._remember(order.id)
            if order.is_live:
                self.open_orders.add(order.id)
            else:
                self.open_orders.discard(order.id)
        self._sink.publish(topic_trade(self.slug), update)
        log.debug("trade update account=%s event=%s order=%s", self.slug, update.event, update.order.id)
        if update.fill is not None:
            self.counters["fills"] += 1

    def _reject(self, rejected: Rejected) -> None:
        self.counters["rejects"] += 1
        self.counters[f"rejects_stream_{rejected.reason}"] += 1
        now = self._clock()
        last = self._last_reject_log.get(rejected.reason)
        if last is None or now - last >= REJECT_LOG_INTERVAL_S:
            self._last_reject_log[rejected.reason] = now
            log.warning(
                "rejected trade update account=%s reason=%s detail=%s total=%d",
                self.slug, rejected.reason, rejected.detail[:200], self.counters[f"rejects_stream_{rejected.reason}"],
            )  # fmt: skip
