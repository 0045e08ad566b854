"""The `dissemination` command: run the service, migrate the store, validate and publish alert
files, manage API tokens, create the first staff administrator, verify and export the
dissemination record, and apply retention."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

from channels.base import CHANNEL_NAMES
from core.alert import Tlp
from core.clock import utc_now
from core.errors import DisseminationError, RejectedInput
from core.masking import mask_text
from dissemination.accounts.roles import AccountRole
from dissemination.accounts.store import AccountStore
from dissemination.api.principal import grants_of
from dissemination.api.tokens import Role, TokenStore
from dissemination.broker.publisher import AlertPublisher
from dissemination.broker.topology import connect
from dissemination.controls import record
from dissemination.controls.recordkey import record_key
from dissemination.controls.retention import run_retention
from dissemination.errors import PublishFailed, SchemaOutOfDate
from dissemination.intake.decoding import decode_alerts, intake_rules
from dissemination.logs import configure, instance_name
from dissemination.service import Service, run_until_signalled
from dissemination.settings import Settings, load_settings
from dissemination.store.audit import Actor
from dissemination.store.database import Database, head_revision, require_existing_file
from dissemination.supervisor import process_count_argument, supervisor_command
from dissemination.workers import process_count, run_supervised

CONTENT_TYPES = {
    ".xml": "application/cap+xml",
    ".cap": "application/cap+xml",
    ".json": "application/json",
}


def _content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _run_loop(coro: object) -> int:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is absent only on unsupported platforms
        return asyncio.run(coro)  # type: ignore[arg-type]


async def _open_existing(settings: Settings) -> Database:
    """The store, migrated to this code's revision, for a command that reads or changes it:
    SchemaOutOfDate (never a new, empty database) when there is none yet or it is behind."""
    require_existing_file(settings.store, settings.data_path)
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        revision, head = await database.revision(), head_revision()
        if revision != head:
            raise SchemaOutOfDate(
                f"database schema is at revision {revision or 'none'}, this version needs "
                f"{head}: run `dissemination migrate`"
            )
    except BaseException:
        await database.close()
        raise
    return database


async def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if args.worker_index is not None:
        return await run_supervised(settings, args.worker_index, args.supervised_by, args.only)
    await run_until_signalled(Service(settings, only=args.only))
    return 0


def _supervise(count: int, args: argparse.Namespace) -> NoReturn:
    """Become the supervisor of `count` service processes: this process replaces itself with
    `python -m dissemination.supervisor`, which loads none of the service."""
    config = str(args.config) if args.config is not None else None
    command = supervisor_command(count, config=config, only=args.only)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # noqa: S606 - this interpreter, our own module, no shell


async def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    database = Database.from_settings(settings.store, settings.data_path)
    try:
        revision = await database.migrate()
    finally:
        await database.close()
    print(f"database schema at revision {revision}")
    return 0


def _validate_files(settings: Settings, files: Sequence[Path]) -> int:
    limits, defaults = intake_rules(settings.intake)
    invalid = 0
    for path in files:
        try:
            alerts = decode_alerts(path.read_bytes(), None, limits, defaults)
        except OSError as error:
            invalid += 1
            print(f"{path}: unreadable: {error.strerror}")
        except RejectedInput as rejected:
            invalid += 1
            print(f"{path}: invalid: {rejected.reason}")
            for detail in rejected.errors:
                print(f"    {detail.path}: {detail.message}")
        else:
            summary = ", ".join(f"{a.id} ({a.kind.value} {a.msg_type.value})" for a in alerts)
            print(f"{path}: valid: {summary}")
    return 1 if invalid else 0


async def _cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    connection = await connect(settings.broker, "dissemination-publish")
    failed = 0
    try:
        publisher = await AlertPublisher.open(connection, settings.broker)
        for path in args.files:
            try:
                await publisher.publish(
                    path.read_bytes(),
                    _content_type(path),
                    args.routing_key,
                    user_id=settings.broker.username,
                )
                print(f"{path}: confirmed")
            except (OSError, PublishFailed) as error:
                failed += 1
                print(f"{path}: NOT confirmed: {error}")
    finally:
        await connection.close()
    return 1 if failed else 0


async def _cmd_tokens(settings: Settings, args: argparse.Namespace) -> int:
    database = await _open_existing(settings)
    tokens = TokenStore(database)
    try:
        if args.tokens_command == "create":
            info, secret = await tokens.create(
                args.name, Role(args.role), utc_now(), args.sender or ()
            )
            senders = ", ".join(info.senders) or "no sender"
            print(f"token {info.id} ({info.role.value}, {info.name}, publishes as {senders});")
            print("its secret, shown once:")
            print(secret)
        elif args.tokens_command == "assign":
            return await _assign_token(database, tokens, args.token, args.account)
        elif args.tokens_command == "revoke":
            count = await tokens.revoke(args.token, utc_now())
            print(f"revoked {count} token(s)")
            return 0 if count else 1
        else:
            for info in await tokens.all():
                state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "live"
                senders = ",".join(info.senders) or "-"
                print(f"{info.id}  {info.role.value:<9}  {info.name}  {state}  {senders}")
    finally:
        await database.close()
    return 0


async def _assign_token(database: Database, tokens: TokenStore, name: str, username: str) -> int:
    account = await AccountStore(database).by_username(username)
    if account is None:
        raise DisseminationError(f"no account {username!r}")
    live = {t.name: t for t in await tokens.all() if t.revoked_at is None}
    token = live.get(name)
    if token is None:
        raise DisseminationError(f"no live token named {name!r}")
    if token.role not in grants_of(account.roles):
        raise DisseminationError(
            f"{account.username} does not hold the role {token.role.value} of token {name!r}"
        )
    await tokens.assign(name, account.id)
    print(f"token {token.id} ({name}) now belongs to {account.username}")
    return 0


async def _cmd_accounts(settings: Settings, args: argparse.Namespace) -> int:
    database = await _open_existing(settings)
    try:
        fields = {
            "username": args.username,
            "displayName": args.display_name or args.username,
            "organization": args.organization,
            "roles": [AccountRole.ADMINISTRATOR.value],
            "clearance": {"maxTlp": args.max_tlp.value, "caveats": sorted(set(args.caveat or ()))},
        }
        record, password = await AccountStore(database).create(
            fields, Actor(None, "cli"), utc_now()
        )
    finally:
        await database.close()
    print(f"administrator {record['username']} ({record['id']}); sign in with the temporary")
    print("password below, then enrol a TOTP second factor (POST /api/v1/account/totp):")
    print(password)
    return 0


async def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    database = await _open_existing(settings)
    try:
        if args.audit_command == "head":
            seq, digest = await record.head(database)
            print(f"{seq}:{digest}")
            return 0
        if args.audit_command == "verify":
            result = await record.verify(
                database,
                args.anchor,
                record_key(settings),
                settings.record.unkeyed_entries,
            )
            if result.intact:
                print(f"dissemination record intact: {result.checked} entries verified")
                return 0
            print(
                f"dissemination record BROKEN after {result.checked} good entries: {result.problem}"
            )
            return 1
        entries = await record.export(
            database, since=args.since, until=args.until, alert_id=args.alert
        )
        if args.format == "json":
            print(json.dumps(entries, indent=2, ensure_ascii=False))
        else:
            sys.stdout.write(record.as_csv(entries))
        return 0
    finally:
        await database.close()


async def _cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    database = await _open_existing(settings)
    now = utc_now()
    cutoff = now - timedelta(days=settings.retention.days)
    try:
        report = await run_retention(database, cutoff, now, dry_run=args.dry_run)
    finally:
        await database.close()
    verb, empty = ("would purge", "would empty") if args.dry_run else ("purged", "emptied")
    print(
        f"received before {cutoff.isoformat()}: {verb} {report.alerts} alerts, "
        f"{report.payloads} payloads, {report.rejections} rejected and "
        f"{report.quarantined} quarantined inputs; {empty} {report.sends} sends"
    )
    return 0


def _anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not (seq.isascii() and seq.isdigit() and len(digest) == 64):
        raise argparse.ArgumentTypeError(f"expected SEQ:HASH from `audit head`, got {text!r}")
    return int(seq), digest


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time with offset, got {text!r}")
    return moment


def _channel_list(text: str) -> tuple[str, ...]:
    channels = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [c for c in channels if c not in CHANNEL_NAMES]
    if not channels or unknown:
        message = f"expected channels among {', '.join(CHANNEL_NAMES)}, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return channels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dissemination", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file over config/default.toml (default: $DISSEMINATION_CONFIG); a "
        "relative service.data_dir is relative to its directory",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the service until SIGTERM/SIGINT")
    run.add_argument(
        "--only",
        type=_channel_list,
        metavar="CHANNELS",
        help="run only the delivery workers of these channels (comma-separated: "
        "email,sms,webhook), without intake or HTTP",
    )
    run.add_argument(
        "--workers",
        type=process_count_argument,
        metavar="N",
        help="service processes to run under one supervisor, competing for the same queues; "
        "the first also serves HTTP (default: service.workers, where 0 is one per core; 1: "
        "one process, no supervisor; more than one needs the PostgreSQL store)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply pending database migrations")
    validate = commands.add_parser("validate", help="check alert files offline")
    validate.add_argument("files", nargs="+", type=Path)
    publish = commands.add_parser("publish", help="publish alert files with publisher confirms")
    publish.add_argument("files", nargs="+", type=Path)
    publish.add_argument("--routing-key", default="alert.file")
    tokens = commands.add_parser("tokens", help="manage API tokens")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = token_commands.add_parser(
        "create",
        help="create a token (its secret is shown once)",
        description="Create an API token. Prints `token ID (ROLE, NAME, publishes as "
        "SENDERS);` and `its secret, shown once:`, then the secret alone on the last line: "
        "`fdt_` and 43 URL-safe base64 characters (A-Z a-z 0-9 - _), to be sent as "
        "`Authorization: Bearer <secret>`; e.g. `dissemination tokens create ... | tail -n 1`. "
        "Names are unique (a revoked token's too): a taken name is refused with exit status 2.",
    )
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True)
    create.add_argument(
        "--sender",
        action="append",
        help="a sender the holder may publish alerts as (repeat for several)",
    )
    assign = token_commands.add_parser(
        "assign",
        help="give a shared token an owner (it keeps its secret, role and senders)",
    )
    assign.add_argument("token", metavar="NAME")
    assign.add_argument("--account", required=True, metavar="USERNAME")
    revoke = token_commands.add_parser("revoke", help="revoke a token by id or name")
    revoke.add_argument("token")
    token_commands.add_parser("list", help="list tokens (never their secrets)")
    accounts = commands.add_parser("accounts", help="staff accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    admin = account_commands.add_parser(
        "create-admin",
        help="create an administrator account (its temporary password on the last line)",
        description="Create a staff administrator; reads nothing from standard input. Prints "
        "the temporary password alone on the last line (e.g. `... | tail -n 1`); sign in "
        "with it at POST /api/v1/session and enrol a TOTP second factor. A taken username "
        "is refused with exit status 2.",
    )
    admin.add_argument("--username", required=True)
    admin.add_argument("--display-name")
    admin.add_argument("--organization", default="Fusion Center")
    admin.add_argument(
        "--max-tlp", type=Tlp.parse, default=Tlp.RED, help="the clearance's highest TLP"
    )
    admin.add_argument("--caveat", action="append", help="a caveat held (repeat for several)")
    audit = commands.add_parser("audit", help="the dissemination record")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the hash chain; exit 1 if broken")
    verify.add_argument(
        "--anchor",
        type=_anchor,
        help="SEQ:HASH from an earlier `audit head`, kept outside the database",
    )
    audit_commands.add_parser("head", help="print the chain's head as SEQ:HASH, to anchor")
    export = audit_commands.add_parser("export", help="entries as CSV or JSON on stdout")
    export.add_argument("--since", type=_moment, help="from this time (ISO 8601 with offset)")
    export.add_argument("--until", type=_moment, help="before this time")
    export.add_argument("--alert", help="only this alert's entries")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    retention = commands.add_parser("retention", help="purge content past the retention period")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    retention_run = retention_commands.add_parser(
        "run", help="purge alert content older than retention.days unless revalidated"
    )
    retention_run.add_argument("--dry-run", action="store_true", help="count, change nothing")
    return parser


COMMANDS = {
    "run": _cmd_run,
    "migrate": _cmd_migrate,
    "publish": _cmd_publish,
    "tokens": _cmd_tokens,
    "accounts": _cmd_accounts,
    "audit": _cmd_audit,
    "retention": _cmd_retention,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
        service = settings.service
        configure(service.log_level, service.log_format, instance_name(service.instance_name))
        if args.command == "validate":
            return _validate_files(settings, args.files)
        if args.command == "run" and args.worker_index is None:
            count = process_count(args.workers, settings)
            if count > 1:
                _supervise(count, args)
        return _run_loop(COMMANDS[args.command](settings, args))
    except DisseminationError as error:
        print(f"dissemination: {mask_text(str(error))}", file=sys.stderr)
        return 2
