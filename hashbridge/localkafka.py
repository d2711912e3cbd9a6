"""``hashbridge kafka up|down|status``: the project's own Apache Kafka broker, and where to find one.

:func:`resolve_bootstrap` is the one place that decides which cluster a test, the demo or a
service uses: ``$HASHBRIDGE_BOOTSTRAP`` if set; else (tests only) a pinned ``apache/kafka``
container when a Docker engine answers; else the local broker, started if it is not running.
:func:`start_cluster` starts (or finds) a local KRaft cluster of 1 or 3 nodes; processes are
managed in :mod:`hashbridge.kafkaproc`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hashbridge.kafkaproc import Cluster, wait_ready
from hashbridge.kafkaruntime import (
    DEFAULT_PORT, KAFKA_VERSION, READY_TIMEOUT, STATE_FILE, STOP_TIMEOUT, Layout, Node, cluster_settings,
    default_data_dir, free_port, new_cluster_id, port_is_free,
)
from shared.errors import BrokerStartError, ConfigError, HashbridgeError

__all__ = [
    "BOOTSTRAP_ENV", "DOCKER_IMAGE", "Cluster", "KafkaLease", "docker_available", "free_port",
    "main", "resolve_bootstrap", "start_cluster", "stop_cluster",
]

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "HASHBRIDGE_BOOTSTRAP"
DOCKER_IMAGE = f"apache/kafka:{KAFKA_VERSION}"  # same version as hashbridge/kafka/pom.xml
_USER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def start_cluster(brokers: int = 1, port: int | None = None, data_dir: Path | str | None = None,
                  *, sasl_users: Mapping[str, str] | None = None,
                  extra_config: Mapping[str, str] | None = None,
                  timeout: float = READY_TIMEOUT, detach: bool = True) -> Cluster:
    """Start a local KRaft cluster of ``brokers`` combined nodes and wait until it answers.

    ``port`` is node 1's client port (default: the one this data dir used last, else 9092); the
    other ports are picked free and kept across restarts. ``sasl_users`` adds a SASL_PLAINTEXT
    (PLAIN) listener per node beside the plaintext one (``Cluster.sasl_bootstrap``).
    ``extra_config`` overrides broker settings. If the cluster in ``data_dir`` already runs and
    answers, it is returned as is (``already_running`` set); a stopped node is started again.
    ``detach=False`` (test fixtures) makes the brokers die with this process (Linux).
    """
    if brokers not in (1, 3):
        raise ConfigError(f"brokers must be 1 or 3, not {brokers}")
    for name in sasl_users or {}:
        if not _USER_NAME.fullmatch(name):
            raise ConfigError(f"SASL user name {name!r} must match {_USER_NAME.pattern}")
    root = Path(data_dir or default_data_dir()).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    existing = Cluster.attach(root)
    if existing is not None and existing.running():
        if (len(existing.layout.nodes) != brokers
                or port not in (None, existing.layout.nodes[0].port)
                or bool(sasl_users) != bool(existing.sasl_bootstrap)):
            raise BrokerStartError(
                f"a {len(existing.layout.nodes)}-broker Kafka from {root} is already running at "
                f"{existing.bootstrap}; stop it first (hashbridge kafka down --data-dir {root})")
        if len(existing.running()) == brokers and existing.healthy():
            existing.already_running = True
            return existing
        existing.extra_config, existing.detach = dict(extra_config or {}), detach
        existing.start(timeout)
        return existing
    layout = _plan(root, existing.layout if existing else None, brokers, port, sasl_users)
    cluster = Cluster(root, layout, extra_config, detach=detach)
    cluster.start(timeout)
    return cluster


def stop_cluster(data_dir: Path | str | None = None, timeout: float = STOP_TIMEOUT) -> list[int]:
    """Stop the cluster recorded in ``data_dir`` (idempotent); return the pids it stopped."""
    cluster = Cluster.attach(Path(data_dir or default_data_dir()).expanduser().resolve())
    return cluster.stop(timeout) if cluster is not None else []


def _stored_cluster_id(root: Path) -> str | None:
    meta = root / "node-1" / "data" / "meta.properties"
    if meta.exists():
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.partition("=")[2].strip()
    return None


def _plan(root: Path, previous: Layout | None, brokers: int, port: int | None,
          sasl_users: Mapping[str, str] | None) -> Layout:
    """Ports and cluster id for a start: reuse what the data dir used last where still free."""
    formatted_id = _stored_cluster_id(root)
    if previous is not None and len(previous.nodes) != brokers and formatted_id:
        raise BrokerStartError(
            f"{root} holds a {len(previous.nodes)}-broker cluster, not {brokers}: use another "
            f"--data-dir, or remove that one")
    first = port or (previous.nodes[0].port if previous else DEFAULT_PORT)
    taken = {first}

    def pick(old: int | None) -> int:
        chosen = old if old and old not in taken and port_is_free(old) else free_port()
        while chosen in taken:
            chosen = free_port()
        taken.add(chosen)
        return chosen

    old_nodes = previous.nodes if previous and len(previous.nodes) == brokers else (None,) * brokers
    nodes = tuple(
        Node(node_id=i + 1,
             port=first if i == 0 else pick(old.port if old else None),
             controller_port=pick(old.controller_port if old else None),
             sasl_port=pick(old.sasl_port if old else None) if sasl_users else None)
        for i, old in enumerate(old_nodes))
    cluster_id = formatted_id or (previous.cluster_id if previous else new_cluster_id())
    return Layout(cluster_id, nodes, dict(sasl_users or {}))


@dataclass(frozen=True)
class KafkaLease:
    """A bootstrap address and how to let go of it: ``close()`` stops only what was started."""

    bootstrap: str
    source: str  # "env", "docker" or "local"
    close: Callable[[], object] = lambda: None
    cluster: Cluster | None = None

    def __enter__(self) -> KafkaLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def resolve_bootstrap(*, use_docker: bool = False, data_dir: Path | str | None = None,
                      port: int | None = None, timeout: float = READY_TIMEOUT,
                      detach: bool = True, extra_config: Mapping[str, str] | None = None) -> KafkaLease:
    """Find the Kafka cluster to use, starting one if needed (see the module docstring).

    ``use_docker`` is for test fixtures: the demo and the services use the local broker.
    ``close()`` on the lease stops only what this call started.
    """
    env = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if env:
        log.info("using Kafka at %s (from $%s)", env, BOOTSTRAP_ENV)
        return KafkaLease(env, "env")
    if use_docker and docker_available():
        return _docker_kafka(timeout)
    cluster = start_cluster(1, port=port, data_dir=data_dir, timeout=timeout, detach=detach,
                            extra_config=extra_config)
    close: Callable[[], object] = (lambda: None) if cluster.already_running else cluster.stop
    return KafkaLease(cluster.bootstrap, "local", close, cluster)


def docker_available() -> bool:
    """True if a Docker engine answers a ping (never raises: no SDK or no socket is False)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


