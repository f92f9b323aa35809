"""Golden examples: a patch may carry up to a few inputs with the answer its trainer computed
for each (metadata `examples`); a server recomputes them on upload and refuses the patch when
they differ beyond what its dtype explains (a patch trained against another engine, tokenizer
or backbone, or a numerical bug on the serving side)."""

from __future__ import annotations

import torch

TRAINER_EXAMPLES = 8  # the trainer writes at most this many
MOST_EXAMPLES = 64  # a patch may carry at most this many
TOLERANCES = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def tolerance_for(dtype: torch.dtype) -> float:
    """How far a score, value or embedding component may move in a forward of this dtype."""
    return TOLERANCES.get(dtype, 1e-3)


def first_difference(want: object, got: object, tolerance: float, where: str = "") -> str | None:
    """Where `got` differs from `want` (numbers beyond `tolerance`, anything else at all), or
    None when they agree."""
    if isinstance(want, bool) or isinstance(got, bool):
        return None if want == got else f"{where or 'output'}: {want!r} != {got!r}"
    if isinstance(want, int) and isinstance(got, int):  # offsets, counts: exact
        return None if want == got else f"{where or 'output'}: {want!r} != {got!r}"
    if isinstance(want, int | float) and isinstance(got, int | float):
        if abs(want - got) <= tolerance:
            return None
        return f"{where or 'output'}: {want!r} vs {got!r} (more than {tolerance:g} apart)"
    if isinstance(want, dict) and isinstance(got, dict):
        if set(want) != set(got):
            return f"{where or 'output'}: keys {sorted(want)} != {sorted(got)}"
        return _first(
            first_difference(want[k], got[k], tolerance, f"{where}.{k}" if where else k)
            for k in want
        )
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return f"{where or 'output'}: {len(want)} entries != {len(got)}"
        return _first(
            first_difference(a, b, tolerance, f"{where}[{i}]")
            for i, (a, b) in enumerate(zip(want, got, strict=True))
        )
    return None if want == got else f"{where or 'output'}: {want!r} != {got!r}"


def _first(differences) -> str | None:
    return next((d for d in differences if d is not None), None)


def check_examples_shape(examples: object) -> str | None:
    """What is wrong with a metadata `examples` value, or None."""
    if not isinstance(examples, list) or len(examples) > MOST_EXAMPLES:
        return f"must be a JSON list of at most {MOST_EXAMPLES} examples"
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or set(example) != {"input", "output"}:
            return f'[{i}] must be {{"input": text or [text, pair], "output": {{...}}}}'
        item = example["input"]
        pair = isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)
        if not (isinstance(item, str) or pair) or not isinstance(example["output"], dict):
            return f'[{i}] must be {{"input": text or [text, pair], "output": {{...}}}}'
    return None
