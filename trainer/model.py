"""Optimizers as data: which kernel learns, which hyper-parameters it reads, how w is materialised."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import numpy as np

from trainer import kernels as K

STATE_COLUMNS = 2  # every optimizer keeps [w or z, accumulator] per coordinate


class Optimizer(str, Enum):
    ADAGRAD = "adagrad"
    SGD = "sgd"
    FTRL = "ftrl"


_KERNELS: dict[Optimizer, Callable[..., None]] = {
    Optimizer.ADAGRAD: K.adagrad_frame,
    Optimizer.SGD: K.sgd_frame,
    Optimizer.FTRL: K.ftrl_frame,
}


@dataclass(frozen=True, slots=True)
class Hyper:
    """Learning hyper-parameters. ``lr`` is alpha for FTRL."""

    optimizer: Optimizer = Optimizer.ADAGRAD
    lr: float = 0.1
    l2: float = 0.0
    l1: float = 0.0  # FTRL only
    beta: float = 1.0  # FTRL only
    decay: float = 1e-6  # SGD only: lr / (1 + decay * t)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.l2 < 0 or self.l1 < 0 or self.beta < 0 or self.decay < 0:
            raise ValueError("lr must be > 0; l1, l2, beta, decay must be >= 0")
        if self.l1 and self.optimizer is not Optimizer.FTRL:
            raise ValueError("L1 is only supported by FTRL")

    def array(self) -> np.ndarray:
        hp = np.zeros(K.HP_LEN, np.float64)
        hp[K.HP_LR], hp[K.HP_L2], hp[K.HP_L1] = self.lr, self.l2, self.l1
        hp[K.HP_BETA], hp[K.HP_DECAY] = self.beta, self.decay
        return hp

    @property
    def kernel(self) -> Callable[..., None]:
        return _KERNELS[self.optimizer]

    def as_dict(self) -> dict[str, float | str]:
        return {"optimizer": self.optimizer.value, "lr": self.lr, "l2": self.l2, "l1": self.l1,
                "beta": self.beta, "decay": self.decay}

    @classmethod
    def from_dict(cls, d: dict) -> "Hyper":
        return cls(Optimizer(d["optimizer"]), float(d["lr"]), float(d["l2"]), float(d["l1"]),
                   float(d["beta"]), float(d["decay"]))


def effective_weights(hyper: Hyper, state: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, float]:
    """Plain weights and bias for scoring: a copy of column 0, or FTRL's w from ``[z, n]``."""
    if hyper.optimizer is Optimizer.FTRL:
        out = np.empty(state.shape[0], np.float32)
        K.ftrl_weights(state, hyper.lr, hyper.beta, hyper.l1, hyper.l2, out)
        bz, bn = float(bias[0]), float(bias[1])
        bw = 0.0 if bz == 0.0 else -bz / ((hyper.beta + bn ** 0.5) / hyper.lr)
        return out, bw
    return np.ascontiguousarray(state[:, 0], np.float32).copy(), float(bias[0])