def docker_env_name(key: str) -> str:
    """The apache/kafka image's env name for a property: ``_``->``__``, ``-``->``___``, ``.``->``_``."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def _docker_kafka(timeout: float) -> KafkaLease:
    """A single-node ``apache/kafka`` container with the local broker's settings."""
    from testcontainers.core.container import DockerContainer

    port = free_port()  # the same number inside and outside, so the advertised address works
    settings = {
        "process.roles": "broker,controller", "node.id": "1",
        "listeners": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093",
        "advertised.listeners": f"PLAINTEXT://localhost:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
        "controller.quorum.voters": "1@localhost:9093",
    } | cluster_settings(1)
    container = DockerContainer(DOCKER_IMAGE).with_bind_ports(port, port)
    container.with_env("CLUSTER_ID", new_cluster_id())
    for key, value in settings.items():
        container.with_env(docker_env_name(key), value)
    container.start()

    def exited() -> str | None:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            logs = wrapped.logs(tail=20).decode("utf-8", "replace")
            return f"the {DOCKER_IMAGE} container exited before it was ready:\n{logs}"
        return None

    bootstrap = f"localhost:{port}"
    try:
        wait_ready(bootstrap, timeout=timeout, failed=exited)
    except BaseException:
        container.stop()
        raise
    log.info("using Kafka in a %s container at %s", DOCKER_IMAGE, bootstrap)
    return KafkaLease(bootstrap, "docker", container.stop)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hashbridge kafka",
        description=f"Start, stop or inspect a local Apache Kafka {KAFKA_VERSION} (KRaft) "
                    "from the official jars (fetched once with mvn).")
    sub = parser.add_subparsers(dest="action", required=True)
    data_help = ("data directory (env HASHBRIDGE_KAFKA_DIR; default "
                 "$HASHBRIDGE_CACHE/run or ~/.cache/hashbridge/run)")
    up = sub.add_parser("up", help="start the broker(s) and wait until they answer")
    up.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                    help="1 node, or 3 combined broker+controller nodes (default 1)")
    up.add_argument("--port", type=int, default=None,
                    help=f"client port of node 1 (default: the last one used, else {DEFAULT_PORT})")
    up.add_argument("--data-dir", type=Path, default=None, help=data_help)
    up.add_argument("--timeout", type=float, default=READY_TIMEOUT,
                    help="seconds to wait for readiness (default %(default)s)")
    down = sub.add_parser("down", help="stop the broker(s): SIGTERM, then SIGKILL")
    down.add_argument("--data-dir", type=Path, default=None, help=data_help)
    down.add_argument("--timeout", type=float, default=STOP_TIMEOUT,
                      help="seconds to wait before SIGKILL (default %(default)s)")
    down.add_argument("--wipe", action="store_true",
                      help="then delete the data directory (topics, offsets, logs): the local broker "
                           "keeps everything (no retention limit) and a busy dev machine fills its disk")
    status = sub.add_parser("status", help="say whether the broker runs and answers (exit 0 if so)")
    status.add_argument("--data-dir", type=Path, default=None, help=data_help)
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    return parser


