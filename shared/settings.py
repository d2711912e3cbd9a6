"""Settings shared by every service: where the cluster is, how to reach it securely, topic names.

Each service has one frozen settings object of its own that embeds :class:`KafkaSettings`; only
:mod:`shared.clients` turns these into librdkafka configuration dictionaries.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

ENV_BOOTSTRAP = "HASHBRIDGE_BOOTSTRAP"
ENV_PREFIX = "HASHBRIDGE_TOPIC_PREFIX"
# librdkafka security options passed through verbatim from HASHBRIDGE_KAFKA_<NAME> variables,
# e.g. HASHBRIDGE_KAFKA_SASL_USERNAME -> sasl.username.
SECURITY_KEYS = (
    "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)


def _env_name(key: str) -> str:
    return "HASHBRIDGE_KAFKA_" + key.replace(".", "_").upper()


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names, all under one configurable prefix (default ``hb.``)."""

    prefix: str = "hb."

    @property
    def train(self) -> str:
        return self.prefix + "train"

    @property
    def score(self) -> str:
        return self.prefix + "score"

    @property
    def predictions(self) -> str:
        return self.prefix + "predictions"

    @property
    def models(self) -> str:
        return self.prefix + "models"

    @property
    def dlq(self) -> str:
        return self.prefix + "dlq"

    @property
    def deltas(self) -> str:
        return self.prefix + "deltas"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The cluster to use and the security options to reach it (TLS, SASL)."""

    bootstrap: str = "localhost:9092"
    security: Mapping[str, str] = field(default_factory=dict)
    topics: Topics = field(default_factory=Topics)

    @classmethod
    def from_env(cls, bootstrap: str | None = None, prefix: str | None = None,
                 env: Mapping[str, str] | None = None) -> "KafkaSettings":
        """Flags win over the environment, the environment over defaults."""
        env = os.environ if env is None else env
        security = {k: env[_env_name(k)] for k in SECURITY_KEYS if _env_name(k) in env}
        return cls(
            bootstrap=bootstrap or env.get(ENV_BOOTSTRAP, "localhost:9092"),
            security=security,
            topics=Topics(prefix if prefix is not None else env.get(ENV_PREFIX, "hb.")),
        )

    def base_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap, **dict(self.security)}

    def redacted(self) -> dict[str, str]:
        """For logs: secrets replaced, so a config can be shown without leaking a password."""
        cfg = self.base_config()
        return {k: ("***" if "password" in k else v) for k, v in cfg.items()}
