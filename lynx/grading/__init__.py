"""Grading answers: boxed extraction plus a grader per answer kind."""

from lynx.grading.boxed import extract_boxed, grade_integer
from lynx.grading.math import grade_choice, grade_math, grader_for

__all__ = ["extract_boxed", "grade_choice", "grade_integer", "grade_math", "grader_for"]
