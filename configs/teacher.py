"""A 12-lead teacher trained with BCE."""

from configs import default


def get_config():
  c = default.get_config()
  c.method = "teacher"
  c.student.backbone = c.teacher.backbone
  return c
