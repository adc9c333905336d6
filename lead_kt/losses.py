"""Loss functions for classification and knowledge transfer; pure jax, safe inside ``jax.jit``.

Shapes: ``B`` examples, ``C`` classes, ``T`` time steps, ``D`` feature/embedding width. Every loss
takes an optional ``mask`` ``[B]`` of per-example weights (0 for padding) and averages over the
weighted examples; without it, over all of them. Teacher-side inputs are wrapped in
``jax.lax.stop_gradient`` inside, so callers never leak gradients into a frozen teacher.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

MKD_VARIANTS = ("paper", "reference_code")
_MKD_DEFAULT_TEMPERATURE = {"paper": 1.5, "reference_code": 1.0}
# The authors' code adds this inside the log and to the target of nn.KLDivLoss.
_REFERENCE_CODE_EPS = 1e-8


def masked_mean(per_example: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean of ``per_example`` ``[B]`` weighted by ``mask`` ``[B]``; 0 when every weight is 0."""
  if mask is None:
    return jnp.mean(per_example)
  mask = mask.astype(per_example.dtype)
  total = jnp.sum(mask)
  return jnp.sum(per_example * mask) / jnp.where(total > 0, total, 1.0)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """``x / ||x||`` along ``axis``; ``eps`` keeps all-zero rows (and their gradients) finite."""
  squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared_norm, eps * eps))


def resize_time(x: jax.Array, length: int) -> jax.Array:
  """Linear interpolation of ``x`` ``[B, T, ...]`` to ``[B, length, ...]`` along the time axis.

  Half-pixel centres without antialiasing, i.e. torch's ``interpolate(mode="linear",
  align_corners=False)``.
  """
  if x.shape[1] == length:
    return x
  return jax.image.resize(x, (x.shape[0], length, *x.shape[2:]), "linear", antialias=False)


def _check_same_shape(what: str, a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def bce_with_logits(
  logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """Binary cross-entropy on ``logits`` ``[B, C]`` vs multi-hot ``labels`` ``[B, C]``.

  Mean over classes and (weighted) examples, as torch's ``BCEWithLogitsLoss``.
  """
  _check_same_shape("bce_with_logits logits/labels", logits, labels)
  per_entry = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
  return masked_mean(jnp.mean(per_entry, axis=-1), mask)


def mkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  variant: str = "paper",
  temperature: float | None = None,
  mask: jax.Array | None = None,
) -> jax.Array:
  """MVKT-ECG's multi-label knowledge distillation on logits ``[B, C]``; returns a scalar.

  ``paper`` (MVKT-ECG, eq. of the MKD term; default ``T = 1.5``): per class the two-way
  distribution ``q = softmax(p / T, (1 - p) / T)`` with ``p = sigmoid(logit)``;
  loss = ``T^2 * sum_c KL(q_teacher || q_student)``, averaged over examples.

  ``reference_code`` (the authors' public code; default ``T = 1``): the pair ``[p, 1 - p]``
  divided by ``T`` is used as is (not renormalised), ``nn.KLDivLoss`` with its default mean over
  the ``B x 2`` entries, summed over classes, no ``T^2``. At ``T = 1`` this is half the Bernoulli
  KL summed over classes.
  """
  if variant not in MKD_VARIANTS:
    raise ValueError(f"unknown mkd variant {variant!r}; known variants: {', '.join(MKD_VARIANTS)}")
  _check_same_shape("mkd student/teacher logits", student_logits, teacher_logits)
  if temperature is None:
    temperature = _MKD_DEFAULT_TEMPERATURE[variant]
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  p_student = jax.nn.sigmoid(student_logits)
  p_teacher = jax.nn.sigmoid(teacher_logits)
  # [B, C, 2]: (p, 1 - p) per class.
  pair_student = jnp.stack([p_student, 1.0 - p_student], axis=-1)
  pair_teacher = jnp.stack([p_teacher, 1.0 - p_teacher], axis=-1)
  if variant == "paper":
    log_q_student = jax.nn.log_softmax(pair_student / temperature, axis=-1)
    log_q_teacher = jax.nn.log_softmax(pair_teacher / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_q_teacher) * (log_q_teacher - log_q_student), axis=(-2, -1))
    per_example = temperature**2 * kl
  else:
    target = pair_teacher / temperature + _REFERENCE_CODE_EPS
    log_input = jnp.log(pair_student / temperature + _REFERENCE_CODE_EPS)
    # The mean over the pair axis is KLDivLoss's mean over B x 2 once averaged over the batch.
    per_example = jnp.sum(jnp.mean(target * (jnp.log(target) - log_input), axis=-1), axis=-1)
  return masked_mean(per_example, mask)


