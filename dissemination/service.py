"""The running service: assembles store, broker, intake and HTTP server, and takes them down
in the order that loses nothing (stop consuming, drain or requeue, then close)."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from datetime import timedelta

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from channels.base import ChannelName, DeliveryChannel
from channels.destinations import parse_networks
from channels.email import EmailChannel, SmtpConfig
from channels.sms import SmsChannel, TwilioConfig, UnconfiguredSms
from channels.webhook import WebhookChannel
from core.clock import Clock, utc_now
from dissemination.acks.capack import CapAcks
from dissemination.acks.escalator import EscalationEngine
from dissemination.acks.tokens import AckSigner, signing_keys
from dissemination.acks.tracking import AckIssuer, AckStore
from dissemination.api.acks import AckEndpoints, add_ack_routes
from dissemination.api.app import Runtime, create_app
from dissemination.api.controls import ControlEndpoints, add_control_routes
from dissemination.api.directory import Admin, add_admin_routes, load_matcher
from dissemination.api.progress import ProgressEndpoints, add_progress_routes
from dissemination.api.tokens import TokenStore
from dissemination.api.twiliohooks import STATUS_HOOK, TwilioHooks, add_twilio_hooks
from dissemination.broker.dispatch import (
    DeliveryDispatcher,
    declare_deliveries,
    delivery_queue,
    retry_schedule,
)
from dissemination.broker.publisher import AlertPublisher
from dissemination.broker.topology import connect, declare_intake
from dissemination.controls.approvalrules import ApprovalPolicy, approval_policy
from dissemination.delivery.breaker import CircuitBreakers
from dissemination.delivery.claims import DeliveryStore
from dissemination.delivery.messages import AckLinks, MessageBuilder
from dissemination.delivery.worker import DeliveryWorker
from dissemination.directory.store import Directory
from dissemination.directory.sync import DirectoryFollower
from dissemination.errors import SchemaOutOfDate
from dissemination.intake.consumer import IntakeConsumer
from dissemination.intake.processor import IntakeProcessor
from dissemination.ledger.alerts import Ledger
from dissemination.ledger.planning import Planner
from dissemination.ledger.progress import ProgressStore
from dissemination.periodic import PeriodicTask
from dissemination.retrying import Backoff
from dissemination.settings import Settings
from dissemination.store.audit import AuditLog
from dissemination.store.database import Database, head_revision
from subscriptions.matcher import Matcher

log = logging.getLogger(__name__)


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
    escalator: EscalationEngine | None = None
    cap_acks: CapAcks | None = None
    periodic: list[PeriodicTask] = field(default_factory=list)
    workers: list[DeliveryWorker] = field(default_factory=list)
    only: tuple[str, ...] | None = None

    async def start(self) -> None:
        """Start everything, or with `only` set, just the delivery workers of those channels
        (no intake, no HTTP): a worker process that shares the load of other instances."""
        settings = self.settings
        approval = approval_policy(settings.approval.rules)
        self.database = Database.from_settings(settings.store, settings.data_path)
        revision, head = await self.database.revision(), head_revision()
        if revision != head:
            raise SchemaOutOfDate(
                f"database schema is at revision {revision or 'none'}, this version needs {head}: "
                "run `dissemination migrate`"
            )
        self.broker = await connect(settings.broker, "dissemination")
        tasks_channel = await self.broker.channel(publisher_confirms=True, on_return_raises=True)
        dispatcher = DeliveryDispatcher(
            tasks_channel,
            await declare_deliveries(tasks_channel, settings.broker),
            settings.broker,
        )
        keys = await signing_keys(self.database, settings.ack.signing_keys, self.clock())
        signer = AckSigner(keys, settings.ack.retired_keys_deadline)
        links = AckLinks(signer, settings.http.public_url)
        channels = self.only if self.only is not None else settings.delivery.channels
        self.workers = [
            await self._worker(self._channel(name), MessageBuilder(links), dispatcher)
            for name in channels
        ]
        if self.only is None:
            await self._start_intake_and_http(dispatcher, signer, approval)
        for worker in self.workers:
            await worker.start()
        if self.consumer is not None:
            await self.consumer.start()
        for task in self.periodic:
            task.start()
        log.info(
            "service started: delivering %s%s",
            ", ".join(channels) or "nothing",
            "" if self.only is not None else f"; consuming {settings.broker.inbound_queue}",
        )

    async def _start_intake_and_http(
        self, dispatcher: DeliveryDispatcher, signer: AckSigner, approval: ApprovalPolicy
    ) -> None:
        assert self.broker is not None
        assert self.database is not None
        settings = self.settings
        directory = Directory(self.database)
        follower = DirectoryFollower(directory, Matcher(), settings.service.directory_poll_seconds)
        await follower.start_from_now()
        follower.matcher = await load_matcher(directory)
        lifetime = timedelta(hours=settings.ack.default_lifetime_hours)
        ledger = Ledger(self.database, Planner(follower.matcher), AckIssuer(lifetime))
        processor = IntakeProcessor(ledger, settings.intake, self.clock, approval)
        channel = await self.broker.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=settings.broker.prefetch)
        topology = await declare_intake(channel, settings.broker)
        self.consumer = IntakeConsumer(
            processor,
            topology,
            settings.broker.concurrency,
            Backoff(settings.store.retry_initial_seconds, settings.store.retry_max_seconds),
            dispatcher,
            own_user=settings.broker.username,
        )
        publisher = await AlertPublisher.open(self.broker, settings.broker)
        runtime = Runtime(
            self.database,
            ledger,
            TokenStore(self.database),
            processor,
            publisher,
            self.broker,
            settings.broker.username,
        )
        self.follower_task = asyncio.create_task(follower.run(), name="directory-follower")
        self.escalator = EscalationEngine(self.database, dispatcher, self.clock)
        ack_channel = await self.broker.channel(publisher_confirms=True)
        ack_exchange = await ack_channel.declare_exchange(
            settings.cap_ack.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.cap_acks = CapAcks(
            self.database,
            AlertPublisher(ack_exchange, mandatory=False),
            settings.cap_ack,
            self.clock,
        )
        poll = settings.escalation.poll_seconds
        self.periodic = [
            PeriodicTask("escalation", self.escalator.run_due, poll),
            PeriodicTask("cap-acks", self.cap_acks.run_due, poll),
        ]
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
        add_twilio_hooks(app, TwilioHooks(self.database, settings, self.clock))
        add_ack_routes(app, AckEndpoints(signer, AckStore(self.database), self.clock))
        add_progress_routes(app, ProgressEndpoints(ProgressStore(self.database), self.clock))
        add_control_routes(app, ControlEndpoints(self.database, dispatcher, self.clock))
        self.http = web.AppRunner(app, access_log=None)
        await self.http.setup()
        await web.TCPSite(self.http, settings.http.host, settings.http.port).start()

    def _channel(self, name: str) -> DeliveryChannel:
        """The channel `name` as the settings configure it."""
        settings = self.settings
        if name == ChannelName.WEBHOOK:
            webhook = settings.webhook
            timeout = webhook.timeout_seconds
            return WebhookChannel(
                parse_networks(webhook.allowed_networks),
                connect_timeout=timeout / 3,
                read_timeout=timeout,
                total_timeout=timeout,
            )
        if name == ChannelName.EMAIL:
            email = settings.email
            config = SmtpConfig(
                host=email.host,
                port=email.port,
                security=email.security,
                username=email.username or None,
                password=email.password,
                from_address=email.from_address,
                pool_size=email.pool_size,
                timeout_seconds=email.timeout_seconds,
                validate_certs=email.validate_certs,
                message_id_domain=email.message_id_domain,
            )
            return EmailChannel(config)
        sms = settings.sms
        if not sms.account_sid:
            return UnconfiguredSms()
        return SmsChannel(
            TwilioConfig(
                account_sid=sms.account_sid,
                auth_token=sms.auth_token or "",
                messaging_service_sid=sms.messaging_service_sid or None,
                from_number=sms.from_number or None,
                api_base=sms.api_base or None,
                status_callback_url=settings.http.public_url.rstrip("/") + STATUS_HOOK,
                timeout_seconds=sms.timeout_seconds,
            ),
            messages_per_second=sms.messages_per_second,
        )

    async def _worker(
        self, channel: DeliveryChannel, builder: MessageBuilder, dispatcher: DeliveryDispatcher
    ) -> DeliveryWorker:
        assert self.broker is not None
        assert self.database is not None
        settings = self.settings
        amqp = await self.broker.channel(publisher_confirms=True, on_return_raises=True)
        await amqp.set_qos(prefetch_count=settings.broker.delivery_prefetch)
        queue = await amqp.declare_queue(
            delivery_queue(settings.broker, channel.name),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        delivery = settings.delivery
        return DeliveryWorker(
            channel,
            builder,
            DeliveryStore(self.database),
            queue,
            dispatcher,
            retry_schedule(settings.broker),
            CircuitBreakers(delivery.breaker_failures, delivery.breaker_cooldown_seconds),
            self.clock,
            concurrency=delivery.concurrency,
            per_host_concurrency=delivery.per_host_concurrency,
            stuck_after_seconds=settings.broker.stuck_after_seconds,
        )

    async def stop(self) -> None:
        """Drain in-flight messages (or requeue them), then close everything."""
        if self.follower_task is not None:
            self.follower_task.cancel()
        for task in self.periodic:
            await task.stop()
        for worker in self.workers:
            await worker.stop()
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
