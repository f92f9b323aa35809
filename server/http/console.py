"""The web console: static files under /ui (shipped in the package, no CDN), `/` sends there,
and `GET /whoami` says what the caller's token may do."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from ..errors import UnknownRoute
from .deps import StateDep

router = APIRouter(include_in_schema=False)
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
UI_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def root():
    """The console."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
async def ui_root():
    """The console's folder."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}")
async def ui_file(path: str):
    """A console file (index.html for the folder itself)."""
    file = ui_file_path(path or "index.html")
    return FileResponse(file, media_type=MEDIA_TYPES[file.suffix], headers=UI_HEADERS)


def ui_file_path(path: str) -> Path:
    """The shipped file at `path` inside the console's folder; UnknownRoute for anything else."""
    file = (UI_DIR / path).resolve()
    if not file.is_relative_to(UI_DIR) or not file.is_file() or file.suffix not in MEDIA_TYPES:
        raise UnknownRoute(f"/ui/{path} is no file of the console; open /ui/")
    return file


@router.get("/whoami", include_in_schema=True)
async def whoami(request: Request, state: StateDep):
    """What the request's Bearer token opens (read, predict, admin), its name and task
    patterns (a scoped token's; null tasks: every task), and which tokens the server requires;
    403 for a token the server does not know."""
    tokens = state.settings.tokens
    opened = tokens.grants(request.headers.get("authorization", ""))
    name, patterns = opened.pop("name", None), opened.pop("tasks", None)
    role = "admin" if opened["admin"] else "predict" if opened["predict"] else "none"
    return {
        "role": role,
        "may": opened,
        "name": name,
        "tasks": patterns,
        "tokens_set": {
            "admin": bool(tokens.admin),
            "predict": bool(tokens.predict),
            "scoped": len(tokens.scoped) if tokens.scoped is not None else 0,
        },
    }
