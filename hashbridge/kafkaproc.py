"""Run a real Apache Kafka broker (KRaft) from the official jars, for machines without Docker.

The jars come from Maven Central once (``mvn dependency:copy-dependencies`` on the pom beside
this module) and are cached outside the repo. A cluster lives in one data directory whose
``state.json`` records its layout (ports, cluster id) and broker pids, so that ``down`` and
``status`` work from any process. Readiness is a metadata request answered, never a sleep.
Node ids are Kafka broker ids (1, 2, 3), the numbers partition metadata names as leaders.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hashbridge.kafkaruntime import (
    HOST, KAFKA_VERSION, READY_TIMEOUT, STATE_FILE, STOP_TIMEOUT, Layout, Node, _properties_text,
    _tail_text, ensure_runtime, java_command, node_config, port_is_free, tail,
)
from shared.errors import BrokerStartError
from shared.processes import parent_death_signal, pid_alive

log = logging.getLogger(__name__)


def wait_ready(bootstrap: str, *, brokers: int = 1, node_id: int | None = None,
               timeout: float = READY_TIMEOUT, failed: Callable[[], str | None] = lambda: None,
               extra: Mapping[str, str] | None = None) -> float:
    """Block until ``bootstrap`` answers a metadata request listing enough brokers.

    ``failed`` is asked between attempts and returns a reason to give up early (the process
    exited). Each attempt blocks inside librdkafka for at most a second (no fixed sleep);
    ``extra`` adds client settings (SASL). Returns the seconds it took; raises
    :class:`BrokerStartError` at the deadline.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "reconnect.backoff.ms": 50,
                         "reconnect.backoff.max.ms": 250, "log_level": 0, **(extra or {})})
    start = time.monotonic()
    deadline = start + timeout
    while True:
        reason = failed()
        if reason:
            raise BrokerStartError(reason)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerStartError(f"Kafka at {bootstrap} did not answer metadata requests "
                                   f"with {brokers} broker(s) within {timeout:.0f}s")
        try:
            metadata = admin.list_topics(timeout=min(1.0, remaining))
        except KafkaException:
            continue
        if len(metadata.brokers) >= brokers and (node_id is None or node_id in metadata.brokers):
            return time.monotonic() - start
        # Answered but not every broker registered yet: a short back-off between retries.
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _is_broker(pid: int, config_path: Path) -> bool:
    """True if ``pid`` is alive and is the broker started with ``config_path`` (not a reused pid)."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            cmdline = (proc / str(pid) / "cmdline").read_bytes()  # empty for a zombie
        except OSError:
            return False
        return b"kafka.Kafka" in cmdline and str(config_path).encode() in cmdline
    return pid_alive(pid)


def _wait_exit(pid: int, child: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Wait for a process to end; True if it did. Uses a pidfd where there is one."""
    if child is not None:
        try:
            child.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfd (macOS, old kernels): poll the condition
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not pid_alive(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_processes(pids: Iterable[tuple[int, subprocess.Popen[bytes] | None]],
                   timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every process at once, wait up to ``timeout`` in all, then SIGKILL the rest."""
    pending = list(pids)
    for pid, _ in pending:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid, child in pending:
        if not _wait_exit(pid, child, max(0.0, deadline - time.monotonic())):
            log.warning("Kafka process %d ignored SIGTERM for %.0fs: killing it", pid, timeout)
            _signal(pid, signal.SIGKILL)
            _wait_exit(pid, child, 5.0)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The state file of a data dir, or None if there is none (or it is unreadable)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(data_dir: Path, layout: Layout, pids: Mapping[int, int]) -> None:
    """Write the state file atomically (mode 0600: it may hold test SASL passwords)."""
    state = {"kafka_version": KAFKA_VERSION, "cluster_id": layout.cluster_id,
             "bootstrap": layout.bootstrap, "sasl_bootstrap": layout.sasl_bootstrap,
             "nodes": [asdict(node) for node in layout.nodes],
             "sasl_users": dict(layout.sasl_users),
             "pids": {str(node_id): pid for node_id, pid in pids.items()}}
    tmp = data_dir / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2)
    os.replace(tmp, data_dir / STATE_FILE)


def layout_from_state(state: Mapping[str, Any]) -> Layout:
    nodes = tuple(Node(**node) for node in state["nodes"])
    return Layout(str(state["cluster_id"]), nodes, dict(state.get("sasl_users") or {}))


class Cluster:
    """A local KRaft cluster in one data dir: start, stop, kill and restart its brokers.

    Holds the ``Popen`` of every broker it started (to reap it) and adopts the pids in the state
    file for brokers another process started, so ``hashbridge kafka down`` can stop them.
    """

    def __init__(self, data_dir: Path, layout: Layout,
                 extra_config: Mapping[str, str] | None = None, *, detach: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.layout = layout
        self.extra_config = dict(extra_config or {})
        self.detach = detach
        self.ready_seconds: float | None = None
        self.already_running = False
        self._pids: dict[int, int] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def attach(cls, data_dir: Path) -> Cluster | None:
        """The cluster recorded in ``data_dir``'s state file (running or not), or None."""
        state = read_state(Path(data_dir))
        if not state or "nodes" not in state:
            return None
        cluster = cls(Path(data_dir), layout_from_state(state))
        cluster._pids = {int(node): int(pid) for node, pid in (state.get("pids") or {}).items()}
        return cluster

    @property
    def bootstrap(self) -> str:
        """Every node's plaintext address, comma-separated (clients survive one node down)."""
        return self.layout.bootstrap

    @property
    def sasl_bootstrap(self) -> str | None:
        """The SASL_PLAINTEXT (PLAIN) addresses, when the cluster was started with users."""
        return self.layout.sasl_bootstrap

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(node.node_id for node in self.layout.nodes)

    def node(self, node_id: int) -> Node:
        for node in self.layout.nodes:
            if node.node_id == node_id:
                return node
        raise ValueError(f"no broker with id {node_id} (ids: {self.node_ids})")

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    def log_file(self, node_id: int) -> Path:
        """The broker's log4j log (the file a start failure names)."""
        return self.node_dir(node_id) / "server.log"

    def _config_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def running(self) -> dict[int, int]:
        """Node id -> pid of every broker of this cluster that is alive now."""
        return {node: pid for node, pid in self._pids.items()
                if _is_broker(pid, self._config_path(node))}

    def healthy(self, timeout: float = 5.0) -> bool:
        """True if the cluster answers a metadata request naming all its brokers."""
        try:
            wait_ready(self.bootstrap, brokers=len(self.layout.nodes), timeout=timeout)
        except BrokerStartError:
            return False
        return True

    def start(self, timeout: float = READY_TIMEOUT) -> float:
        """Start every node not running, wait until all answer; return seconds to ready."""
        libs = ensure_runtime()
        begin = time.monotonic()
        running = self.running()
        todo = [node for node in self.layout.nodes if node.node_id not in running]
        self._check_ports(todo)
        for node in todo:
            self._write_config(node)
        self._format(libs, todo)
        started = [self._launch(libs, node) for node in todo]
        self._await(started, self.bootstrap, begin + timeout, brokers=len(self.layout.nodes))
        self.ready_seconds = time.monotonic() - begin
        return self.ready_seconds

    def start_broker(self, node_id: int, timeout: float = READY_TIMEOUT) -> float:
        """(Re)start one node and wait until it answers with itself registered; return seconds."""
        node = self.node(node_id)
        if node_id in self.running():
            return 0.0
        libs = ensure_runtime()
        begin = time.monotonic()
        self._check_ports([node])
        self._write_config(node)
        self._launch(libs, node)
        self._await([node_id], node.address, begin + timeout, node_id=node_id)
        return time.monotonic() - begin

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one node (a crash, for fault tests) and wait until it is gone."""
        self._stop_nodes([node_id], sig=signal.SIGKILL)

    def stop_broker(self, node_id: int, timeout: float = STOP_TIMEOUT) -> None:
        """Stop one node cleanly: SIGTERM, then SIGKILL after ``timeout``."""
        self._stop_nodes([node_id], timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """Stop every node (SIGTERM all, SIGKILL stragglers); idempotent. Returns the pids."""
        pids = list(self.running().values())
        self._stop_nodes(list(self._pids), timeout=timeout)
        return pids

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stop_nodes(self, node_ids: list[int], timeout: float = STOP_TIMEOUT,
                    sig: int = signal.SIGTERM) -> None:
        running = self.running()
        targets = [(running[n], self._children.get(n)) for n in node_ids if n in running]
        if sig == signal.SIGKILL:
            for pid, _ in targets:
                _signal(pid, signal.SIGKILL)
        stop_processes(targets, timeout=timeout)
        for node_id in node_ids:
            self._pids.pop(node_id, None)
            child = self._children.pop(node_id, None)
            if child is not None and child.poll() is None:
                child.wait(5.0)
        write_state(self.data_dir, self.layout, self._pids)

    def _await(self, started: list[int], bootstrap: str, deadline: float, **want: int) -> None:
        """Wait for readiness; on failure stop what was started and say why, with the logs."""
        try:
            wait_ready(bootstrap, timeout=max(1.0, deadline - time.monotonic()),
                       failed=lambda: self._exit_reason(started), **want)
        except BrokerStartError as exc:
            crashed = self._exit_reason(started) is not None
            self._stop_nodes(started, timeout=5.0)
            if crashed:
                raise
            raise BrokerStartError(f"{exc}\n{self._log_report(started)}") from None

    def _check_ports(self, nodes: Iterable[Node]) -> None:
        for node in nodes:
            for port in (node.port, node.controller_port, node.sasl_port):
                if port is not None and not port_is_free(port):
                    raise BrokerStartError(
                        f"port {port} on {HOST} is in use, so Kafka node {node.node_id} cannot "
                        f"listen there: stop whatever holds it or pick another port (--port); "
                        f"the node's log would be {self.log_file(node.node_id)}")

    def _write_config(self, node: Node) -> None:
        log_dir = self.node_dir(node.node_id) / "data"
        log_dir.mkdir(parents=True, exist_ok=True)
        config = node_config(self.layout, node, log_dir, self.extra_config)
        path = self._config_path(node.node_id)
        path.write_text(_properties_text(config))
        path.chmod(0o600)

    def _format(self, libs: Path, nodes: list[Node]) -> None:
        """Format the storage of nodes never started, all at once and with one cluster id."""
        jobs = []
        for node in nodes:
            if (self.node_dir(node.node_id) / "data" / "meta.properties").exists():
                continue
            cmd = java_command(libs, self.log_file(node.node_id), "kafka.tools.StorageTool",
                               "format", "-c", str(self._config_path(node.node_id)),
                               "-t", self.layout.cluster_id, "--ignore-formatted")
            jobs.append((node, subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for node, job in jobs:
            output, _ = job.communicate(timeout=120)
            if job.returncode != 0:
                raise BrokerStartError(
                    f"formatting the storage of Kafka node {node.node_id} failed (exit "
                    f"{job.returncode}); log {self.log_file(node.node_id)}:\n"
                    f"{_tail_text(output.decode('utf-8', 'replace'))}")

    def _launch(self, libs: Path, node: Node) -> int:
        node_dir = self.node_dir(node.node_id)
        cmd = java_command(libs, self.log_file(node.node_id), "kafka.Kafka",
                           str(self._config_path(node.node_id)))
        with open(node_dir / "stdout.log", "ab") as out:
            child = subprocess.Popen(cmd, cwd=node_dir, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=None if self.detach else parent_death_signal(signal.SIGTERM))
        self._children[node.node_id] = child
        self._pids[node.node_id] = child.pid
        write_state(self.data_dir, self.layout, self._pids)
        log.info("started Kafka node %d (pid %d) on %s", node.node_id, child.pid, node.address)
        return node.node_id

    def _exit_reason(self, node_ids: Iterable[int]) -> str | None:
        for node_id in node_ids:
            child = self._children.get(node_id)
            if child is not None and child.poll() is not None:
                return (f"Kafka node {node_id} exited with code {child.returncode} before it was "
                        f"ready.\n{self._log_report([node_id])}")
        return None

    def _log_report(self, node_ids: Iterable[int]) -> str:
        parts = []
        for node_id in node_ids:
            log_file = self.log_file(node_id)
            parts.append(f"Log file: {log_file}\nLast lines of {log_file}:\n{tail(log_file)}")
            stdout = tail(self.node_dir(node_id) / "stdout.log")
            if stdout.strip():
                parts.append(f"Process output ({self.node_dir(node_id) / 'stdout.log'}):\n{stdout}")
        return "\n".join(parts)
