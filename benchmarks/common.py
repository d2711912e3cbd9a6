"""What every benchmark part shares: the machine description, a timer, and the result files.

Convention: a part ``benchmarks/<name>.py`` exposes ``run(quick: bool = False) -> dict`` and
writes ``benchmarks/results/<name>.json`` through :func:`write_result`, so ``report.py`` can
rebuild ``RESULTS.md`` from the result files alone, without re-running anything.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from shared.startup import BLAS_THREAD_VARS

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PLOTS_DIR = BENCH_DIR / "plots"
CACHE_DIR = Path(os.environ.get("HASHBRIDGE_BENCH_CACHE", Path.home() / ".cache" / "hashbridge" / "bench"))
KAFKA_VERSION = "4.4.0"  # the broker the project runs (hashbridge/kafka/pom.xml)
DEADLINE_ENV = "HASHBRIDGE_BENCH_DEADLINE"  # epoch seconds by which a part should finish (set by __main__)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory and the versions that decide the figures."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "blas_threads": {v: os.environ.get(v, "unset") for v in BLAS_THREAD_VARS},
    }
    for pkg in ("numpy", "numba", "confluent-kafka", "mmh3", "pyarrow",
                "vowpalwabbit", "scikit-learn", "river"):
        info[pkg] = _version(pkg)
    try:
        import confluent_kafka

        info["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        info["librdkafka"] = "not installed"
    return info


def cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class CpuSplit:
    """Where the host's CPU went between two marks: cores used by given processes, by the JVMs
    (the broker) and the host's idle share, from ``/proc`` (Linux; empty elsewhere). It says
    whether a stage that runs beside the broker on 2 cores is CPU-bound or waits."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._t0 = 0.0
        self._start: dict[str, Any] = {}

    @staticmethod
    def host() -> tuple[int, int]:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return f[3] + f[4], sum(f[:8])  # idle + iowait, all

    @staticmethod
    def ticks(pid: int) -> tuple[str, int]:
        """(command name, CPU ticks used so far) of a process."""
        st = open(f"/proc/{pid}/stat").read()
        rest = st[st.rindex(")") + 2:].split()
        return st[st.index("(") + 1:st.rindex(")")], int(rest[11]) + int(rest[12])  # comm, utime + stime

    @staticmethod
    def group_pids(pgid: int) -> list[int]:
        """The live processes of a process group (a service started with ``start_new_session``)."""
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    st = open(f"/proc/{name}/stat").read()
                except OSError:
                    continue
                if int(st[st.rindex(")") + 2:].split()[2]) == pgid:
                    out.append(int(name))
        return out

    def sample(self, pids: list[int]) -> dict[str, Any]:
        """CPU ticks so far of ``pids`` together (``own``), of the JVMs, and the host's (idle, all)."""
        own, java = 0, 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                comm, ticks = self.ticks(int(name))
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            if int(name) in pids:
                own += ticks
            elif comm == "java":
                java += ticks
        return {"host": self.host(), "own": own, "java": java}

    def start(self, pids: list[int]) -> None:
        try:
            self._t0, self._start = time.perf_counter(), self.sample(pids)
        except OSError:
            self._start = {}

    def stop(self, pids: list[int]) -> dict[str, float]:
        """Cores used by ``pids``, by JVMs, and the host's idle share since :meth:`start`."""
        if not self._start:
            return {}
        try:
            end, span = self.sample(pids), time.perf_counter() - self._t0
        except OSError:
            return {}
        (i0, t0), (i1, t1) = self._start["host"], end["host"]
        return {"processes_cores": (end["own"] - self._start["own"]) / self._hz / span,
                "broker_jvm_cores": (end["java"] - self._start["java"]) / self._hz / span,
                "host_idle_share": (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0}


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    VmHWM from /proc, because ``ru_maxrss`` survives ``exec``: a child started by a big parent
    would report the parent's peak. Falls back to ``ru_maxrss`` (KiB) where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Call ``fn`` ``repeats`` times; wall seconds (median/min/max/all) and CPU seconds per call.

    The last call's return value is kept under ``"result"`` so callers can check correctness
    (an AUC, a count) without timing an extra run.
    """
    walls: list[float] = []
    cpus: list[float] = []
    result: Any = None
    for _ in range(max(1, repeats)):
        c0, t0 = cpu_seconds(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    return {
        "median": statistics.median(walls),
        "min": min(walls),
        "max": max(walls),
        "all": walls,
        "cpu_median": statistics.median(cpus),
        "cpu_all": cpus,
        "result": result,
    }


def rate(n: int, t: dict[str, Any]) -> dict[str, float]:
    """Records per second from a :func:`timed` result: median, min and max (min rate = max time)."""
    return {"median": n / t["median"], "min": n / t["max"], "max": n / t["min"]}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_result(name: str, figures: dict, notes: list[str]) -> Path:
    """Write ``results/<name>.json`` as ``{"name","date","machine","figures","notes"}``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "figures": _jsonable(figures),
        "notes": list(notes),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_results(directory: Path = RESULTS_DIR) -> dict[str, dict]:
    """Every result file of ``directory`` by part name (the report's only input)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out[doc.get("name", path.stem)] = doc
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested figure dict by dotted path (list items as ``[i]``)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


class StageCpu:
    """CPU seconds each stage used between the producer's start and the end of the clock: the
    producer process (sampled while it lives, so its last ~20 ms may be missed), the trainer's
    process group (supervisor and workers), the broker's JVM, and the host's idle share. On 2
    shared cores this says which stage the time went to, rather than guessing it from wall times."""

    def __init__(self, trainer_pgid: int) -> None:
        self.trainer_pgid = trainer_pgid
        self.producer_pid, self.producer_ticks = 0, 0  # the pid is set once the producer starts
        self.producer_base = 0  # its ticks when the clock started (a watching producer started earlier)
        self.hz = os.sysconf("SC_CLK_TCK")
        self.start_: dict[str, Any] = {}

    def _sample(self) -> dict[str, Any]:
        return {**CpuSplit().sample(CpuSplit.group_pids(self.trainer_pgid)), "t": time.perf_counter()}

    def start(self) -> None:
        self.start_ = self._sample()
        if self.producer_pid:
            self.poll()
            self.producer_base = self.producer_ticks

    def poll(self) -> None:
        """Keep the producer's latest count (its /proc entry goes when it is reaped)."""
        try:
            self.producer_ticks = CpuSplit.ticks(self.producer_pid)[1]
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> dict[str, float]:
        end, a = self._sample(), self.start_
        span = end["t"] - a["t"]
        (i0, h0), (i1, h1) = a["host"], end["host"]
        return {"producer_cpu_s": (self.producer_ticks - self.producer_base) / self.hz,
                "trainer_cpu_s": (end["own"] - a["own"]) / self.hz,
                "broker_cpu_s": (end["java"] - a["java"]) / self.hz,
                "host_idle_share": (i1 - i0) / (h1 - h0) if h1 > h0 else 0.0, "span_s": span}
