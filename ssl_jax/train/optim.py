"""Learning-rate schedule and optimizer, with every derived number computed here.

The paper's recipe is written in epochs and for a batch of 256; ``steps_per_epoch`` turns epochs
into steps and ``lr_scale = batch_size / base_batch_size`` scales the learning rates linearly.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from ssl_jax import config_lib


@dataclasses.dataclass(frozen=True)
class Plan:
    """The step counts and learning rates a run derives from its config and data size."""

    num_examples: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    decay_steps: tuple[int, ...]
    peak_lr: float
    warmup_start_lr: float

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch


def make_plan(optim: ml_collections.ConfigDict, num_examples: int) -> Plan:
    """Derives steps and learning rates from ``config.optim`` and the pretraining set's size."""
    if num_examples < optim.batch_size:
        raise config_lib.ConfigError(
            f"The pretraining data has {num_examples} images, fewer than one batch "
            f"(config.optim.batch_size={optim.batch_size}). Use a larger dataset or a smaller "
            "batch."
        )
    steps_per_epoch = num_examples // optim.batch_size
    lr_scale = optim.batch_size / optim.base_batch_size
    return Plan(
        num_examples=num_examples,
        batch_size=optim.batch_size,
        steps_per_epoch=steps_per_epoch,
        total_steps=max(1, round(optim.epochs * steps_per_epoch)),
        warmup_steps=round(optim.warmup_epochs * steps_per_epoch),
        decay_steps=tuple(round(e * steps_per_epoch) for e in optim.decay_epochs),
        peak_lr=optim.base_lr * lr_scale,
        warmup_start_lr=optim.warmup_start_lr * lr_scale,
    )


def make_schedule(plan: Plan, decay_factor: float) -> optax.Schedule:
    """Linear warm-up from ``warmup_start_lr`` to ``peak_lr``, then x decay_factor at each step."""

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        lr = jnp.asarray(plan.peak_lr, jnp.float32)
        for boundary in plan.decay_steps:
            lr = jnp.where(step >= boundary, lr * decay_factor, lr)
        if plan.warmup_steps > 0:
            frac = jnp.clip(step / plan.warmup_steps, 0.0, 1.0)
            warm = plan.warmup_start_lr + frac * (plan.peak_lr - plan.warmup_start_lr)
            lr = jnp.where(step < plan.warmup_steps, warm, lr)
        return lr

    return schedule


def decay_mask(params, batch_stats) -> dict:
    """True for parameters that take weight decay: everything except BatchNorm scale and bias.

    A BatchNorm layer is recognised by its running statistics: a module that owns an entry in
    ``batch_stats`` is a normalisation layer, whatever it is called.
    """
    bn_modules = {path[:-1] for path in traverse_util.flatten_dict(batch_stats)}
    flat = traverse_util.flatten_dict(params)
    mask = {path: path[:-1] not in bn_modules for path in flat}
    return traverse_util.unflatten_dict(mask)


def make_optimizer(
    optim: ml_collections.ConfigDict, schedule: optax.Schedule, batch_stats
) -> optax.GradientTransformation:
    """SGD with momentum; L2 weight decay added to the gradient (as Caffe2/PyTorch), not on BN."""
    return optax.chain(
        optax.add_decayed_weights(
            optim.weight_decay, mask=lambda params: decay_mask(params, batch_stats)
        ),
        optax.sgd(learning_rate=schedule, momentum=optim.momentum, nesterov=optim.nesterov),
    )
