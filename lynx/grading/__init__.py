"""Grading answers: boxed extraction plus a grader per answer kind."""

from lynx.grading.boxed import extract_boxed, grade_integer

__all__ = ["extract_boxed", "grade_integer"]
