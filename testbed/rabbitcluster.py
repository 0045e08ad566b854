"""A RabbitMQ cluster of a few nodes on loopback, for scale-out runs: each node has its own
name (rabbit-a-<run>@localhost, ...), AMQP and distribution ports, data and log directories and
Erlang cookie under one base directory, no plugins, and a configuration of its own, so a
broker already running on this machine (its node, port 5672, its files) is left alone.

Nodes are started with the packaged `rabbitmq-server` and joined with
`rabbitmqctl join_cluster`; `kill` ends one outright (SIGKILL), `stop` takes down what is
left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import string
import uuid
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    packaged = RABBITMQ_BIN / name
    if packaged.is_file():
        return str(packaged)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: a RabbitMQ server installation is needed")
    return found


@dataclass
class Node:
    """One node: its name, ports, files, and the `rabbitmq-server` process once started."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / f"{self.name}.pid"


class RabbitCluster:
    """`size` nodes under `base`; `start` brings them up and joins them to the first."""

    def __init__(self, base: Path, size: int = 3) -> None:
        if not 1 <= size <= 26:
            raise ValueError("a cluster of 1 to 26 nodes")
        self.base = base
        run = uuid.uuid4().hex[:6]  # two clusters on one machine never share a node name
        self.nodes = [
            Node(f"rabbit-{letter}-{run}", free_port(), free_port(), base / f"rabbit-{letter}")
            for letter in string.ascii_lowercase[:size]
        ]
        (base / "home").mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")

    def _env(self, node: Node | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.base / "home"),  # the Erlang cookie these nodes share
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        if node is not None:
            node.base.mkdir(parents=True, exist_ok=True)
            config = node.base / "rabbitmq.conf"
            config.write_text(f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n")
            env |= {
                "RABBITMQ_NODENAME": f"{node.name}@localhost",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
                "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.base / "log"),
                "RABBITMQ_PID_FILE": str(node.pid_file),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(node.base / "plugins-expand"),
                # a node that fails to start writes its dump beside its logs, not in the cwd
                "ERL_CRASH_DUMP": str(node.base / "erl_crash.dump"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        return env

    async def ctl(self, node: Node, *args: str, limit_seconds: float = 120) -> str:
        """`rabbitmqctl -n NODE args` with this cluster's cookie; its output."""
        process = await asyncio.create_subprocess_exec(
            _tool("rabbitmqctl"),
            "-q",
            "-n",
            f"{node.name}@localhost",
            *args,
            env=self._env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), limit_seconds)
        if process.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {out.decode()}")
        return out.decode()

    async def _start_node(self, node: Node) -> None:
        env = self._env(node)
        with (node.base / "server.out").open("wb") as out:
            node.process = await asyncio.create_subprocess_exec(
                _tool("rabbitmq-server"),
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the caller does not reach it
            )
        await self.ctl(node, "wait", "--timeout", "120", str(node.pid_file))

    async def start(self) -> None:
        """Start every node (in parallel), then join the others to the first."""
        await asyncio.gather(*(self._start_node(node) for node in self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await self.ctl(node, "stop_app")
            await self.ctl(node, "join_cluster", f"{first.name}@localhost")
            await self.ctl(node, "start_app")
        await self.ctl(first, "await_online_nodes", str(len(self.nodes)))

    def pids(self) -> list[int]:
        """The Erlang VMs of the nodes still running."""
        found = []
        for node in self.nodes:
            with contextlib.suppress(OSError, ValueError):
                pid = int(node.pid_file.read_text().strip())
                os.kill(pid, 0)
                found.append(pid)
        return found

    async def kill(self, node: Node) -> None:
        """The node dies outright: its Erlang VM is sent SIGKILL."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(node.pid_file.read_text().strip()), signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            await asyncio.wait_for(node.process.wait(), 30)

    async def stop(self) -> None:
        """Stop every node still running; kill any that will not stop."""
        for node in self.nodes:
            if node.process is None or node.process.returncode is not None:
                continue
            with contextlib.suppress(RuntimeError, TimeoutError):
                await self.ctl(node, "stop", limit_seconds=60)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.process.wait(), 10)
            if node.process.returncode is None:
                await self.kill(node)
