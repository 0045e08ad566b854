"""The raw legs of `bench.fanout`: the same number of sends as the service's leg, made by the
bare client of each channel (aiohttp, aiosmtplib, the twilio SDK) against the same loopback
sinks, at the concurrency the service is allowed towards one host; and what a timed leg is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import aiosmtplib
from twilio.rest import Client

from bench.common import BenchError, rate
from channels.base import ChannelName, OutboundMessage
from channels.content import Rendering
from channels.email import mail_bytes
from channels.sms import TwilioHttp
from dissemination.intake.decoding import decode_alerts, intake_rules
from dissemination.settings import Settings
from testbed.alerts import cap_json
from testbed.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

WEBHOOK = ChannelName.WEBHOOK.value
EMAIL = ChannelName.EMAIL.value
SMS = ChannelName.SMS.value
CHANNELS = (WEBHOOK, EMAIL, SMS)
"""Every channel, in the order `all` runs them."""
BODY = json.dumps({"type": "alert", "alert": cap_json("RAW")}).encode()
"""A webhook body of the size the service sends for the benchmark's alert."""


@dataclass(slots=True)
class Leg:
    """One timed leg: how many sends finished in how long."""

    sends: int
    seconds: float
    note: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each group of processes spent in the leg (`bench.fanoutservice.cpu_groups`)."""

    @property
    def rate(self) -> float:
        return rate(self.sends, self.seconds)


@dataclass(frozen=True, slots=True)
class SinkPorts:
    webhook: int
    smtp: int
    twilio: str
    pid: int


async def parallel(count: int, concurrency: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Run `send(i)` for i in range(count) on `concurrency` workers; return the seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await send(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def raw_webhook(count: int, concurrency: int, sinks: SinkPorts) -> Leg:
    url = f"http://127.0.0.1:{sinks.webhook}/raw"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def send(i: int) -> None:
            async with session.post(url, data=BODY) as response:
                await response.read()
                if response.status != 204:
                    raise BenchError(f"raw webhook got HTTP {response.status}")

        return Leg(count, await parallel(count, concurrency, send))


def raw_mail(settings: Settings) -> bytes:
    """The mail the service sends for the benchmark's alert, as the relay receives it: the
    raw leg sends these very bytes, so both legs put the same load on the sink."""
    document = json.dumps(cap_json("RAW", handling={"tlp": "GREEN"})).encode()
    alert = decode_alerts(document, "application/json", *intake_rules(settings.intake))[0]
    rendering = Rendering(uuid.uuid4().hex)
    message = OutboundMessage(
        rendering.delivery_id, "raw@example.org", alert.to_json(), (alert.id, False), rendering
    )
    return mail_bytes(message, settings.email.from_address, settings.email.message_id_domain)


async def raw_email(count: int, settings: Settings, sinks: SinkPorts) -> Leg:
    pool_size = settings.email.pool_size
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=sinks.smtp) for _ in range(pool_size)]
    for client in clients:
        await client.connect()
    idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for client in clients:
        idle.put_nowait(client)

    mail = raw_mail(settings)  # written once: the leg is the client and the sink

    async def send(i: int) -> None:
        client = await idle.get()
        try:
            await client.sendmail(settings.email.from_address, [f"raw{i}@example.org"], mail)
        finally:
            idle.put_nowait(client)

    try:
        return Leg(count, await parallel(count, pool_size, send))
    finally:
        for client in clients:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()


async def raw_sms(count: int, concurrency: int, sinks: SinkPorts) -> Leg:
    http = TwilioHttp(sinks.twilio)
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)

    async def send(i: int) -> None:
        await client.messages.create_async(
            to=f"+1202555{i % 10000:04d}", from_=FROM_NUMBER, body="TLP:GREEN Severe: raw leg"
        )

    try:
        return Leg(count, await parallel(count, concurrency, send))
    finally:
        await http.close()


def split(channel: str, targets: int) -> list[tuple[str, int]]:
    """The channels a run sends on, with their share of the targets ("mixed": a third each)."""
    if channel != "mixed":
        return [(channel, targets)]
    third = targets // 3
    return [(WEBHOOK, targets - 2 * third), (EMAIL, third), (SMS, third)]


async def raw_leg(channel: str, settings: Settings, count: int, sinks: SinkPorts) -> Leg:
    if channel == "mixed":  # the three raw legs at once, each with its share
        started = time.perf_counter()
        legs = await asyncio.gather(
            *(raw_leg(part, settings, n, sinks) for part, n in split("mixed", count))
        )
        return Leg(sum(leg.sends for leg in legs), time.perf_counter() - started)
    if channel == WEBHOOK:
        return await raw_webhook(count, settings.delivery.per_host_concurrency, sinks)
    if channel == EMAIL:
        return await raw_email(count, settings, sinks)
    return await raw_sms(count, settings.delivery.per_host_concurrency, sinks)
