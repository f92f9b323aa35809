"""Domain errors of the server: what went wrong, in words that say how to fix it.

Registry, store, batcher and request decoding raise these; they know nothing of HTTP. The
status code each one answers with is chosen in one place, `server/http/edge.py`.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every domain error: a stable `code` and a message saying what to do."""

    code = "error"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.headers = message, headers


class InvalidRequest(ServerError):
    """The request's body or parameters do not have the expected shape."""

    code = "invalid_request"

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param  # param: the request field at fault, if one


class UnsupportedMediaType(ServerError):
    """The body is not of a type the route reads."""

    code = "unsupported_media_type"


class BodyTooLarge(ServerError):
    """The body exceeds the route's limit."""

    code = "too_large"


class InvalidTaskName(ServerError):
    """A task name that could never be stored."""

    code = "invalid_task_name"


class UnknownTask(ServerError):
    """No task of that name."""

    code = "unknown_task"


class UnknownVersion(ServerError):
    """The task exists but not that version."""

    code = "unknown_version"


class VersionActive(ServerError):
    """The operation is not allowed on the active version."""

    code = "version_active"


class Overloaded(ServerError):
    """The queue is full; retry shortly."""

    code = "overloaded"


class TaskQueueFull(ServerError):
    """One task's queue is at --max-queue-per-task; other tasks are unaffected."""

    code = "task_queue_full"


class QuotaExceeded(ServerError):
    """A scoped token sent more rows than its quota allows (Retry-After says when they fit)."""

    code = "quota_exceeded"


class DeadlineExceeded(ServerError):
    """The request could not start its forward within its deadline; nothing was computed."""

    code = "deadline_exceeded"


class NotReady(ServerError):
    """The backbone and store are still loading (or failed to load)."""

    code = "not_ready"


class MissingToken(ServerError):
    """A token is required and none was sent."""

    code = "unauthorized"


class WrongToken(ServerError):
    """A token was sent but it does not grant this route."""

    code = "forbidden"


class StoreUnavailable(ServerError):
    """The patch store cannot be reached; what is loaded keeps serving."""

    code = "store_unavailable"


class RolloutConflict(ServerError):
    """The rollout or the versions it names forbid the operation now (`code` says which)."""

    code = "rollout_conflict"

    def __init__(self, message: str, code: str = "rollout_conflict"):
        super().__init__(message)
        self.code = code


class UnknownRoute(ServerError):
    """No such path (a console file that is not shipped)."""

    code = "not_found"