def kd_kl(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  temperature: float = 4.0,
  mask: jax.Array | None = None,
) -> jax.Array:
  """Hinton-style KD adapted to multi-label outputs, on logits ``[B, C]``; returns a scalar.

  Each class is an independent Bernoulli with ``p = sigmoid(logit / T)``; the loss is
  ``T^2 * sum_c KL(Bern(p_teacher) || Bern(p_student))`` averaged over examples (``T^2`` keeps the
  gradient scale independent of ``T``, as in Hinton et al.).
  """
  _check_same_shape("kd_kl student/teacher logits", student_logits, teacher_logits)
  kl = bernoulli_kl(student_logits / temperature, teacher_logits / temperature)
  return masked_mean(temperature**2 * jnp.sum(kl, axis=-1), mask)


def bernoulli_kl(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """Per-class ``KL(Bern(sigmoid(teacher)) || Bern(sigmoid(student)))``, ``[B, C]``."""
  teacher = jax.lax.stop_gradient(teacher_logits)
  p_teacher = jax.nn.sigmoid(teacher)
  # log sigmoid terms keep the KL finite for saturated logits.
  return p_teacher * (jax.nn.log_sigmoid(teacher) - jax.nn.log_sigmoid(student_logits)) + (
    1.0 - p_teacher
  ) * (jax.nn.log_sigmoid(-teacher) - jax.nn.log_sigmoid(-student_logits))


def agreement(student_logits: jax.Array, teacher_logits: jax.Array) -> dict[str, jax.Array]:
  """How closely a student follows its teacher, per example ``[B]`` (big_vision's distillation
  evaluators track the same): ``teacher_kl``, the Bernoulli KL summed over classes at T = 1, and
  ``teacher_agreement``, the share of classes where both decide alike at probability 0.5."""
  return {
    "teacher_kl": jnp.sum(bernoulli_kl(student_logits, teacher_logits), axis=-1),
    "teacher_agreement": jnp.mean((student_logits > 0) == (teacher_logits > 0), axis=-1).astype(
      student_logits.dtype
    ),
  }


def fitnet(
  student_map: jax.Array, teacher_map: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """FitNets hint loss: mean squared error between ``[B, T, D]`` maps; returns a scalar.

  ``student_map`` is the output of the method's ``HintRegressor`` (already in the teacher's shape).
  """
  _check_same_shape("fitnet student/teacher map", student_map, teacher_map)
  squared = jnp.square(student_map - jax.lax.stop_gradient(teacher_map))
  return masked_mean(jnp.mean(squared.reshape(squared.shape[0], -1), axis=-1), mask)


def attention_map(feature_map: jax.Array, length: int) -> jax.Array:
  """Zagoruyko & Komodakis activation attention of ``[B, T, C]`` as ``[B, length]``.

  Mean over channels of ``a^2``, resized to ``length``, then L2-normalised over time.
  """
  energy = jnp.mean(jnp.square(feature_map), axis=-1)
  return l2_normalize(resize_time(energy, length))


def attention_transfer(
  student_maps: Sequence[jax.Array],
  teacher_maps: Sequence[jax.Array],
  mask: jax.Array | None = None,
) -> jax.Array:
  """Attention transfer over paired maps ``[B, T_i, C_i]`` (widths and lengths may differ).

  Each pair is compared at the shorter of its two lengths: squared distance between the normalised
  attention maps, summed over time and over pairs, averaged over examples. The ``beta`` weight is
  the caller's.
  """
  if len(student_maps) != len(teacher_maps) or not student_maps:
    raise ValueError(
      f"attention_transfer needs the same non-zero number of student and teacher maps, got "
      f"{len(student_maps)} and {len(teacher_maps)}"
    )
  per_example = 0.0
  for student_map, teacher_map in zip(student_maps, teacher_maps, strict=True):
    length = min(student_map.shape[1], teacher_map.shape[1])
    difference = attention_map(student_map, length) - attention_map(
      jax.lax.stop_gradient(teacher_map), length
    )
    per_example = per_example + jnp.sum(jnp.square(difference), axis=-1)
  return masked_mean(per_example, mask)


def info_nce(
  query: jax.Array,
  positive_key: jax.Array,
  queue: jax.Array,
  temperature: float,
  mask: jax.Array | None = None,
) -> jax.Array:
  """MoCo-style InfoNCE: ``query`` ``[B, D]`` against its ``positive_key`` ``[B, D]`` and the
  ``queue`` ``[Q, D]`` of negatives (cross-entropy with the positive as class 0).

  Inputs are expected L2-normalised. Gradients reach the query and the positive key; the queue is a
  constant.
  """
  _check_same_shape("info_nce query/positive_key", query, positive_key)
  if queue.ndim != 2 or queue.shape[1] != query.shape[-1]:
    raise ValueError(f"info_nce queue must be [Q, {query.shape[-1]}], got {queue.shape}")
  positive = jnp.sum(query * positive_key, axis=-1, keepdims=True)
  negatives = query @ jax.lax.stop_gradient(queue).T
  return positive_first_cross_entropy(
    jnp.concatenate([positive, negatives], axis=-1) / temperature, mask
  )


def positive_first_cross_entropy(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """InfoNCE on scores ``[B, 1 + K]`` whose column 0 is the positive: ``-log softmax[:, 0]``,
  weighted mean over examples."""
  return masked_mean(-jax.nn.log_softmax(logits, axis=-1)[:, 0], mask)
