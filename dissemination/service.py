"""The running service: assembled from small named start-up steps, each of which registers
how to undo itself, and taken down in the reverse order, which is the order that loses
nothing: stop the jobs and the directory follower, stop delivering, stop consuming (drain
in-flight messages or requeue them), stop serving HTTP, then close the broker and the store.

A step that fails leaves everything started before it to be stopped by `stop`, so a service
that could not start never leaks a connection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from dataclasses import dataclass
from datetime import timedelta

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from channels.base import DeliveryChannel
from channels.destinations import parse_networks
from core.clock import Clock, utc_now
from core.validation import prepare_validators
from dissemination.acks.capack import CapAcks
from dissemination.acks.escalator import EscalationEngine
from dissemination.acks.tokens import AckSigner, signing_keys
from dissemination.acks.tracking import AckIssuer
from dissemination.api.app import Runtime
from dissemination.api.directory import Admin, load_matcher
from dissemination.api.metrics import serve_metrics
from dissemination.api.tokens import TokenStore
from dissemination.broker.dispatch import (
    DeliveryDispatcher,
    declare_deliveries,
    delivery_queue,
    retry_schedule,
    side_queue_arguments,
    urgent_queue,
)
from dissemination.broker.publisher import AlertPublisher
from dissemination.broker.topology import connect, declare_intake, redacted_url
from dissemination.controls.approvalrules import ApprovalPolicy, approval_policy
from dissemination.controls.authority import parse_grants
from dissemination.controls.jobs import RecordVerification, ScheduledControls
from dissemination.controls.recordkey import RecordKey, record_key
from dissemination.delivery.breaker import CircuitBreakers
from dissemination.delivery.claims import DeliveryStore
from dissemination.delivery.configure import configured_channel, describe_channel
from dissemination.delivery.messages import AckLinks, MessageBuilder
from dissemination.delivery.worker import DeliveryWorker
from dissemination.directory.store import Directory
from dissemination.directory.sync import DirectoryFollower
from dissemination.errors import SchemaOutOfDate
from dissemination.gauges import GaugeSampler, Queues
from dissemination.httpserver import Routed, serve_http
from dissemination.intake.consumer import IntakeConsumer
from dissemination.intake.pipeline import AlertPipeline
from dissemination.intake.release import SendReleaser
from dissemination.ledger.alerts import Ledger
from dissemination.ledger.planning import Planner
from dissemination.ledger.sends import Sends
from dissemination.metrics import Metrics
from dissemination.periodic import PeriodicTask
from dissemination.retrying import Backoff
from dissemination.settings import Settings
from dissemination.store.audit import AuditLog
from dissemination.store.database import Database, head_revision, require_existing_file
from subscriptions.matcher import Matcher

log = structlog.stdlib.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Front:
    """What serves alerts in and people: absent when the instance only delivers; without
    HTTP in a process that is not its group's lead."""

    consumer: IntakeConsumer
    http: web.AppRunner | None
    escalator: EscalationEngine
    cap_acks: CapAcks
    releaser: SendReleaser


@dataclass(frozen=True, slots=True)
class Parts:
    """A started service's parts."""

    database: Database
    broker: AbstractRobustConnection
    workers: tuple[DeliveryWorker, ...]
    front: Front | None


class NotStarted(RuntimeError):
    """A part of the service was asked for before `start` made it (or in a delivery-only
    instance, which has no intake and no HTTP)."""


