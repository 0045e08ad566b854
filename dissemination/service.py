"""The running service: assembles store, broker, intake and HTTP server, and takes them down
in the order that loses nothing (stop consuming, drain or requeue, then close)."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from channels.destinations import parse_networks
from channels.webhook import WebhookChannel
from dissemination.admin_api import Admin, add_admin_routes, load_matcher
from dissemination.app import Runtime, create_app
from dissemination.audit import AuditLog
from dissemination.broker import connect, declare_intake
from dissemination.database import Database, head_revision
from dissemination.delivery import DeliveryStore, RetryPolicy, WebhookWorker
from dissemination.dispatch import (
    DeliveryDispatcher,
    declare_deliveries,
    delivery_queue,
    retry_queue,
)
from dissemination.errors import DisseminationError
from dissemination.intake import Backoff, Clock, IntakeConsumer, IntakeProcessor, utc_now
from dissemination.ledger import Ledger
from dissemination.planning import Planner
from dissemination.publisher import AlertPublisher
from dissemination.settings import Settings
from dissemination.tokens import TokenStore
from subscriptions.directory import Directory
from subscriptions.matcher import Matcher
from subscriptions.sync import DirectoryFollower

log = logging.getLogger(__name__)


class SchemaOutOfDate(DisseminationError):
    """The database has not been migrated to the revision this code needs."""


@dataclass(slots=True)
class Service:
    """One service instance: consumer(s) and HTTP server sharing a store and a broker."""

    settings: Settings
    clock: Clock = utc_now
    database: Database | None = None
    broker: AbstractRobustConnection | None = None
    consumer: IntakeConsumer | None = None
    http: web.AppRunner | None = None
    follower_task: asyncio.Task[None] | None = None
    webhook_worker: WebhookWorker | None = None

    async def start(self) -> None:
        settings = self.settings
        self.database = Database.from_settings(settings.store, settings.data_path)
        revision, head = await self.database.revision(), head_revision()
        if revision != head:
            raise SchemaOutOfDate(
                f"database schema is at revision {revision or 'none'}, this version needs {head}: "
                "run `dissemination migrate`"
            )
        directory = Directory(self.database)
        follower = DirectoryFollower(directory, Matcher(), settings.service.directory_poll_seconds)
        await follower.start_from_now()
        follower.matcher = await load_matcher(directory)
        ledger = Ledger(self.database, Planner(follower.matcher))
        processor = IntakeProcessor(ledger, settings.intake, self.clock)
        self.broker = await connect(settings.broker, "dissemination")
        channel = await self.broker.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=settings.broker.prefetch)
        topology = await declare_intake(channel, settings.broker)
        dispatcher = DeliveryDispatcher(
            await declare_deliveries(
                await self.broker.channel(publisher_confirms=True, on_return_raises=True),
                settings.broker,
            ),
            settings.broker.task_batch_size,
        )
        self.webhook_worker = await self._webhook_worker()
        self.consumer = IntakeConsumer(
            processor, topology, settings.broker.concurrency, Backoff(settings.store), dispatcher
        )
        publisher = await AlertPublisher.open(self.broker, settings.broker)
        runtime = Runtime(
            self.database, ledger, TokenStore(self.database), processor, publisher, self.broker
        )
        self.follower_task = asyncio.create_task(follower.run(), name="directory-follower")
        app = create_app(runtime, settings.http)
        add_admin_routes(
            app,
            Admin(
                directory,
                follower.matcher,
                AuditLog(self.database),
                parse_networks(settings.webhook.allowed_networks),
            ),
        )
        self.http = web.AppRunner(app, access_log=None)
        await self.http.setup()
        await web.TCPSite(self.http, settings.http.host, settings.http.port).start()
        await self.webhook_worker.start()
        await self.consumer.start()
        log.info(
            "service started: consuming %s, HTTP on %s:%s",
            settings.broker.inbound_queue,
            settings.http.host,
            settings.http.port,
        )

    async def _webhook_worker(self) -> WebhookWorker:
        assert self.broker is not None
        assert self.database is not None
        settings = self.settings
        channel = await self.broker.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=settings.broker.prefetch)
        queue = await channel.declare_queue(
            delivery_queue(settings.broker, "webhook"),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        return WebhookWorker(
            DeliveryStore(self.database),
            WebhookChannel(parse_networks(settings.webhook.allowed_networks)),
            queue,
            channel.default_exchange,
            retry_queue(settings.broker, "webhook"),
            RetryPolicy(settings.broker.max_attempts),
            self.clock,
            stuck_after_seconds=settings.broker.stuck_after_seconds,
        )

    async def stop(self) -> None:
        """Drain in-flight messages (or requeue them), then close everything."""
        if self.follower_task is not None:
            self.follower_task.cancel()
        if self.webhook_worker is not None:
            await self.webhook_worker.stop()
        if self.consumer is not None:
            await self.consumer.stop(self.settings.service.shutdown_grace_seconds)
        if self.http is not None:
            await self.http.cleanup()
        if self.broker is not None:
            await self.broker.close()
        if self.database is not None:
            await self.database.close()
        log.info("service stopped")


async def run_until_signalled(service: Service) -> None:
    """Start `service`, run until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await stop.wait()
        log.info("signal received; shutting down")
    finally:
        await service.stop()
