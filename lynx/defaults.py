"""Defaults shared by every stage, so collection, training and serving agree on them."""

#: Appended after a cue token to force an exit: close thinking, open the boxed answer.
#: The organism was trained to answer after exactly this string; for real models it is the
#: natural continuation their chat formats end with.
DEFAULT_EXIT = "\n</think>\n\nFinal answer: \\boxed{"
#: LYNX's sampling defaults for rollouts.
TEMPERATURE = 0.6
TOP_P = 0.95
