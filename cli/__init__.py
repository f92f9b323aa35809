"""bitpatch: serve many NLP tasks from one frozen backbone with BitFit bias patches."""

__version__ = "0.1.0"
