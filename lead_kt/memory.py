"""Device-resident memories for MVKT-ECG's contrastive lead-information transfer (CLT).

Two interchangeable memories, both plain pytrees carried in a method's ``state`` and updated inside
the jitted train step:

- ``ContrastMemory``: CRD's two memory banks (one row per training record, addressed by the
  batch's ``index``) with NCE against sampled negatives; what the MVKT paper and code use.
- ``QueueMemory``: a MoCo-style FIFO queue of past embeddings with InfoNCE; needs no record index.

Banks and queues are only gathered from and scattered into, so they work the same replicated or
sharded over the mesh's data axis. Shapes: ``N`` records, ``D`` embedding width, ``B`` batch,
``K`` negatives per anchor, ``Q`` queue length.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lead_kt.losses import info_nce, l2_normalize, masked_mean, positive_first_cross_entropy

NEGATIVE_MODES = ("uniform", "other_class")
# Where an anchor's positive comes from: its record's row of the other bank (CRD, the MVKT code)
# or the other network's embedding of the very input in this batch.
POSITIVES = ("bank", "current")
# CRD's binary NCE with the fixed normaliser Z (the MVKT code) or InfoNCE, a softmax over the
# positive and the sampled negatives (the MVKT paper's Eq. 6).
LOSS_FORMS = ("nce", "infonce")
# CRD's ContrastLoss epsilon in the NCE denominators.
_NCE_EPS = 1e-7


@flax.struct.dataclass
class ContrastMemory:
  """CRD's memory: ``student_bank`` / ``teacher_bank`` ``[N', D]`` hold momentum averages of each
  record's student / teacher embedding in rows ``[0, N)`` (rows past ``N``, if any, are padding
  that lets the rows split evenly over devices; never read or written); ``z_student`` /
  ``z_teacher`` ``()`` are the NCE normalisers (<= 0 until the first batch fixes them);
  ``item_labels`` ``[N]`` int32 is each record's first label (-1 if none), used by ``other_class``
  negatives."""

  student_bank: jax.Array
  teacher_bank: jax.Array
  z_student: jax.Array
  z_teacher: jax.Array
  item_labels: jax.Array


@flax.struct.dataclass
class QueueMemory:
  """MoCo-style FIFO: ``student_queue`` / ``teacher_queue`` ``[Q, D]`` of past (unit) embeddings
  and ``ptr`` () int32, the row the next batch starts overwriting."""

  student_queue: jax.Array
  teacher_queue: jax.Array
  ptr: jax.Array


def init_memory(
  rng: jax.Array,
  num_items: int,
  dim: int,
  item_labels: jax.Array | None = None,
  rows_multiple: int = 1,
) -> ContrastMemory:
  """Banks ``[num_items, dim]`` uniform in ``+-1/sqrt(dim/3)`` (CRD's init), normalisers unset;
  zero rows appended up to a multiple of ``rows_multiple`` (the same values in the real rows)."""
  if item_labels is None:
    item_labels = jnp.full((num_items,), -1, jnp.int32)
  item_labels = jnp.asarray(item_labels, jnp.int32)
  if item_labels.shape != (num_items,):
    raise ValueError(f"init_memory: item_labels must be [{num_items}], got {item_labels.shape}")
  bound = 1.0 / (dim / 3) ** 0.5
  student_rng, teacher_rng = jax.random.split(rng)
  padding = ((0, -num_items % rows_multiple), (0, 0))

  def bank(key):
    return jnp.pad(jax.random.uniform(key, (num_items, dim), jnp.float32, -bound, bound), padding)

  return ContrastMemory(
    student_bank=bank(student_rng),
    teacher_bank=bank(teacher_rng),
    z_student=jnp.array(-1.0, jnp.float32),
    z_teacher=jnp.array(-1.0, jnp.float32),
    item_labels=item_labels,
  )


def sample_negatives(
  rng: jax.Array,
  index: jax.Array,
  num_negatives: int,
  memory: ContrastMemory,
  mode: str = "uniform",
  labels: jax.Array | None = None,
) -> jax.Array:
  """Bank rows to contrast each anchor with: ``[B, K + 1]`` int32, the anchor's ``index`` first.

  ``num_negatives`` (``K``) and ``mode`` are static under ``jax.jit``.

  ``uniform`` (MVKT paper, CRD's default): negatives uniform over all ``N`` records, the positive
  included. ``other_class`` (MVKT code): uniform over the records whose first label differs from the
  anchor's ``labels`` ``[B]`` (default: ``memory.item_labels[index]``; -1, no label, counts as a
  class of its own). Rejection-free in O(B * K): with the records sorted by label, the anchor's
  class is one contiguous block of ``n_c`` positions; a draw uniform in ``[0, N - n_c)`` that lands
  at or after the block's start is shifted past it. An anchor whose class covers every record
  falls back to uniform.
  """
  if mode not in NEGATIVE_MODES:
    raise ValueError(f"unknown negative mode {mode!r}; known modes: {', '.join(NEGATIVE_MODES)}")
  num_items = memory.item_labels.shape[0]
  batch = index.shape[0]
  if mode == "uniform":
    negatives = jax.random.randint(rng, (batch, num_negatives), 0, num_items, jnp.int32)
  else:
    if labels is None:
      labels = memory.item_labels[index]
    order = jnp.argsort(memory.item_labels, stable=True)
    sorted_labels = memory.item_labels[order]
    block_start = jnp.searchsorted(sorted_labels, labels, side="left")
    block_size = jnp.searchsorted(sorted_labels, labels, side="right") - block_start
    num_others = num_items - block_size
    has_others = num_others > 0
    draw_range = jnp.where(has_others, num_others, num_items)[:, None]
    draw = jax.random.randint(rng, (batch, num_negatives), 0, draw_range, jnp.int32)
    skip = jnp.where(has_others, block_size, 0)[:, None]
    position = jnp.where(draw < block_start[:, None], draw, draw + skip)
    negatives = order[position].astype(jnp.int32)
  return jnp.concatenate([index.astype(jnp.int32)[:, None], negatives], axis=1)


def _fixed_normaliser(
  z: jax.Array, log_scores: jax.Array, weights: jax.Array, num_items: int
) -> jax.Array:
  """CRD's Z: kept when set (> 0), else ``N * mean(exp(scores / T))`` over this batch's weighted
  ``log_scores`` ``[B, K + 1]``, without gradient."""
  total = jnp.sum(weights)
  count = jnp.where(total > 0, total, 1.0) * log_scores.shape[1]
  log_z = jax.nn.logsumexp(log_scores, b=jnp.broadcast_to(weights[:, None], log_scores.shape))
  batch_z = jnp.exp(log_z - jnp.log(count)) * num_items
  return jax.lax.stop_gradient(jnp.where(z > 0, z, batch_z))


def _nce_loss(log_probs: jax.Array, num_items: int, weights: jax.Array) -> jax.Array:
  """CRD's ContrastLoss on ``log_probs = log(P)`` ``[B, K + 1]`` (positive first), in log space
  so that small temperatures cannot overflow ``exp``: noise mass ``c = K / N``,
  ``-[log(P_pos / (P_pos + c + eps)) + sum_neg log(c / (P_neg + c + eps))]``, weighted mean."""
  noise = (log_probs.shape[1] - 1) / num_items
  log_noise_eps = jnp.log(noise + _NCE_EPS)
  log_denominator = jnp.logaddexp(log_probs, log_noise_eps)
  positive = log_probs[:, 0] - log_denominator[:, 0]
  negatives = jnp.sum(jnp.log(noise) - log_denominator[:, 1:], axis=1)
  return masked_mean(-(positive + negatives), weights)


def _last_writes(index: jax.Array, weights: jax.Array) -> jax.Array:
  """``[B]`` bool: the example writes its row, i.e. it is real and no later real example in the
  batch has the same index (the last duplicate wins, like a sequential ``index_copy_``)."""
  real = weights > 0
  later = jnp.triu(jnp.ones((index.shape[0],) * 2, bool), k=1)
  overwritten = jnp.any((index[:, None] == index[None, :]) & later & real[None, :], axis=1)
  return real & ~overwritten


def _momentum_update(
  bank: jax.Array, index: jax.Array, embeddings: jax.Array, momentum: float, writes: jax.Array
) -> jax.Array:
  """``bank[i] = normalize(momentum * bank[i] + (1 - momentum) * embedding)`` for writing rows."""
  rows = l2_normalize(momentum * bank[index] + (1.0 - momentum) * embeddings)
  # Rows that do not write are sent out of range and dropped, so the scatter has unique targets.
  target = jnp.where(writes, index, bank.shape[0])
  return bank.at[target].set(rows.astype(bank.dtype), mode="drop")


def _check_choice(what: str, value: str, known: tuple[str, ...]) -> None:
  if value not in known:
    raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")


def _positive_accuracy(scores: jax.Array, contrast_idx: jax.Array, weights: jax.Array):
  """How often the positive (column 0) outscores every sampled negative that is another record."""
  others = contrast_idx[:, 1:] != contrast_idx[:, :1]
  best_negative = jnp.max(jnp.where(others, scores[:, 1:], -jnp.inf), axis=1)
  return masked_mean((scores[:, 0] > best_negative).astype(jnp.float32), weights)


def clt_loss(
  memory: ContrastMemory,
  student_emb: jax.Array,
  teacher_emb: jax.Array,
  index: jax.Array,
  contrast_idx: jax.Array,
  temperature: float = 0.07,
  momentum: float = 0.5,
  mask: jax.Array | None = None,
  positive: str = "bank",
  form: str = "nce",
) -> tuple[jax.Array, ContrastMemory, dict[str, jax.Array]]:
  """Contrast between unit embeddings ``[B, D]`` and the banks; ``(loss, new_memory, aux)``.

  As in CRD's ``ContrastMemory`` (v1 = student, v2 = teacher; ``memory_v1`` is the bank updated
  with v1, i.e. the student bank): the student anchor is scored against the teacher bank rows
  ``contrast_idx`` ``[B, K + 1]`` and the teacher anchor against the student bank rows,
  ``s = row . anchor / T``. ``positive="current"`` replaces column 0 (the anchor's own bank row) by
  ``student_emb . teacher_emb / T``, the two views of the input the student sees now (with random
  crops the bank row was written from other crops of the record, in earlier epochs).
  ``form="nce"``: CRD's NCE with ``P = exp(s) / Z``; ``"infonce"``: cross-entropy of the positive
  against the sampled rows (Z unused and left as it is). ``loss = clt_student + clt_teacher`` (in
  ``aux``, with ``clt_accuracy``: how often the student anchor's positive outscores every sampled
  negative of another record). Afterwards the rows ``index`` ``[B]`` of each bank move towards that
  side's embedding (momentum update, renormalised). Banks receive no gradient. Duplicate indices:
  every occurrence is scored against the old banks; the last real occurrence in the batch writes
  the row. ``mask`` ``[B]`` weights the loss; zero-weight examples neither fix Z nor write rows.
  Indices must lie in ``[0, N)``. ``positive`` and ``form`` are static under ``jax.jit``.
  """
  _check_choice("CLT positive", positive, POSITIVES)
  _check_choice("CLT loss form", form, LOSS_FORMS)
  num_items, dim = memory.item_labels.shape[0], memory.student_bank.shape[1]
  batch = index.shape[0]
  for name, emb in (("student_emb", student_emb), ("teacher_emb", teacher_emb)):
    if emb.shape != (batch, dim):
      raise ValueError(f"clt_loss: {name} must be [{batch}, {dim}], got {emb.shape}")
  if contrast_idx.ndim != 2 or contrast_idx.shape[0] != batch or contrast_idx.shape[1] < 2:
    raise ValueError(f"clt_loss: contrast_idx must be [{batch}, K + 1], got {contrast_idx.shape}")
  weights = jnp.ones((batch,), jnp.float32) if mask is None else mask.astype(jnp.float32)

  teacher_rows = jax.lax.stop_gradient(memory.teacher_bank[contrast_idx])
  student_rows = jax.lax.stop_gradient(memory.student_bank[contrast_idx])
  student_scores = jnp.einsum("bkd,bd->bk", teacher_rows, student_emb) / temperature
  teacher_scores = jnp.einsum("bkd,bd->bk", student_rows, teacher_emb) / temperature
  if positive == "current":
    pair = jnp.sum(student_emb * teacher_emb, axis=-1) / temperature
    student_scores = student_scores.at[:, 0].set(pair)
    teacher_scores = teacher_scores.at[:, 0].set(pair)
  z_student, z_teacher = memory.z_student, memory.z_teacher
  if form == "nce":
    z_student = _fixed_normaliser(z_student, student_scores, weights, num_items)
    z_teacher = _fixed_normaliser(z_teacher, teacher_scores, weights, num_items)
    student_part = _nce_loss(student_scores - jnp.log(z_student), num_items, weights)
    teacher_part = _nce_loss(teacher_scores - jnp.log(z_teacher), num_items, weights)
  else:
    student_part = positive_first_cross_entropy(student_scores, weights)
    teacher_part = positive_first_cross_entropy(teacher_scores, weights)

  writes = _last_writes(index, weights)
  new_memory = memory.replace(
    student_bank=_momentum_update(
      memory.student_bank, index, jax.lax.stop_gradient(student_emb), momentum, writes
    ),
    teacher_bank=_momentum_update(
      memory.teacher_bank, index, jax.lax.stop_gradient(teacher_emb), momentum, writes
    ),
    z_student=z_student,
    z_teacher=z_teacher,
  )
  aux = {
    "clt_student": student_part,
    "clt_teacher": teacher_part,
    "clt_accuracy": _positive_accuracy(
      jax.lax.stop_gradient(student_scores), contrast_idx, weights
    ),
  }
  return student_part + teacher_part, new_memory, aux


def mean_row_cosine(memory: ContrastMemory | QueueMemory) -> dict[str, float]:
  """Per bank (or queue), the mean cosine between two of its different rows: about 0 while the
  records' embeddings are spread, 1 when they have collapsed onto one vector and the negatives no
  longer differ from the positive. Zero rows (a bank's padding) are left out."""
  if isinstance(memory, ContrastMemory):
    banks = {"student_bank": memory.student_bank, "teacher_bank": memory.teacher_bank}
  else:
    banks = {"student_queue": memory.student_queue, "teacher_queue": memory.teacher_queue}
  similarity = {}
  for name, bank in banks.items():
    rows = np.asarray(bank, np.float64)
    norms = np.linalg.norm(rows, axis=1)
    unit = rows[norms > 0] / norms[norms > 0, None]
    n = len(unit)
    # Sum over ordered pairs i != j of u_i . u_j = |sum u|^2 - n.
    similarity[name] = float((np.sum(unit.sum(0) ** 2) - n) / (n * (n - 1)))
  return similarity


def init_queue(rng: jax.Array, size: int, dim: int) -> QueueMemory:
  """Queues ``[size, dim]`` of random unit vectors (MoCo's init), pointer at 0."""
  student_rng, teacher_rng = jax.random.split(rng)
  return QueueMemory(
    student_queue=l2_normalize(jax.random.normal(student_rng, (size, dim), jnp.float32)),
    teacher_queue=l2_normalize(jax.random.normal(teacher_rng, (size, dim), jnp.float32)),
    ptr=jnp.array(0, jnp.int32),
  )


def _enqueue(queue: jax.Array, ptr: jax.Array, embeddings: jax.Array, writes: jax.Array):
  """Writes the ``writes`` rows of ``embeddings`` ``[B, D]`` in order from ``ptr``, wrapping."""
  size = queue.shape[0]
  offsets = jnp.cumsum(writes) - 1
  target = jnp.where(writes, (ptr + offsets) % size, size)
  return queue.at[target].set(embeddings.astype(queue.dtype), mode="drop")


def queue_loss(
  queue: QueueMemory,
  student_emb: jax.Array,
  teacher_emb: jax.Array,
  temperature: float,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, QueueMemory, dict[str, jax.Array]]:
  """Symmetric InfoNCE with the FIFO queue; ``(loss, new_queue, aux)``.

  ``clt_student``: student anchor ``[B, D]``, its teacher embedding as positive, the teacher queue
  as negatives; ``clt_teacher`` the other way round; ``loss`` is their sum. Then the batch is
  enqueued (without gradient) at ``ptr``, wrapping around; zero-``mask`` examples are skipped.
  Needs ``B <= Q``.
  """
  size, dim = queue.student_queue.shape
  batch = student_emb.shape[0]
  if batch > size:
    raise ValueError(f"queue_loss: batch {batch} larger than the queue ({size} rows)")
  if student_emb.shape != (batch, dim) or teacher_emb.shape != (batch, dim):
    raise ValueError(
      f"queue_loss: embeddings must be [{batch}, {dim}], got {student_emb.shape} and "
      f"{teacher_emb.shape}"
    )
  student_part = info_nce(student_emb, teacher_emb, queue.teacher_queue, temperature, mask)
  teacher_part = info_nce(teacher_emb, student_emb, queue.student_queue, temperature, mask)
  writes = jnp.ones((batch,), bool) if mask is None else mask > 0
  new_queue = QueueMemory(
    student_queue=_enqueue(
      queue.student_queue, queue.ptr, jax.lax.stop_gradient(student_emb), writes
    ),
    teacher_queue=_enqueue(
      queue.teacher_queue, queue.ptr, jax.lax.stop_gradient(teacher_emb), writes
    ),
    ptr=((queue.ptr + jnp.sum(writes)) % size).astype(jnp.int32),
  )
  aux = {"clt_student": student_part, "clt_teacher": teacher_part}
  return student_part + teacher_part, new_queue, aux
