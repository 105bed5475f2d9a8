"""Problem sets by name, whatever their source's field names.

``organism:<split>[:N]`` is the bundled organism's problems and ``smollm2:<split>[:N]``
SmolLM2-reasoner's word problems (:mod:`lynx.families`); a path to a ``.jsonl`` /
``.json`` / ``.parquet`` file (or a folder holding one) is read locally; anything of the
form ``owner/name`` is a Hugging Face hub dataset (needs the optional ``datasets``
package and network access). Every record becomes a :class:`Record` (id, question, gold
answer, answer kind), so later stages never see the source's field names.

Field names are detected (``problem``/``question``, ``answer``/``Answer``/``answerKey``)
and can be forced with ``question_field`` / ``answer_field``. Multiple-choice sets whose
options live in a ``choices`` field (CommonsenseQA) get the options appended to the
question as ``A. ...`` lines, the way GPQA's records already carry them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lynx.errors import InvalidInput, MissingInput
from lynx.families import FAMILIES, sample_problems


@dataclass(frozen=True)
class Record:
    id: str
    question: str
    answer: str | None  # None: a prompt without a gold answer (agreement labels only)
    kind: str  # "integer" (organism, smollm2), "math", "choice"


#: a generated family's default number of problems per split (organism and smollm2 alike)
DEFAULT_ORGANISM_SIZE = {"train": 2000, "calibration": 1000, "test": 500, "transfer": 500}
QUESTION_FIELDS = ("problem", "question", "Problem", "Question", "prompt")
ANSWER_FIELDS = ("answer", "Answer", "answerKey", "final_answer", "gold")
_LETTER = re.compile(r"^\(?([A-J])\)?$")


def _generated(spec: str, n: int | None, seed: int) -> list[Record]:
    """``<family>:<split>[:N]``: problems drawn by a family's generator (:data:`lynx.families.FAMILIES`)."""
    parts = spec.split(":")
    family, split = parts[0], parts[1]
    if len(parts) > 2:
        try:
            size = int(parts[2])
        except ValueError:
            raise InvalidInput(f"bad {family} dataset {spec!r}: the size after the split must be an integer") from None
        if size < 1:
            raise InvalidInput(f"bad {family} dataset {spec!r}: the size after the split must be at least 1")
        if n is not None and n != size:
            raise InvalidInput(f"{spec!r} and --n-problems {n} ask for different numbers of problems; say it once")
        n = size
    if split not in DEFAULT_ORGANISM_SIZE:
        raise InvalidInput(f"unknown {family} split {split!r}; choose one of {', '.join(DEFAULT_ORGANISM_SIZE)}")
    problems = sample_problems(family, split, n or DEFAULT_ORGANISM_SIZE[split], seed=seed)
    return [Record(p.problem_id, p.text, str(p.answer), "integer") for p in problems]


def is_generated(spec: str) -> bool:
    """A spec of a generated family (``organism:test``, ``smollm2:train:50``), not a file or hub id."""
    return spec.split(":", 1)[0] in FAMILIES and ":" in spec


def _read_rows(path: Path) -> list[dict]:
    if path.is_dir():
        files = sorted([*path.glob("*.jsonl"), *path.glob("*.parquet"), *path.glob("*.json")])
        if not files:
            raise InvalidInput(f"no .jsonl/.json/.parquet file in {path}")
        path = files[0]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside strings
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def _pick(row: dict, names: tuple[str, ...], forced: str | None, what: str, where: str) -> object:
    if forced is not None:
        if forced not in row:
            raise InvalidInput(f"{where}: no field {forced!r} (fields: {', '.join(row)})")
        return row[forced]
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    raise InvalidInput(f"{where}: no {what} field among {', '.join(names)} (fields: {', '.join(row)}); pass the field name")


def _format_answer(value: object) -> str:
    """A gold answer as a string; a worked solution (MATH's ``solution``) gives its last ``\\boxed{}``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if "\n#### " in text:  # GSM8K's worked answer: the number after ####
        return text.rsplit("\n#### ", 1)[1].strip().replace(",", "")
    if "\\boxed{" in text:
        from lynx.grading import extract_boxed

        return extract_boxed(text) or text
    return text


def to_record(row: dict, index: int, question_field: str | None = None, answer_field: str | None = None, where: str = "record", require_answer: bool = True) -> Record:
    """One source row -> Record (field detection, choices, answer kind). Without
    ``require_answer`` a row may be a bare prompt (answer None, graded as math)."""
    if not isinstance(row, dict):
        raise InvalidInput(f"{where}: a row must be a JSON object with a question and an answer field, got {type(row).__name__}")
    raw = _pick(row, QUESTION_FIELDS, question_field, "question", where)
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: the question must be text, got {type(raw).__name__}")
    question = raw.strip()
    rid = str(row.get("id") or row.get("unique_id") or row.get("idx") or index)
    if not require_answer and answer_field is None and not any(row.get(name) not in (None, "") for name in ANSWER_FIELDS):
        return Record(rid, question, None, "math")
    answer = _format_answer(_pick(row, ANSWER_FIELDS, answer_field, "answer", where))
    choices = row.get("choices")
    if isinstance(choices, dict) and "label" in choices and "text" in choices:
        question += "\n" + "\n".join(f"{lab}. {txt}" for lab, txt in zip(choices["label"], choices["text"], strict=True))
    letter = _LETTER.match(answer)
    if letter is not None and (choices is not None or "options" in row or re.search(r"(?m)^\(?A[.)]", question)):
        return Record(rid, question, letter.group(1), "choice")
    return Record(rid, question, answer, "math")


#: ``owner/name``, ``owner/name:split`` or ``owner/name:config:split``; a split may slice (``train[:3000]``)
HUB_SPEC = re.compile(r"([\w.-]+/[\w.-]+)(?::([\w.-]+))?(?::([\w.\[\]:%+-]+))?")


def hub_parts(m: re.Match, default_split: str) -> tuple[str, str | None, str]:
    """(name, config, split) of a hub spec: one part after the id is the split, two are config and split."""
    name, a, b = m.group(1), m.group(2), m.group(3)
    if b is not None:
        return name, a, b
    return name, None, a or default_split


def load(
    spec: str,
    n: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    split: str = "test",
    require_answer: bool = True,
) -> list[Record]:
    """Resolve ``spec`` to records (the first ``n`` of them if given); with ``require_answer``
    False, rows without an answer field are bare prompts (``answer`` None)."""
    if is_generated(spec):
        return _generated(spec, n, seed)
    path = Path(spec).expanduser()
    if path.exists():
        rows = _read_rows(path)
        where = str(path)
    elif spec.startswith(("/", ".", "~")) or spec.endswith((".jsonl", ".json", ".parquet")):
        raise MissingInput(f"dataset file not found: {spec}")
    elif m := HUB_SPEC.fullmatch(spec):
        name, config, split = hub_parts(m, split)
        try:
            import datasets as hf_datasets
        except ImportError:
            raise InvalidInput(f"{spec!r} looks like a hub dataset, but the 'datasets' package is not installed (pip install datasets)") from None
        rows = list(hf_datasets.load_dataset(name, config, split=split))
        where = spec
    else:
        generated = " or ".join(f"{f}:<split>" for f in FAMILIES)
        raise InvalidInput(f"unknown dataset {spec!r}: use {generated} (train|calibration|test|transfer), a local .jsonl/.parquet file, or a hub id[:config]:split")
    if not rows:
        raise InvalidInput(f"dataset {where} is empty")
    records = [to_record(r, i, question_field, answer_field, f"{where} row {i}", require_answer) for i, r in enumerate(rows)]
    return records[:n] if n else records
