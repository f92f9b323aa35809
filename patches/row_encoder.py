"""`encode_inputs` through the `tokenizers` library directly: the same rows, one Rust call per
input instead of transformers' Python wrapper (which re-applies truncation and padding settings
and builds a BatchEncoding on every call)."""

from __future__ import annotations

import threading

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from .encoding import EncodedRow, Item, encode_inputs


class RowEncoder:
    """Encodes inputs as `encode_inputs(tokenizer, ...)` does; slow (Python) tokenizers go
    through `encode_inputs` itself."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._spec = backend.to_str() if backend is not None else None
        self._type_ids = "token_type_ids" in tokenizer.model_input_names
        self._by_length: dict[int, Tokenizer] = {}  # a truncating copy per max_length
        self._lock = threading.Lock()

    def _truncating(self, max_length: int) -> Tokenizer:
        """The backend tokenizer truncating to max_length (longest first), never padding."""
        found = self._by_length.get(max_length)
        if found is None:
            with self._lock:
                found = self._by_length.get(max_length)
                if found is None:
                    found = Tokenizer.from_str(self._spec)
                    found.no_padding()
                    found.enable_truncation(max_length, strategy="longest_first")
                    self._by_length[max_length] = found
        return found

    def encode(self, items: list[Item], max_length: int, offsets: bool = False) -> list[EncodedRow]:
        """Token ids (and token type ids, where the model takes them) of each item, unpadded;
        with `offsets`, each single text's words and character offsets too."""
        if self._spec is None:
            return encode_inputs(self.tokenizer, items, max_length, offsets)
        tokenizer = self._truncating(max_length)
        rows = []
        for item in items:
            # one encode per item: encode_batch hands each call to a thread pool, which costs
            # more CPU than it saves for the few short inputs of a request
            enc = tokenizer.encode(item) if isinstance(item, str) else tokenizer.encode(*item)
            row: EncodedRow = {"input_ids": enc.ids}
            if self._type_ids:
                row["token_type_ids"] = enc.type_ids
            if offsets and isinstance(item, str):
                row.update(text=item, offsets=enc.offsets, word_ids=enc.word_ids)
            rows.append(row)
        return rows
