"""The broker's runtime and configuration: official jars fetched once, the java command line,
ports, and the KRaft properties of each node. Process control lives in :mod:`hashbridge.kafkaproc`.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import BrokerStartError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # frames carry thousands of records
RUNTIME_FILES = Path(__file__).with_name("kafka")
POM = RUNTIME_FILES / "pom.xml"
LOG4J_CONFIG = RUNTIME_FILES / "log4j2.properties"
# C1 only: a test/demo broker starts in about half the CPU time and leaves the cores to the
# trainer; HASHBRIDGE_KAFKA_JVM_OPTS is appended, so "-XX:TieredStopAtLevel=4" brings C2 back.
# A long-lived broker wants C2: once warm it takes about half the CPU per request (the benchmark
# harness starts one so and warms it up first: benchmarks/brokerjit.py, docs/benchmarks.md).
# The parallel collector with a fixed 64 MiB young generation: on 2 cores its young pauses took
# 3-4 ms every ~1 s under 1,000 requests/s, G1's (MaxGCPauseMillis=20) 10-21 ms every ~2 s, which
# alone put ~1% of requests 10-20 ms late (docs/scorer.md). The broker's old generation barely
# grows (the log cleaner's 128 MiB dedupe buffer and metadata), so full collections stay rare.
JVM_OPTS = (
    "-Xmx512m", "-XX:+UseParallelGC", "-Xmn64m", "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)
STATE_FILE = "state.json"
TAIL_LINES = 20


def cache_dir() -> Path:
    """Where jars and the default data dir live: ``$HASHBRIDGE_CACHE`` or ``~/.cache/hashbridge``."""
    env = os.environ.get("HASHBRIDGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hashbridge"


def default_data_dir() -> Path:
    """The data dir ``hashbridge kafka`` uses unless told: ``$HASHBRIDGE_KAFKA_DIR`` or cache/run."""
    env = os.environ.get("HASHBRIDGE_KAFKA_DIR")
    return Path(env).expanduser() if env else cache_dir() / "run"


def ensure_runtime() -> Path:
    """Fetch the broker jars once and return their directory.

    The marker, which names the pom's digest, is written only after ``mvn`` succeeded, so an
    interrupted download (or an edited pom) is fetched again; a file lock keeps two processes
    from fetching into the same directory at once.
    """
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / ".complete"
    stamp = f"pom sha256 {hashlib.sha256(POM.read_bytes()).hexdigest()}\n"
    if marker.exists() and marker.read_text().startswith(stamp):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text().startswith(stamp):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerStartError("mvn is not on PATH: it fetches the Kafka jars once "
                                   "(install Maven 3.8+, or set HASHBRIDGE_BOOTSTRAP)")
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        log.info("fetching Apache Kafka %s jars into %s (once)", KAFKA_VERSION, libs)
        done = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        jars = sorted(p.name for p in libs.glob("*.jar")) if libs.is_dir() else []
        if done.returncode != 0 or f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
            raise BrokerStartError(f"mvn could not fetch the Kafka {KAFKA_VERSION} jars "
                                   f"(exit {done.returncode}):\n{_tail_text(done.stdout + done.stderr)}")
        marker.write_text(stamp + "\n".join(jars) + "\n")
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise BrokerStartError("java is not on PATH (nor in $JAVA_HOME): Kafka needs Java 17+")
    return java


def java_command(libs: Path, log_file: Path, main_class: str, *args: str) -> list[str]:
    """The JVM command for one Kafka main class, logging through our log4j2 file."""
    classpath = os.pathsep.join([str(libs / "*"), str(LOG4J_CONFIG.parent)])
    extra = shlex.split(os.environ.get("HASHBRIDGE_KAFKA_JVM_OPTS", ""))
    return [_java(), *JVM_OPTS, *extra, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dhashbridge.kafka.log={log_file}", "-cp", classpath, main_class, *args]


def free_port() -> int:
    """A loopback port nobody listens on now (the usual small race: good enough for tests)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a server could bind ``HOST:port`` (SO_REUSEADDR, as the JVM does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def cluster_settings(brokers: int) -> dict[str, str]:
    """Broker settings for tests and the demo, apart from listeners and storage.

    Shared with the Docker path so both kinds of broker behave the same. Small group timeouts
    make rebalances fast; a 3-node cluster replicates everything three ways with min ISR 2.
    """
    rf, isr = ("3", "2") if brokers >= 3 else ("1", "1")
    return {
        "num.partitions": "4",
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "log.retention.bytes": "-1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "group.consumer.min.session.timeout.ms": "2000",
        "group.consumer.session.timeout.ms": "6000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        "group.consumer.heartbeat.interval.ms": "1000",
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "6000",
    }


@dataclass(frozen=True)
class Node:
    """One combined broker+controller process and its loopback ports."""

    node_id: int
    port: int
    controller_port: int
    sasl_port: int | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class Layout:
    """What stays fixed for a cluster in one data dir: its id, nodes, ports and SASL users."""

    cluster_id: str
    nodes: tuple[Node, ...]
    sasl_users: Mapping[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def sasl_bootstrap(self) -> str | None:
        ports = [node.sasl_port for node in self.nodes if node.sasl_port is not None]
        return ",".join(f"{HOST}:{port}" for port in ports) or None


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_config(layout: Layout, node: Node, log_dir: Path,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full ``server.properties`` of one node (static controller quorum on loopback)."""
    listeners = [f"PLAINTEXT://{HOST}:{node.port}", f"CONTROLLER://{HOST}:{node.controller_port}"]
    advertised = [f"PLAINTEXT://{HOST}:{node.port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    config = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(
            f"{n.node_id}@{HOST}:{n.controller_port}" for n in layout.nodes),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
    }
    if node.sasl_port is not None:
        listeners.append(f"SASL_PLAINTEXT://{HOST}:{node.sasl_port}")
        advertised.append(f"SASL_PLAINTEXT://{HOST}:{node.sasl_port}")
        protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        users = " ".join(f"user_{name}={_jaas_quote(pw)}" for name, pw in layout.sasl_users.items())
        config["sasl.enabled.mechanisms"] = "PLAIN"
        config["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};")
    config |= {"listeners": ",".join(listeners), "advertised.listeners": ",".join(advertised),
               "listener.security.protocol.map": ",".join(protocols)}
    return config | cluster_settings(len(layout.nodes)) | dict(extra or {})


def _properties_text(config: Mapping[str, str]) -> str:
    escape = str.maketrans({"\\": "\\\\", "\n": "\\n"})
    return "".join(f"{key}={value.translate(escape)}\n" for key, value in config.items())


def _tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file, indented for an error message ('' if there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
            return _tail_text(handle.read().decode("utf-8", "replace"), lines)
    except FileNotFoundError:
        return ""


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with '-': the storage tool's argument
    parser would read it as an option (one start in 64 failed that way).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