def _up(args: argparse.Namespace) -> int:
    cluster = start_cluster(args.brokers, port=args.port, data_dir=args.data_dir,
                            timeout=args.timeout)
    where = f"{cluster.bootstrap} (data dir {cluster.data_dir})"
    if cluster.already_running:
        print(f"Kafka {KAFKA_VERSION} is already running and answering at {where}")
    else:
        print(f"Kafka {KAFKA_VERSION} ready at {where} in {cluster.ready_seconds:.1f}s; "
              f"logs: {cluster.log_file(1).parent}/server.log")
    print(f"bootstrap: {cluster.bootstrap}")
    return 0


def data_bytes(root: Path) -> int:
    """Bytes under ``root`` (what a data directory holds on disk; 0 if it is gone)."""
    total = 0
    for base, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass  # a segment deleted meanwhile
    return total


def _down(args: argparse.Namespace) -> int:
    pids = stop_cluster(args.data_dir, timeout=args.timeout)
    root = Path(args.data_dir or default_data_dir()).expanduser()
    print(f"stopped Kafka (pids {', '.join(map(str, pids))})" if pids
          else f"Kafka from {root} is not running")
    if args.wipe and root.exists():
        if not (root / STATE_FILE).exists():  # never delete a directory this tool did not create
            print(f"hashbridge kafka down: {root} has no {STATE_FILE}: not a hashbridge data directory, "
                  "left as it is", file=sys.stderr)
            return 2
        size = data_bytes(root)
        shutil.rmtree(root)
        print(f"deleted {root} ({size / 2**20:,.1f} MiB)")
    return 0


def _status(args: argparse.Namespace) -> int:
    root = Path(args.data_dir or default_data_dir()).expanduser().resolve()
    cluster = Cluster.attach(root)
    running = cluster.running() if cluster else {}
    healthy = bool(cluster and running) and cluster.healthy()  # type: ignore[union-attr]
    if args.json:
        print(json.dumps({"data_dir": str(root), "data_bytes": data_bytes(root), "running": bool(running),
                          "healthy": healthy,
                          "bootstrap": cluster.bootstrap if cluster else None,
                          "pids": {str(n): pid for n, pid in running.items()}}))
    elif cluster is None or not running:
        print(f"Kafka from {root} is not running")
    else:
        state = "answering" if healthy else "NOT answering metadata requests"
        print(f"Kafka {KAFKA_VERSION} running at {cluster.bootstrap}, {len(running)}/"
              f"{len(cluster.node_ids)} broker(s) (pids {', '.join(map(str, running.values()))}), "
              f"{state}; data dir {root} ({data_bytes(root) / 2**20:,.1f} MiB; `down --wipe` deletes it)")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hashbridge kafka``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return {"up": _up, "down": _down, "status": _status}[args.action](args)
    except HashbridgeError as exc:
        print(f"hashbridge kafka {args.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
