"""Who may use the operator console: operators, by bearer key or by a login session.

One middleware guards every path under /console (the page, its files, the
Prometheus proxy, and any page added there later) but the login form itself.
An operator proves who they are with ``Authorization: Bearer <operator key>``
(scripts) or the session cookie the login form sets from that key (browsers).
Merchant keys live in another table and never open the console.

Without a credential, a browser asking for a page is sent to the login form;
anything else gets a 401.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg
import psycopg_pool
from aiohttp import web

from api.auth import bearer_key
from api.errors import AuthenticationFailed, InvalidRequest
from api.merchants import hash_api_key
from api.operators import BY_KEY, BY_SESSION, END_SESSION, FORGET_EXPIRED_SESSIONS, START_SESSION
from api.state import OPERATOR, PRIMARY, REPLICA, SETTINGS, Operator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONSOLE = "/console"
HOME = "/console/"
LOGIN = "/console/login"
LOGOUT = "/console/logout"
# Reachable without a credential: how one gets a credential, and how one drops it.
OPEN_PATHS = frozenset({LOGIN, LOGOUT})
COOKIE = "paystream_console"
FORM = "application/x-www-form-urlencoded"
LOGIN_PAGE = Path(__file__).with_name("console") / "login.html"
# Where login.html shows why the last attempt failed.
PROBLEM_SLOT = "<!-- problem -->"


def is_console(path: str) -> bool:
    return path == CONSOLE or path.startswith(f"{CONSOLE}/")


async def _fetch(pool: psycopg_pool.AsyncConnectionPool, sql: str, value: str) -> Operator | None:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, (value,))
        row = await cur.fetchone()
    return None if row is None else Operator(id=row[0], name=row[1])


async def _lookup(app: web.Application, sql: str, value: str) -> Operator | None:
    try:
        # The primary: a key revoked or a session ended a moment ago must stop at once.
        return await _fetch(app[PRIMARY], sql, value)
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
        # The console matters most when something is down, the primary included:
        # the replicas hold the same operators and sessions, a moment behind.
        return await _fetch(app[REPLICA], sql, value)


async def operator_of(request: web.Request) -> Operator | None:
    """The operator a request's bearer key or session cookie belongs to, if any."""
    header = request.headers.get("Authorization")
    if header is not None:
        return await _lookup(request.app, BY_KEY, hash_api_key(bearer_key(header)))
    session = request.cookies.get(COOKIE)
    if session:
        # Stored as its sha256, like keys: the table alone opens no session.
        return await _lookup(request.app, BY_SESSION, hash_api_key(session))
    return None


def _wants_page(request: web.Request) -> bool:
    # A browser navigating sends Accept: text/html; fetch(), curl and scripts do not.
    return (request.method in ("GET", "HEAD")
            and "text/html" in request.headers.get("Accept", "")
            and not request.path.startswith(f"{CONSOLE}/api/"))


def login_url(after: str) -> str:
    return LOGIN if after in (CONSOLE, HOME) else f"{LOGIN}?{urlencode({'next': after})}"


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /console path but the login form needs an operator; others pass untouched."""
    if not is_console(request.path) or request.path in OPEN_PATHS:
        return await handler(request)
    operator = await operator_of(request)
    if operator is None:
        if _wants_page(request):
            raise web.HTTPFound(login_url(request.path_qs))
        raise AuthenticationFailed(
            "The operator console needs an operator key ('Authorization: Bearer <key>') "
            f"or a login at {LOGIN}; merchant keys are not operator keys.",
            code="operator_required",
            headers={"WWW-Authenticate": 'Bearer realm="console"'},
        )
    request[OPERATOR] = operator
    return await handler(request)


def _next_page(request: web.Request) -> str:
    target = request.query.get("next", "")
    parts = urlsplit(target)
    # Only back into the console: the login form must not bounce anyone to another site.
    if parts.scheme or parts.netloc or "\\" in target or not is_console(parts.path):
        return HOME
    return target


def _check_origin(request: web.Request) -> None:
    # The session cookie is SameSite=Strict, so other sites' requests never carry
    # it; this keeps their forms from posting to the login or logout either.
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(reason="Cross-site console login refused.")


def _behind_tls(request: web.Request) -> bool:
    # TLS may end at a proxy in front of us, which says so in X-Forwarded-Proto.
    # Trusting it costs nothing: a forged one only makes the cookie https-only.
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.secure or forwarded.lower() == "https"


def _login_page(problem: str | None = None, *, status: int = 200) -> web.Response:
    page = LOGIN_PAGE.read_text()
    if problem is not None:
        page = page.replace(PROBLEM_SLOT,
                            f'<p class="problem" role="alert">{html.escape(problem)}</p>')
    return web.Response(text=page, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def login_form(request: web.Request) -> web.Response:
    """GET /console/login: the form (it posts back to its own URL, ?next= included)."""
    return _login_page()


async def login(request: web.Request) -> web.Response:
    """POST /console/login: an operator key in, a session cookie and the console out."""
    _check_origin(request)
    if request.content_type != FORM:
        # What the login form sends; parsing anything else (a multipart body
        # without its boundary...) would only add ways to fail.
        raise InvalidRequest(f"Log in with a {FORM} body holding `key`.",
                             code="invalid_content_type", param="key")
    form = await request.post()
    key = form.get("key")
    operator = None
    if isinstance(key, str) and key.strip():
        operator = await _lookup(request.app, BY_KEY, hash_api_key(key.strip()))
    if operator is None:
        return _login_page("That is not an operator key. Merchant keys do not open the "
                           "console: `paystream operator create --name NAME` makes one.",
                           status=401)
    session = secrets.token_urlsafe(32)
    seconds = request.app[SETTINGS].console_session_seconds
    async with request.app[PRIMARY].connection() as conn, conn.transaction():
        await conn.execute(FORGET_EXPIRED_SESSIONS)
        await conn.execute(START_SESSION, {"id_hash": hash_api_key(session),
                                           "operator_id": operator.id, "seconds": seconds})
    resp = web.Response(status=303, headers={"Location": _next_page(request)})
    resp.set_cookie(COOKIE, session, max_age=seconds, path=CONSOLE, httponly=True,
                    samesite="Strict", secure=_behind_tls(request))
    return resp


async def logout(request: web.Request) -> web.Response:
    """POST /console/logout: the session ends here and in the browser."""
    _check_origin(request)
    session = request.cookies.get(COOKIE)
    if session:
        async with request.app[PRIMARY].connection() as conn:
            await conn.execute(END_SESSION, (hash_api_key(session),))
    resp = web.Response(status=303, headers={"Location": LOGIN})
    resp.del_cookie(COOKIE, path=CONSOLE)
    return resp