class Service:
    """One service instance: intake, HTTP and delivery workers sharing a store and a broker;
    with `only`, just the delivery workers of those channels (no intake, no HTTP): a worker
    process that shares the load of other instances. `lead=False`: one of a supervised group
    of processes that is not its lead: intake and delivery, without the HTTP listener and
    the periodic jobs, which the lead runs (see `dissemination.supervisor`)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock = utc_now,
        only: tuple[str, ...] | None = None,
        *,
        lead: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.only = only
        self.lead = lead
        self._parts: Parts | None = None
        self.metrics = Metrics(only if only is not None else settings.delivery.channels)
        """This instance's metrics, in a registry of its own."""
        self.gauges: GaugeSampler | None = None
        self.record_key: RecordKey | None = None
        """The dissemination record's key, once `start` has read it."""
        self.scheduled: ScheduledControls | None = None
        """Retention and record anchoring, once `start` has scheduled them (not in a
        delivery-only instance)."""
        self._runtime: Runtime | None = None
        self._undo = contextlib.AsyncExitStack()

    async def start(self, *, freeze_heap: bool = False) -> None:
        """Run the start-up steps in order; on failure, `stop` undoes those that ran. With
        `freeze_heap` (a process of its own), what start-up made is frozen out of later
        garbage collections (`freeze_start_up_heap`) before the first task or alert."""
        settings = self.settings
        approval = approval_policy(settings.approval.rules)
        database = await self._open_store()
        self.record_key = record_key(settings)  # after the store: no key file without a store
        broker = await self._connect_broker()
        dispatcher = await self._delivery_dispatcher(broker)
        signer = await self._ack_signer(database)
        channels = self.only if self.only is not None else settings.delivery.channels
        links = AckLinks(signer, settings.http.public_url)
        workers = tuple(
            [
                await self._worker(
                    database,
                    broker,
                    configured_channel(name, settings),
                    MessageBuilder(links),
                    dispatcher,
                )
                for name in channels
            ]
        )
        front = None
        if self.only is None:
            front = await self._start_front(database, broker, dispatcher, signer, approval)
        if workers:
            await workers[0].store.warm_up(settings.store.pool_size, self.clock())
        if freeze_heap:  # before any work arrives: the collection first holds the loop
            freeze_start_up_heap()
        for worker in workers:
            await self._start_worker(worker)
        if front is not None:
            await self._start_consuming(front.consumer)
            if self.lead:
                self._start_jobs(front, database)
        await self._start_metrics(database, broker, workers, front)
        self._parts = Parts(database, broker, workers, front)
        if self._runtime is not None:  # ready: every part above is taking work
            self._runtime.started = True
        for name in channels:
            log.info("channel_transport", channel=name, transport=describe_channel(name, settings))
        log.info(
            "service_started",
            channels=list(channels),
            consuming=settings.broker.inbound_queue if self.only is None else None,
            lead=self.lead,
        )

    async def stop(self) -> None:
        """Undo every start-up step that ran, in reverse order."""
        if self._runtime is not None:  # no longer ready while the parts wind down
            self._runtime.started = False
        await self._undo.aclose()
        self._parts = None
        log.info("service_stopped")

    # The parts, once started.

    def _started(self) -> Parts:
        if self._parts is None:
            raise NotStarted("the service is not started")
        return self._parts

    def _front(self) -> Front:
        front = self._started().front
        if front is None:
            raise NotStarted("this instance only delivers: it has no intake and no HTTP")
        return front

    @property
    def database(self) -> Database:
        return self._started().database

    @property
    def broker(self) -> AbstractRobustConnection:
        return self._started().broker

    @property
    def workers(self) -> tuple[DeliveryWorker, ...]:
        return self._started().workers

    @property
    def consumer(self) -> IntakeConsumer:
        return self._front().consumer

    @property
    def http(self) -> web.AppRunner:
        http = self._front().http
        if http is None:
            raise NotStarted("this process is not its group's lead: it serves no HTTP")
        return http

    @property
    def record_verification(self) -> RecordVerification:
        """What this instance's last scheduled verification of the record found."""
        scheduled = self.scheduled
        return scheduled.anchoring.status if scheduled is not None else RecordVerification()

    @property
    def escalator(self) -> EscalationEngine:
        return self._front().escalator

    @property
    def cap_acks(self) -> CapAcks:
        return self._front().cap_acks

    @property
    def releaser(self) -> SendReleaser:
        """Releases ad-hoc sends that are due (the "sends" job)."""
        return self._front().releaser

    # Start-up steps: each returns what it made and registers how to undo it.

    async def _open_store(self) -> Database:
        """The store, at the schema revision this code needs."""
        settings = self.settings
        require_existing_file(settings.store, settings.data_path)
        database = Database.from_settings(settings.store, settings.data_path)
        self._undo.push_async_callback(database.close)
        revision, head = await database.revision(), head_revision()
        if revision != head:
            raise SchemaOutOfDate(
                f"database schema is at revision {revision or 'none'}, this version needs {head}: "
                "run `dissemination migrate`"
            )
        log.info("store_opened", url=database.engine.url.render_as_string(hide_password=True))
        return database

    async def _connect_broker(self) -> AbstractRobustConnection:
        broker = await connect(self.settings.broker, "dissemination")
        self._undo.push_async_callback(broker.close)
        settings = self.settings.broker
        log.info("broker_connected", url=redacted_url(settings), user=settings.username)
        return broker

    async def _delivery_dispatcher(self, broker: AbstractRobustConnection) -> DeliveryDispatcher:
        """Delivery tasks onto the channel and retry queues, confirmed."""
        channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare_deliveries(channel, self.settings.broker)
        return DeliveryDispatcher(channel, topology, self.settings.broker)

    async def _ack_signer(self, database: Database) -> AckSigner:
        ack = self.settings.ack
        keys = await signing_keys(database, ack.signing_keys, self.clock())
        return AckSigner(keys, ack.retired_keys_deadline)

    async def _start_front(
        self,
        database: Database,
        broker: AbstractRobustConnection,
        dispatcher: DeliveryDispatcher,
        signer: AckSigner,
        approval: ApprovalPolicy,
    ) -> Front:
        """Intake, the HTTP API and the periodic jobs, on a matcher kept current by the
        directory follower."""
        settings = self.settings
        prepare_validators()
        directory = Directory(database, settings.service.max_subscriptions_per_stakeholder)
        follower = await self._follow_directory(directory)
        lifetime = timedelta(hours=settings.ack.default_lifetime_hours)
        ledger = Ledger(database, Planner(follower.matcher), AckIssuer(lifetime), self.record_key)
        pipeline = AlertPipeline(ledger, settings.intake, self.clock, approval, self.metrics)
        consumer = await self._consumer(broker, pipeline, dispatcher)
        publisher = await AlertPublisher.open(broker, settings.broker)
        runtime = Runtime(
            database,
            ledger,
            TokenStore(database),
            pipeline,
            publisher,
            broker,
            settings.broker.username,
            started=False,
        )
        self._runtime = runtime
        admin = Admin(
            directory,
            follower.matcher,
            AuditLog(database),
            parse_networks(settings.webhook.allowed_networks),
        )
        releaser = SendReleaser(Sends(database), publisher, settings.broker.username, self.clock)
        http = None
        if self.lead:
            routed = Routed(
                runtime, admin, database, dispatcher, signer, releaser, self.clock, self.metrics
            )
            http = await serve_http(settings, routed, self._undo)
        escalator = EscalationEngine(database, dispatcher, self.clock, self.metrics)
        cap_acks = await self._cap_acks(database, broker)
        return Front(consumer, http, escalator, cap_acks, releaser)

    async def _follow_directory(self, directory: Directory) -> DirectoryFollower:
        """The matcher, loaded from the directory and kept current by the follower."""
        follower = DirectoryFollower(
            directory, Matcher(), self.settings.service.directory_poll_seconds
        )
        await follower.start_from_now()
        follower.matcher = await load_matcher(directory)
        task = asyncio.create_task(follower.run(), name="directory-follower")
        self._undo.push_async_callback(_cancel, task)
        return follower

    async def _consumer(
        self,
        broker: AbstractRobustConnection,
        pipeline: AlertPipeline,
        dispatcher: DeliveryDispatcher,
    ) -> IntakeConsumer:
        settings = self.settings
        channel = await broker.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=settings.broker.prefetch)
        topology = await declare_intake(channel, settings.broker)
        return IntakeConsumer(
            pipeline,
            topology,
            settings.broker.concurrency,
            Backoff(settings.store.retry_initial_seconds, settings.store.retry_max_seconds),
            dispatcher,
            own_user=settings.broker.username,
            grants=parse_grants(settings.broker.publishers),
        )

    async def _cap_acks(self, database: Database, broker: AbstractRobustConnection) -> CapAcks:
        """CAP Acks to originators, on their own exchange (not mandatory: nobody need bind)."""
        settings = self.settings
        channel = await broker.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            settings.cap_ack.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return CapAcks(
            database, AlertPublisher(exchange, mandatory=False), settings.cap_ack, self.clock
        )

    async def _worker(
        self,
        database: Database,
        broker: AbstractRobustConnection,
        channel: DeliveryChannel,
        builder: MessageBuilder,
        dispatcher: DeliveryDispatcher,
    ) -> DeliveryWorker:
        settings = self.settings
        amqp = await broker.channel(publisher_confirms=True, on_return_raises=True)
        await amqp.set_qos(prefetch_count=settings.broker.delivery_prefetch)
        queue = await amqp.declare_queue(
            delivery_queue(settings.broker, channel.name),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        urgent = await amqp.declare_queue(
            urgent_queue(settings.broker, channel.name),
            durable=True,
            arguments=side_queue_arguments(settings.broker),
        )
        delivery = settings.delivery
        return DeliveryWorker(
            channel,
            builder,
            DeliveryStore(database, self.record_key),
            queue,
            urgent,
            dispatcher,
            retry_schedule(settings.broker),
            CircuitBreakers(delivery.breaker_failures, delivery.breaker_cooldown_seconds),
            self.clock,
            concurrency=delivery.concurrency,
            per_host_concurrency=delivery.per_host_concurrency,
            stuck_after_seconds=settings.broker.stuck_after_seconds,
            metrics=self.metrics,
            outage_backoff=Backoff(
                settings.store.retry_initial_seconds, settings.store.retry_max_seconds
            ),
        )

    async def _start_worker(self, worker: DeliveryWorker) -> None:
        self._undo.push_async_callback(worker.stop)
        await worker.start()

    async def _start_consuming(self, consumer: IntakeConsumer) -> None:
        """Consume `alerts.inbound`; on stop, in-flight messages finish within the grace
        period or go back to the queue."""
        await consumer.start()
        self._undo.push_async_callback(consumer.stop, self.settings.service.shutdown_grace_seconds)

    def _start_jobs(self, front: Front, database: Database) -> None:
        """The periodic jobs: escalation steps and CAP Acks; retention and record anchoring
        unless their interval is 0."""
        poll = self.settings.escalation.poll_seconds
        self.scheduled = ScheduledControls(
            database, self.settings, self.record_key, self.clock, self.metrics
        )
        for job in (
            PeriodicTask("escalation", front.escalator.run_due, poll),
            PeriodicTask("cap-acks", front.cap_acks.run_due, poll),
            PeriodicTask("sends", front.releaser.run_due, self.settings.sends.poll_seconds),
            *self.scheduled.tasks(),
        ):
            job.start()
            self._undo.push_async_callback(job.stop)

    async def _start_metrics(
        self,
        database: Database,
        connection: AbstractRobustConnection,
        workers: tuple[DeliveryWorker, ...],
        front: Front | None,
    ) -> None:
        """The job that refreshes the gauges a scrape must not wait for, and the metrics
        listener of its own when `[metrics] port` is set."""
        settings = self.settings
        broker = settings.broker
        queues = Queues(
            {worker.channel: (worker.queue.name, worker.urgent_queue.name) for worker in workers},
            broker.inbound_queue if front is not None else None,
            broker.dead_letter_queue if front is not None else None,
        )
        amqp = await connection.channel()
        self.gauges = GaugeSampler(
            self.metrics, database, amqp, queues, broker.stuck_after_seconds, self.clock
        )
        job = PeriodicTask("metrics-gauges", self.gauges.refresh, settings.metrics.refresh_seconds)
        job.start()
        self._undo.push_async_callback(job.stop)
        port = settings.metrics.port
        if port:
            listener = await serve_metrics(self.metrics, settings.metrics.host, port)
            self._undo.push_async_callback(listener.cleanup)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def freeze_start_up_heap() -> None:
    """Collect start-up's garbage, then leave what start-up made (the matcher and its index,
    compiled schemas and statements, imported modules) out of every later collection. The
    oldest generation's collections otherwise walk all of it, stalling the process for about
    100 ms at a time: in `bench.latency` each process's first such collection delayed the 4
    alerts then under way to 55-112 ms. Frozen objects are still freed when nothing refers
    to them; only reference cycles among them are kept."""
    gc.collect()
    gc.freeze()


async def run_until_signalled(service: Service) -> None:
    """Start `service`, run until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start(freeze_heap=True)
        await stop.wait()
        log.info("shutting_down", why="signal received")
    finally:
        await service.stop()
