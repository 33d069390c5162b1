"""What a maximum-likelihood fit did: :class:`FitHistory` (one entry per evaluation)."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["FitHistory", "STOP_REASONS"]

STOP_REASONS = {
    "converged": "converged: the held-out loss did not improve for `patience` epochs",
    "max_epochs": "the epoch budget (max_epochs) was used up before convergence",
    "max_steps": "the step budget (max_steps) was used up before convergence",
    "time_budget": "the wall-time budget (time_budget) was used up before convergence",
    "callback": "the callback asked to stop",
    "interrupted": "interrupted (KeyboardInterrupt)",
    "nonfinite": "a non-finite loss or gradient (on_nonfinite='stop')",
}


@dataclasses.dataclass
class FitHistory:
    """What happened during :func:`inference.fit` (one entry per evaluation).

    ``steps``/``epochs`` say where each evaluation happened (an epoch is ``steps_per_epoch``
    optimiser steps, one pass over the training rows); ``val_loss`` is the held-out mean negative
    log-likelihood in nats per example, ``val_log_likelihood`` its negative and
    ``val_bits_per_dim`` the same in bits per dimension.  ``lr_cuts`` lists the steps at which a
    plateau of the held-out loss cut the learning rate (``fit``'s ``lr_cut``).  ``stop_reason`` is one of
    :data:`STOP_REASONS` and ``summary()`` says it in words.
    """

    steps: list = dataclasses.field(default_factory=list)
    epochs: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    wall_time: list = dataclasses.field(default_factory=list)
    best_step: int = 0
    best_val_loss: float = math.inf
    nonfinite_steps: list = dataclasses.field(default_factory=list)
    stop_reason: str = ""
    num_devices: int = 1
    resumed_from: int | None = None
    initial_val_loss: float = math.nan
    checkpoint_failures: list = dataclasses.field(default_factory=list)
    event_size: int = 0
    steps_per_epoch: int = 1
    lr_cuts: list = dataclasses.field(default_factory=list)  # steps at which the learning rate was cut

    @property
    def best_epoch(self) -> float:
        """The epoch at which the returned parameters were reached."""
        return self.best_step / max(self.steps_per_epoch, 1)

    @property
    def converged(self) -> bool:
        """True when the fit stopped because the held-out loss stopped improving."""
        return self.stop_reason == "converged"

    @property
    def val_log_likelihood(self) -> list:
        """Held-out mean log-likelihood per example, in nats, at each evaluation (``-val_loss``)."""
        return [-v for v in self.val_loss]

    @property
    def val_bits_per_dim(self) -> list:
        """Held-out negative log-likelihood in bits per dimension at each evaluation."""
        return [v / (max(self.event_size, 1) * math.log(2)) for v in self.val_loss]

    @property
    def num_nonfinite(self) -> int:
        """How many steps had a non-finite loss or gradient (skipped, or the one that stopped the fit)."""
        return len(self.nonfinite_steps)

    def summary(self) -> str:
        """One paragraph: why the fit stopped, the best held-out loss and where, what went wrong on the way."""
        step = self.steps[-1] if self.steps else 0
        where = f"step {step} (epoch {step / max(self.steps_per_epoch, 1):.4g})"
        words = [f"stopped after {where}: {STOP_REASONS.get(self.stop_reason, self.stop_reason or 'not run')}"]
        if math.isfinite(self.best_val_loss):
            start = f" (start: {self.initial_val_loss:.4f})" if math.isfinite(self.initial_val_loss) else ""
            bits = self.best_val_loss / (max(self.event_size, 1) * math.log(2))
            words.append(f"best held-out NLL {self.best_val_loss:.4f} nats ({bits:.4f} bits/dim) at step "
                         f"{self.best_step} (epoch {self.best_epoch:.4g}){start}; those parameters were returned")
        if self.lr_cuts:
            words.append(f"the learning rate was cut {len(self.lr_cuts)} time(s) on plateaus (first at step "
                         f"{self.lr_cuts[0]})")
        if self.nonfinite_steps:
            words.append(f"{self.num_nonfinite} step(s) had a non-finite loss or gradient (first at step "
                         f"{self.nonfinite_steps[0]}) and were skipped")
        if self.checkpoint_failures:
            words.append(f"{len(self.checkpoint_failures)} checkpoint write(s) failed (first: "
                         f"{self.checkpoint_failures[0]})")
        if self.resumed_from is not None:
            words.append(f"resumed from a checkpoint at step {self.resumed_from}")
        return "; ".join(words) + "."

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitHistory":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
