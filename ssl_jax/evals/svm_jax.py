"""Many L2-regularised squared-hinge linear SVMs at once, in JAX, on one shared Gram matrix.

Each problem p (a class x cost x fold) minimises over w in R^(D+1) (the last weight is the bias,
on a constant feature 1, and it is regularised, as liblinear with intercept_scaling=1):

    f_p(w) = 0.5 ||w||^2 + sum_i C_ip * max(0, 1 - y_ip * w . x_i)^2

with C_ip = cost_p * class_weight(y_ip) (2 for positives, 1 for negatives) and C_ip = 0 for rows
that are not in problem p's training set. At the optimum w = X^T beta, so every problem lives in
the span of the shared rows and only needs the Gram matrix K = X X^T + 1 (n x n): for VOC07,
n <= 5011 is smaller than D = 9216, and all problems share K, so no problem ever materialises its
own (n, D) copy.

Solver: the primal Newton method of Chapelle (2007) / Keerthi & DeCoste (2005) in kernel form.
With the active set s = {i : C_i > 0, y_i o_i < 1} (o = K beta), the Newton point is beta_s =
(K_ss + diag(1 / (2 C_s)))^-1 y_s and beta = 0 elsewhere; it is reached by Jacobi-preconditioned
conjugate gradients (batched: one (n, n) x (n, P) matmul per iteration for all P problems), and
the step towards it uses an exact line search on the piecewise-quadratic objective. Stopping is
on the relative gradient norm ||grad f(w)|| <= tol * ||grad f(0)|| per problem; the Newton loop
stops when every problem has converged or at `max_newton` iterations, which is reported.
Matmuls run at full float32 precision (precision=HIGHEST).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_HI = jax.lax.Precision.HIGHEST


class SolveInfo(NamedTuple):
    """Per-problem convergence report, each (P,)."""

    newton_iters: np.ndarray  # Newton iterations until the problem converged
    cg_iters: np.ndarray  # total CG iterations spent on the problem
    rel_grad: np.ndarray  # final ||grad f|| / ||grad f(0)||
    converged: np.ndarray  # bool: rel_grad <= tol


def gram(x: np.ndarray, rows_a=None, rows_b=None) -> jax.Array:
    """K = x_a x_b^T + 1 (the +1 is the bias feature), float32 at full precision.

    Args:
      x: (N, D) float32, already L2-normalised.
      rows_a, rows_b: optional row indices; default all rows.
    Returns:
      (len(rows_a), len(rows_b)) float32.
    """
    a = x if rows_a is None else x[rows_a]
    b = a if rows_b is None and rows_a is None else (x if rows_b is None else x[rows_b])
    return _gram(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))


@jax.jit
def _gram(a, b):
    return jnp.matmul(a, b.T, precision=_HI) + 1.0


def _objective_parts(beta, o, y, cw):
    """0.5 ||w||^2 and the loss sum, each (P,); ||w||^2 = beta . K beta = beta . o."""
    slack = jnp.maximum(0.0, 1.0 - y * o)
    return 0.5 * jnp.sum(beta * o, 0), jnp.sum(cw * slack * slack, 0)


@functools.partial(jax.jit, static_argnames=("max_newton", "max_cg"))
def _solve(k, y, cw, tol, max_newton, max_cg):
    n, p = y.shape
    f32 = jnp.float32
    kdiag = jnp.diagonal(k)
    kmv = lambda v: jnp.matmul(k, v, precision=_HI)
    used = cw > 0
    # 1 / (2 C_i); unused rows get 1 so the (masked-out) system stays well defined.
    lam = jnp.where(used, 0.5 / jnp.where(used, cw, 1.0), 1.0)

    def grad_norm(beta, o):
        # grad f(w) = X^T g with g = beta - 2 C y (1 - y o)_+  ->  ||grad||^2 = g . K g.
        g = beta - 2.0 * cw * y * jnp.maximum(0.0, 1.0 - y * o)
        return jnp.sqrt(jnp.maximum(jnp.sum(g * kmv(g), 0), 0.0))

    g0 = grad_norm(jnp.zeros((n, p), f32), jnp.zeros((n, p), f32))
    g0 = jnp.where(g0 > 0, g0, 1.0)

    def cg(active, z0, eta):
        """Solves (K_ss + diag(lam_s)) z_s = y_s, z = 0 off s, to relative residual eta."""
        m = active.astype(f32)
        a_op = lambda v: m * kmv(m * v) + lam * v
        precond = 1.0 / (m * kdiag[:, None] + lam)
        rhs = m * y
        z = m * z0
        r = rhs - a_op(z)
        h = precond * r
        d = h
        rh = jnp.sum(r * h, 0)
        rhs_norm = jnp.sqrt(jnp.sum(rhs * rhs, 0))
        target = eta * jnp.where(rhs_norm > 0, rhs_norm, 1.0)

        def cond(c):
            _, r, _, _, _, it, _ = c
            return jnp.any(jnp.sqrt(jnp.sum(r * r, 0)) > target) & (it < max_cg)

        def body(c):
            z, r, h, d, rh, it, count = c
            live = jnp.sqrt(jnp.sum(r * r, 0)) > target
            ad = a_op(d)
            dad = jnp.sum(d * ad, 0)
            alpha = jnp.where(live & (dad > 0), rh / jnp.where(dad > 0, dad, 1.0), 0.0)
            z = z + alpha * d
            r = r - alpha * ad
            h = precond * r
            rh_new = jnp.sum(r * h, 0)
            b = jnp.where(rh > 0, rh_new / jnp.where(rh > 0, rh, 1.0), 0.0)
            d = jnp.where(live, h + b * d, d)
            rh = jnp.where(live, rh_new, rh)
            return z, r, h, d, rh, it + 1, count + live.astype(jnp.int32)

        init = (z, r, h, d, rh, jnp.int32(0), jnp.zeros((p,), jnp.int32))
        z, *_, count = jax.lax.while_loop(cond, body, init)
        return z, count

    def line_search(beta, o, d, kd):
        """Exact minimiser over t of the convex piecewise quadratic f(beta + t d), 1-D Newton."""
        bkd = jnp.sum(beta * kd, 0)
        dkd = jnp.sum(d * kd, 0)

        def step(_, t):
            oo = o + t * kd
            viol = (cw > 0) & (y * oo < 1.0)
            slack = jnp.where(viol, 1.0 - y * oo, 0.0)
            d1 = bkd + t * dkd - 2.0 * jnp.sum(cw * y * kd * slack, 0)
            d2 = dkd + 2.0 * jnp.sum(jnp.where(viol, cw * kd * kd, 0.0), 0)
            return jnp.clip(t - d1 / jnp.where(d2 > 0, d2, 1.0), 0.0, 1.0)

        return jax.lax.fori_loop(0, 8, step, jnp.ones((p,), f32))

    def cond(c):
        _, _, it, _, _, done, _ = c
        return jnp.logical_not(jnp.all(done)) & (it < max_newton)

    def body(c):
        beta, o, it, newton_count, cg_count, done, rel = c
        active = (cw > 0) & (y * o < 1.0)
        # Inexact Newton: solve more accurately as the gradient shrinks (superlinear tail).
        eta = jnp.clip(jnp.min(jnp.where(done, 1.0, rel)), 1e-6, 0.1)
        target, count = cg(active, beta, eta)
        d = jnp.where(done[None, :], 0.0, target - beta)
        kd = kmv(d)
        t = line_search(beta, o, d, kd)
        beta = beta + t * d
        o = o + t * kd
        rel_new = grad_norm(beta, o) / g0
        rel = jnp.where(done, rel, rel_new)
        newton_count = newton_count + jnp.logical_not(done).astype(jnp.int32)
        cg_count = cg_count + jnp.where(done, 0, count)
        done = done | (rel <= tol)
        return beta, o, it + 1, newton_count, cg_count, done, rel

    zeros = jnp.zeros((n, p), f32)
    init = (
        zeros,
        zeros,
        jnp.int32(0),
        jnp.zeros((p,), jnp.int32),
        jnp.zeros((p,), jnp.int32),
        jnp.zeros((p,), bool),
        jnp.ones((p,), f32),
    )
    beta, o, _, newton_count, cg_count, done, rel = jax.lax.while_loop(cond, body, init)
    # o was updated incrementally; recompute it once so held-out scores carry no drift.
    return beta, kmv(beta), newton_count, cg_count, rel, done


def solve(
    k: jax.Array | np.ndarray,
    y: np.ndarray,
    cw: np.ndarray,
    *,
    tol: float = 1e-3,
    max_newton: int = 100,
    max_cg: int = 2000,
) -> tuple[jax.Array, jax.Array, SolveInfo]:
    """Solves P squared-hinge SVMs sharing the Gram matrix `k`.

    Args:
      k: (n, n) float32 Gram matrix of the training rows, X X^T + 1 (see `gram`).
      y: (n, P) labels in {+1, -1} per row and problem.
      cw: (n, P) per-row cost C * class_weight; 0 leaves the row out of that problem.
      tol: relative gradient-norm tolerance, ||grad f(w)|| <= tol * ||grad f(0)||.
      max_newton: safety cap on Newton iterations; problems still above `tol` are reported in
        `SolveInfo.converged`.
      max_cg: safety cap on CG iterations per Newton step.
    Returns:
      beta: (n, P) float32 with w_p = X^T beta_p (bias = sum beta_p); decision values for rows
        z are gram(z rows, training rows) @ beta.
      o: (n, P) float32 decision values K beta of the n rows (held-out rows included).
      info: a `SolveInfo`.
    """
    n, p = np.shape(y)
    # Pad to bucketed shapes so varying sizes (folds, low-shot samples) reuse one compilation;
    # padded rows and problems have zero cost, so they are inactive and their beta stays 0.
    n_pad, p_pad = -(-n // 128) * 128, -(-p // 8) * 8
    k = jnp.pad(jnp.asarray(k, jnp.float32), ((0, n_pad - n), (0, n_pad - n)))
    y = jnp.pad(jnp.asarray(y, jnp.float32), ((0, n_pad - n), (0, p_pad - p)), constant_values=1)
    cw = jnp.pad(jnp.asarray(cw, jnp.float32), ((0, n_pad - n), (0, p_pad - p)))
    beta, o, newton_count, cg_count, rel, done = _solve(
        k, y, cw, jnp.float32(tol), max_newton, max_cg
    )
    info = SolveInfo(
        newton_iters=np.asarray(newton_count)[:p],
        cg_iters=np.asarray(cg_count)[:p],
        rel_grad=np.asarray(rel)[:p],
        converged=np.asarray(done)[:p],
    )
    return beta[:n, :p], o[:n, :p], info


def primal_weights(x: np.ndarray, beta: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """w = X^T beta (D, P) and bias b = sum(beta) (P,), both float32, for scoring new rows."""
    w = _weights(jnp.asarray(x, jnp.float32), jnp.asarray(beta, jnp.float32))
    return np.asarray(w), np.asarray(jnp.sum(beta, 0))


@jax.jit
def _weights(x, beta):
    return jnp.matmul(x.T, beta, precision=_HI)


def decision(k_eval: jax.Array | np.ndarray, beta: jax.Array) -> np.ndarray:
    """Decision values (m, P) from a (m, n) cross-Gram `gram(eval rows, train rows)`."""
    return np.asarray(_decision(jnp.asarray(k_eval, jnp.float32), beta))


@jax.jit
def _decision(k_eval, beta):
    return jnp.matmul(k_eval, beta, precision=_HI)


def primal_objective(x: np.ndarray, y: np.ndarray, cw: np.ndarray, w: np.ndarray) -> np.ndarray:
    """f_p(w) in float64 for checking; x (n, D), y/cw (n, P), w (D + 1, P) with the bias last."""
    x64 = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], 1)
    o = x64 @ np.asarray(w, np.float64)
    slack = np.maximum(0.0, 1.0 - y * o)
    return 0.5 * np.sum(np.asarray(w, np.float64) ** 2, 0) + np.sum(cw * slack * slack, 0)
