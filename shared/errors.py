"""One error hierarchy for every hashbridge service.

Errors carry a short machine-readable ``reason`` so that a dead-letter record, a metric label
and an error reply can all name the same cause without parsing a message.
"""
from __future__ import annotations


class HashbridgeError(Exception):
    """Base class of every error hashbridge raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(HashbridgeError):
    """Bad settings, flags, schema or key file: the operator must fix something."""

    reason = "config"


class KeyFileError(ConfigError):
    """A key file that is missing, too short, or readable by others."""

    reason = "key_file"


class SchemaError(ConfigError):
    """A schema file that cannot be used as written."""

    reason = "schema"


class FrameError(HashbridgeError):
    """A frame that fails to decode or validate; ``reason`` names the first check that failed."""

    reason = "malformed"


class SpecMismatch(FrameError):
    """A well-formed frame from another key space or hash spec than the model's."""

    reason = "spec_mismatch"


class RecordError(HashbridgeError):
    """One input record that cannot be turned into features (bad column count, number, label)."""

    reason = "bad_record"


class CrashLoop(HashbridgeError):
    """Worker processes keep dying with nothing saved in between: restarting once more would only
    repeat it (a bad host, a bad build); the supervisor stops and says so."""

    reason = "crash_loop"


class KafkaError(HashbridgeError):
    """The Kafka cluster refused or failed an operation we cannot carry on without."""

    reason = "kafka"


class BrokerStartError(KafkaError):
    """The local broker did not become ready; the message names its log file."""

    reason = "broker_start"
