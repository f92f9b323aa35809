"""Task kinds: one object per kind owns what differs between them (labels, inputs, head,
predictions, v2 outputs), so the rest of the code asks the kind instead of comparing names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import outputs

if TYPE_CHECKING:
    from .encoding import EncodedRow
    from .engine import TaskHead


@dataclass(frozen=True)
class TaskKind:
    """What one kind of task is; `name` is the patch metadata's 'kind'."""

    name: str
    fewest_labels: int  # label names a patch must list (0: the kind has no labels)
    takes_pairs: bool  # requests may send [text, text_pair]
    per_token: bool  # one output per token (pooling 'none', rows need character offsets)
    head_optional: bool  # a patch may leave the head out (the pooled vector is the output)
    options: tuple[str, ...]  # kind-only metadata keys
    v2_outputs: tuple[tuple[str, str], ...]  # (name, datatype) in the order infer answers
    hf_problem_type: str | None  # transformers' config.problem_type of an exported model

    @property
    def labelled(self) -> bool:
        """Whether patches of this kind name their labels."""
        return self.fewest_labels > 0

    def __str__(self) -> str:
        return self.name

    def output_width(self, head: TaskHead, hidden_size: int) -> int:
        """Columns of the 2-D output: the labels, or the embedding's dimensions."""
        if not self.labelled and self.head_optional:
            return head.weight.shape[0] if head.weight is not None else hidden_size
        return len(head.labels)

    def head_outputs(
        self, head: TaskHead, pooled: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """Rows through the head: pooled (rows, H), or every token of hidden (rows, T, H) for
        a per-token kind. Returns (rows, n), (rows, T, n) or (rows, d)."""
        if self.per_token:
            return hidden.float() @ head.weight.T + head.bias  # (rows, T, n)
        return pooled @ head.weight.T + head.bias  # (rows, n)

    def predictions(
        self, head: TaskHead, logits: torch.Tensor, rows: list[EncodedRow | None]
    ) -> list[dict]:
        """Each row's prediction from its head outputs."""
        return outputs.single_labels(head, logits)


class Regression(TaskKind):
    def predictions(self, head, logits, rows):
        return [{"value": row[0]} for row in logits.float().tolist()]


class MultiLabel(TaskKind):
    def predictions(self, head, logits, rows):
        scores = torch.sigmoid(logits.float()).tolist()
        return [outputs.multi_label(head, row) for row in scores]


class TokenClassification(TaskKind):
    def predictions(self, head, logits, rows):
        assert all(row is not None for row in rows), "token tasks need each row's encoding"
        probs = torch.softmax(logits.float(), dim=-1)  # (rows, T, n)
        return [outputs.tokens(head, p, row) for p, row in zip(probs, rows, strict=True)]


class Embedding(TaskKind):
    def head_outputs(self, head, pooled, hidden):
        vectors = pooled if head.weight is None else pooled @ head.weight.T + head.bias
        # (rows, d)
        return torch.nn.functional.normalize(vectors, dim=-1) if head.normalize else vectors

    def predictions(self, head, logits, rows):
        return [{"embedding": vector} for vector in logits.float().tolist()]


SCORES = ("scores", "FP32")
KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind(
            "classification",
            2,
            True,
            False,
            False,
            (),
            (("label", "BYTES"), SCORES),
            "single_label_classification",
        ),
        Regression("regression", 0, True, False, False, (), (("value", "FP32"),), "regression"),
        MultiLabel(
            "multi_label",
            1,
            True,
            False,
            False,
            ("threshold", "thresholds"),
            (SCORES, ("labels", "BYTES")),
            "multi_label_classification",
        ),
        TokenClassification(
            "token_classification", 2, False, True, False, (), (("tokens", "BYTES"),), None
        ),
        Embedding(
            "embedding", 0, False, False, True, ("normalize",), (("embedding", "FP32"),), None
        ),
    )
}
EMBEDDING = KINDS["embedding"]  # the kind OpenAI's embeddings API serves
TWO_D_OUTPUTS = ("scores", "embedding")  # v2 outputs with a column per label or dimension


def kind_named(name: str) -> TaskKind:
    """The kind a patch's metadata names; KeyError for an unknown one (the patch format
    refuses those when it reads the file)."""
    return KINDS[name]
