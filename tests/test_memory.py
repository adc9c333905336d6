"""The CLT memory bank against CRD's reference figures, negatives sampling, and the FIFO queue."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lead_kt import memory as mem

CASE = json.loads(
  (Path(__file__).parent / "fixtures/reference/clt_memory_bank_case.json").read_text()
)
SETUP = CASE["setup"]
TORCH = CASE["repo_torch_float32"]


def _fixture_memory() -> mem.ContrastMemory:
  # CRD's ContrastMemory is called with v1 = student and v2 = teacher and updates memory_v1 with
  # v1, so memory_v1 is the student bank and memory_v2 the teacher bank; the student anchor is
  # scored against memory_v2 (its out_v1 / Z_v1 is CRD's out_s).
  return mem.ContrastMemory(
    student_bank=jnp.array(SETUP["memory_v1_init"], jnp.float32),
    teacher_bank=jnp.array(SETUP["memory_v2_init"], jnp.float32),
    z_student=jnp.array(-1.0),
    z_teacher=jnp.array(-1.0),
    item_labels=jnp.full((SETUP["n_data"],), -1, jnp.int32),
  )


def _fixture_inputs():
  return (
    jnp.array(SETUP["v1_student"], jnp.float32),
    jnp.array(SETUP["v2_teacher"], jnp.float32),
    jnp.array(SETUP["idx"], jnp.int32),
    jnp.array(SETUP["contrast_idx"], jnp.int32),
  )


def _clt(memory, student, teacher, index, contrast_idx, **kwargs):
  return mem.clt_loss(
    memory, student, teacher, index, contrast_idx, SETUP["nce_t"], SETUP["nce_m"], **kwargs
  )


def test_clt_reproduces_crd_reference_over_two_calls():
  inputs = _fixture_inputs()
  loss, memory, aux = jax.jit(_clt)(_fixture_memory(), *inputs)
  assert float(loss) == pytest.approx(TORCH["call1"]["loss"], rel=1e-5)
  assert float(aux["clt_student"]) == pytest.approx(TORCH["call1"]["s_loss"], rel=1e-5)
  assert float(aux["clt_teacher"]) == pytest.approx(TORCH["call1"]["t_loss"], rel=1e-5)
  assert float(memory.z_student) == pytest.approx(TORCH["call1"]["Z_v1"], rel=1e-5)
  assert float(memory.z_teacher) == pytest.approx(TORCH["call1"]["Z_v2"], rel=1e-5)
  rows = np.array(SETUP["idx"])
  np.testing.assert_allclose(
    memory.student_bank[rows], TORCH["call1"]["memory_v1_rows01_after"], atol=1e-6
  )
  np.testing.assert_allclose(
    memory.teacher_bank[rows], TORCH["call1"]["memory_v2_rows01_after"], atol=1e-6
  )
  loss, memory, aux = jax.jit(_clt)(memory, *inputs)
  assert float(loss) == pytest.approx(TORCH["call2"]["loss"], rel=1e-5)
  assert float(aux["clt_student"]) == pytest.approx(TORCH["call2"]["s_loss"], rel=1e-5)
  np.testing.assert_allclose(
    memory.student_bank[rows], TORCH["call2"]["memory_v1_rows01_after"], atol=1e-6
  )


def test_clt_gradients_reach_embeddings_not_banks():
  memory = _fixture_memory()

  def total(student_bank, teacher_bank, student, teacher):
    banks = memory.replace(student_bank=student_bank, teacher_bank=teacher_bank)
    return _clt(banks, student, teacher, *_fixture_inputs()[2:])[0]

  grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(
    memory.student_bank, memory.teacher_bank, *_fixture_inputs()[:2]
  )
  student_bank_grad, teacher_bank_grad, student_grad, teacher_grad = grads
  assert float(jnp.abs(student_grad).sum()) > 0
  assert float(jnp.abs(teacher_grad).sum()) > 0
  assert float(jnp.abs(student_bank_grad).sum()) == 0
  assert float(jnp.abs(teacher_bank_grad).sum()) == 0


def test_clt_fixes_z_once_and_keeps_updated_rows_unit_norm():
  student, teacher, index, contrast_idx = _fixture_inputs()
  _, memory, _ = _clt(_fixture_memory(), student, teacher, index, contrast_idx)
  _, again, _ = _clt(memory, teacher, student, index, contrast_idx)  # different scores
  assert float(again.z_student) == float(memory.z_student)
  assert float(again.z_teacher) == float(memory.z_teacher)
  for bank, initial in (
    (again.student_bank, SETUP["memory_v1_init"]),
    (again.teacher_bank, SETUP["memory_v2_init"]),
  ):
    np.testing.assert_allclose(jnp.linalg.norm(bank[index], axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(bank[2:], np.array(initial, np.float32)[2:])


def test_clt_duplicate_index_last_occurrence_writes_and_mask_skips():
  student, teacher, _, contrast_idx = _fixture_inputs()
  memory = _fixture_memory()
  _, updated, _ = _clt(memory, student, teacher, jnp.array([5, 5]), contrast_idx)
  expected = 0.5 * memory.student_bank[5] + 0.5 * student[1]
  np.testing.assert_allclose(updated.student_bank[5], expected / jnp.linalg.norm(expected), 1e-6)

  mask = jnp.array([1.0, 0.0])
  _, masked, aux = _clt(memory, student, teacher, jnp.array([5, 5]), contrast_idx, mask=mask)
  expected = 0.5 * memory.student_bank[5] + 0.5 * student[0]
  np.testing.assert_allclose(masked.student_bank[5], expected / jnp.linalg.norm(expected), 1e-6)
  _, _, alone = _clt(memory, student[:1], teacher[:1], jnp.array([5]), contrast_idx[:1])
  assert float(aux["clt_student"]) == pytest.approx(float(alone["clt_student"]), rel=1e-5)


def _numpy_scores(memory, student, teacher, contrast_idx, positive):
  """Student-anchor and teacher-anchor scores [B, K + 1] / T, computed in numpy."""
  t_rows = np.asarray(memory.teacher_bank)[np.asarray(contrast_idx)]
  s_rows = np.asarray(memory.student_bank)[np.asarray(contrast_idx)]
  student, teacher = np.asarray(student), np.asarray(teacher)
  s_scores = np.einsum("bkd,bd->bk", t_rows, student) / SETUP["nce_t"]
  t_scores = np.einsum("bkd,bd->bk", s_rows, teacher) / SETUP["nce_t"]
  if positive == "current":
    s_scores[:, 0] = t_scores[:, 0] = np.sum(student * teacher, axis=1) / SETUP["nce_t"]
  return s_scores, t_scores


def _numpy_infonce(scores):
  return float(np.mean(np.log(np.exp(scores).sum(axis=1)) - scores[:, 0]))


@pytest.mark.parametrize("positive", ["bank", "current"])
def test_clt_infonce_is_a_softmax_over_positive_and_sampled_rows(positive):
  memory = _fixture_memory()
  student, teacher, index, contrast_idx = _fixture_inputs()
  loss, updated, aux = jax.jit(_clt, static_argnames=("positive", "form"))(
    memory, student, teacher, index, contrast_idx, positive=positive, form="infonce"
  )
  s_scores, t_scores = _numpy_scores(memory, student, teacher, contrast_idx, positive)
  assert float(aux["clt_student"]) == pytest.approx(_numpy_infonce(s_scores), rel=1e-5)
  assert float(aux["clt_teacher"]) == pytest.approx(_numpy_infonce(t_scores), rel=1e-5)
  assert float(loss) == pytest.approx(float(aux["clt_student"] + aux["clt_teacher"]), rel=1e-6)
  assert float(updated.z_student) == float(updated.z_teacher) == -1.0  # InfoNCE needs no Z
  # The banks are updated the same way whatever the loss form.
  _, nce_updated, _ = _clt(memory, student, teacher, index, contrast_idx, positive=positive)
  np.testing.assert_array_equal(updated.student_bank, nce_updated.student_bank)


def test_clt_current_positive_scores_the_two_views_of_this_input():
  memory = _fixture_memory()
  student, teacher, index, contrast_idx = _fixture_inputs()
  # Identical views: the current positive is the best possible score, whatever the bank holds.
  loss_same, _, aux_same = _clt(memory, student, student, index, contrast_idx, positive="current")
  assert float(aux_same["clt_accuracy"]) == 1.0
  s_scores, _ = _numpy_scores(memory, student, student, contrast_idx, "current")
  eps = 1e-7
  noise = (contrast_idx.shape[1] - 1) / SETUP["n_data"]
  p = np.exp(s_scores) / (np.exp(s_scores).mean() * SETUP["n_data"])  # Z from this batch
  expected = -np.mean(
    np.log(p[:, 0] / (p[:, 0] + noise + eps)) + np.log(noise / (p[:, 1:] + noise + eps)).sum(1)
  )
  assert float(aux_same["clt_student"]) == pytest.approx(expected, rel=1e-4)
  # The bank positive differs: the anchor's bank row is not this input's teacher embedding.
  loss_bank, _, _ = _clt(memory, student, student, index, contrast_idx, positive="bank")
  assert abs(float(loss_bank) - float(loss_same)) > 1e-3
  # Gradient reaches the teacher-side embedding through the current positive only.
  grad_teacher = jax.grad(
    lambda t, positive: _clt(memory, student, t, index, contrast_idx, positive=positive)[2][
      "clt_student"
    ],
  )
  assert float(jnp.abs(grad_teacher(teacher, "current")).max()) > 0
  assert float(jnp.abs(grad_teacher(teacher, "bank")).max()) == 0


def test_clt_accuracy_counts_positives_above_every_other_record():
  dim, items = 2, 6
  memory = mem.ContrastMemory(
    student_bank=jnp.zeros((items, dim)),
    teacher_bank=jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [0.8, 0.6], [0, 0]]),
    z_student=jnp.array(-1.0),
    z_teacher=jnp.array(-1.0),
    item_labels=jnp.full((items,), -1, jnp.int32),
  )
  anchors = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  # Each positive (score 1) beats the other records' rows (0.8, 0.6, -1); the repeat of the
  # anchor's own index in the negatives is not a rival.
  contrast_idx = jnp.array([[0, 2, 3, 0], [1, 2, 4, 1]])
  _, _, aux = _clt(memory, anchors, anchors, jnp.array([0, 1]), contrast_idx)
  assert float(aux["clt_accuracy"]) == 1.0
  losing = jnp.array([[0, 2, 3, 0], [5, 2, 4, 5]])  # anchor 1 scored against the zero row 5
  _, _, aux = _clt(memory, anchors, anchors, jnp.array([0, 5]), losing)
  assert float(aux["clt_accuracy"]) == 0.5


def test_clt_rejects_unknown_options():
  inputs = _fixture_inputs()
  with pytest.raises(ValueError, match="unknown CLT positive 'teacher'"):
    _clt(_fixture_memory(), *inputs, positive="teacher")
  with pytest.raises(ValueError, match="unknown CLT loss form 'triplet'"):
    _clt(_fixture_memory(), *inputs, form="triplet")


def test_clt_rejects_bad_shapes():
  student, teacher, index, contrast_idx = _fixture_inputs()
  with pytest.raises(ValueError, match="student_emb"):
    _clt(_fixture_memory(), student[:, :4], teacher, index, contrast_idx)
  with pytest.raises(ValueError, match="contrast_idx"):
    _clt(_fixture_memory(), student, teacher, index, contrast_idx[:, :1])


def test_init_memory_bounds_and_unset_normalisers():
  memory = mem.init_memory(jax.random.key(0), 100, 12)
  bound = 1 / np.sqrt(12 / 3)
  assert memory.student_bank.shape == memory.teacher_bank.shape == (100, 12)
  assert float(jnp.abs(memory.teacher_bank).max()) <= bound
  assert float(jnp.abs(memory.student_bank).max()) > 0.9 * bound
  assert float(memory.z_student) <= 0 and float(memory.z_teacher) <= 0
  assert memory.item_labels.dtype == jnp.int32 and int(memory.item_labels.max()) == -1
  with pytest.raises(ValueError, match="item_labels"):
    mem.init_memory(jax.random.key(0), 100, 12, item_labels=jnp.zeros(99))


def test_sample_uniform_negatives_put_positive_first():
  memory = mem.init_memory(jax.random.key(0), 40, 4)
  index = jnp.array([3, 17, 39])
  contrast_idx = mem.sample_negatives(jax.random.key(1), index, 64, memory)
  assert contrast_idx.shape == (3, 65) and contrast_idx.dtype == jnp.int32
  np.testing.assert_array_equal(contrast_idx[:, 0], index)
  assert int(contrast_idx.min()) >= 0 and int(contrast_idx.max()) < 40
  with pytest.raises(ValueError, match="uniform, other_class"):
    mem.sample_negatives(jax.random.key(1), index, 4, memory, mode="hard")


def test_sample_other_class_negatives_avoid_the_anchor_class_uniformly():
  item_labels = jnp.array([2, 0, 2, -1, 1, 2, 0, 1, 2, 2], jnp.int32)
  memory = mem.init_memory(jax.random.key(0), 10, 4, item_labels)
  index = jnp.array([0, 1, 3, 4])
  sample = jax.jit(mem.sample_negatives, static_argnums=(2, 4))
  contrast_idx = sample(jax.random.key(1), index, 4000, memory, "other_class")
  negatives = np.asarray(contrast_idx[:, 1:])
  anchor_labels = np.asarray(item_labels)[np.asarray(index)]
  assert not np.any(np.asarray(item_labels)[negatives] == anchor_labels[:, None])
  # Anchor 0 (class 2) draws from the five records of other classes, each about 1/5 of the time.
  counts = np.bincount(negatives[0], minlength=10)
  assert set(np.flatnonzero(counts)) == {1, 3, 4, 6, 7}
  assert counts.max() < 1.15 * 800 and counts[counts > 0].min() > 0.85 * 800


def test_sample_other_class_falls_back_to_uniform_for_a_single_class():
  memory = mem.init_memory(jax.random.key(0), 6, 4, jnp.zeros(6, jnp.int32))
  contrast_idx = mem.sample_negatives(jax.random.key(2), jnp.array([1]), 600, memory, "other_class")
  assert set(np.unique(contrast_idx[0, 1:])) == set(range(6))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_info_nce(query, positive, queue, temperature):
  logits = np.concatenate([(query * positive).sum(-1, keepdims=True), query @ queue.T], 1)
  logits = logits / temperature
  return np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[:, 0])


def test_queue_loss_known_value_enqueue_and_wraparound():
  rng = np.random.default_rng(3)
  student_queue, teacher_queue = _unit(rng.standard_normal((2, 5, 4)))
  queue = mem.QueueMemory(
    jnp.array(student_queue, jnp.float32), jnp.array(teacher_queue, jnp.float32), jnp.array(3)
  )
  student, teacher = _unit(rng.standard_normal((2, 3, 4)))
  loss, new_queue, aux = jax.jit(mem.queue_loss, static_argnums=3)(
    queue, jnp.array(student, jnp.float32), jnp.array(teacher, jnp.float32), 0.5
  )
  expected_student = _numpy_info_nce(student, teacher, teacher_queue, 0.5)
  expected_teacher = _numpy_info_nce(teacher, student, student_queue, 0.5)
  assert float(aux["clt_student"]) == pytest.approx(expected_student, rel=1e-5)
  assert float(loss) == pytest.approx(expected_student + expected_teacher, rel=1e-5)
  # Three rows from pointer 3 in a queue of five: rows 3, 4, then 0; the pointer wraps to 1.
  assert int(new_queue.ptr) == 1
  np.testing.assert_allclose(new_queue.student_queue[np.array([3, 4, 0])], student, rtol=1e-6)
  np.testing.assert_allclose(new_queue.teacher_queue[np.array([1, 2])], teacher_queue[1:3])


def test_queue_loss_skips_masked_examples_and_rejects_oversized_batches():
  queue = mem.init_queue(jax.random.key(0), 4, 8)
  np.testing.assert_allclose(jnp.linalg.norm(queue.teacher_queue, axis=-1), 1.0, rtol=1e-6)
  assert int(queue.ptr) == 0
  embeddings = jax.random.normal(jax.random.key(1), (2, 3, 8))
  student, teacher = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
  loss, new_queue, _ = jax.jit(mem.queue_loss, static_argnums=3)(
    queue, student, teacher, 0.1, jnp.array([1, 0, 1])
  )
  assert np.isfinite(float(loss))
  assert int(new_queue.ptr) == 2
  np.testing.assert_allclose(new_queue.student_queue[:2], student[np.array([0, 2])], rtol=1e-6)
  np.testing.assert_array_equal(new_queue.student_queue[2:], queue.student_queue[2:])
  too_many = jnp.ones((5, 8))
  with pytest.raises(ValueError, match="larger than the queue"):
    mem.queue_loss(queue, too_many, too_many, 0.1)


def test_mean_row_cosine_is_zero_for_spread_rows_and_one_for_collapsed_ones():
  spread = np.eye(4, dtype=np.float32)  # orthogonal rows
  collapsed = np.tile([[0.6, 0.8, 0.0, 0.0]], (4, 1))
  padded = np.concatenate([collapsed, np.zeros((2, 4), np.float32)])  # padding rows are skipped
  bank = mem.ContrastMemory(
    student_bank=jnp.asarray(spread),
    teacher_bank=jnp.asarray(padded),
    z_student=jnp.array(1.0),
    z_teacher=jnp.array(1.0),
    item_labels=jnp.full((4,), -1, jnp.int32),
  )
  assert mem.mean_row_cosine(bank) == pytest.approx({"student_bank": 0.0, "teacher_bank": 1.0})
  # Two rows at 60 degrees (cosine 0.5); with their opposites, four whose six pairs average -1/3.
  rows = np.array([[1, 0], [0.5, 0.75**0.5], [-1, 0], [-0.5, -(0.75**0.5)]], np.float32)
  queue = mem.QueueMemory(jnp.asarray(rows), jnp.asarray(rows[:2]), jnp.array(0, jnp.int32))
  similarity = mem.mean_row_cosine(queue)
  assert similarity["student_queue"] == pytest.approx(-1 / 3, abs=1e-6)
  assert similarity["teacher_queue"] == pytest.approx(0.5, abs=1e-6)
