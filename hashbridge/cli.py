"""The ``hashbridge`` command: one entry point, subcommands dispatched to each part's ``main``.

Subcommands import their module lazily so that ``hashbridge kafka status`` does not pay for
numba's start-up, and so that each service keeps its own ``__main__`` (parse, wire signals, run);
the import runs as ``shared.startup`` arranges (one BLAS thread, no collector while importing).
"""
from __future__ import annotations

import sys

from shared.startup import import_quietly, pin_blas_threads

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("hashbridge.localkafka", "start, stop or inspect the local Apache Kafka broker"),
    "keygen": ("producer.keygen", "make a new secret hashing key (data owner side)"),
    "schema": ("producer.schema_cli", "draft a schema from a sample file (data owner side)"),
    "produce": ("producer.__main__", "hash records and publish training frames"),
    "score": ("producer.scoreclient", "send records for scoring and join the replies back"),
    "audit": ("producer.audit", "measure what the learner's side could recover"),
    "train": ("trainer.__main__", "run the trainer: supervisor plus Hogwild workers"),
    "scorer": ("scorer.__main__", "run the scorer service on the score topic"),
    "dlq": ("hashbridge.dlq", "list dead-letter records with their reasons"),
    "status": ("hashbridge.status", "show the running pipeline at a glance"),
    "demo": ("hashbridge.demo", "run the whole pipeline on the Adult data"),
}


def _usage() -> str:
    lines = ["usage: hashbridge <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n'hashbridge <command> --help' describes each command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"hashbridge: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    pin_blas_threads()
    module = import_quietly(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
