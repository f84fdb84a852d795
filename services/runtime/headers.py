"""The headers every answer of every service carries: a strict Content-Security-Policy,
no framing, no MIME sniffing, no referrer, and HSTS over HTTPS.

Every page and answer gets ``STRICT_POLICY``: scripts, styles, images and connections
from the service's own origin only, no inline script or style at all (the console's pages
keep theirs in ``/static``; their SVG charts use presentation attributes and classes, which
a policy does not govern), no plugins, no ``<base>``, forms posting only to the origin,
and no framing anywhere (``frame-ancestors 'none'`` with ``X-Frame-Options: DENY`` for
older browsers).

FastAPI's own documentation pages are the exception: Swagger UI (``/docs``) and ReDoc
(``/redoc``) load their bundles from the jsDelivr CDN, and ``/docs`` and its OAuth2
redirect page start them with an inline script. Their policy names the CDN and the
SHA-256 hash of each inline script the page actually carries (computed from the body, so
it follows FastAPI's template); ReDoc styles itself with injected ``<style>`` elements, so
its page alone allows inline styles. Nothing else is loosened on them: no other origin,
no ``eval``, no framing.

A request is HTTPS when the ASGI scope says so: uvicorn sets the scheme from
``X-Forwarded-Proto`` when the proxy's address is in ``FORWARDED_ALLOW_IPS`` (loopback by
default), so behind a trusted proxy that terminates TLS the answer carries HSTS and the
console's session cookie is ``Secure``.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _policy(directives: dict[str, str]) -> str:
    """``directives`` over the rules every policy has: nothing by default, forms only to
    the origin, no ``<base>``, no framing."""
    rules = {
        "default-src": "'none'",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
    }
    rules.update({k: v or "'none'" for k, v in directives.items()})
    return "; ".join(f"{k} {v}" for k, v in rules.items())


STRICT_POLICY = _policy(
    {
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self'",
        "connect-src": "'self'",
    }
)
"""Every page and answer but FastAPI's documentation pages."""

CDN = "https://cdn.jsdelivr.net"
"""Where FastAPI's documentation pages load Swagger UI and ReDoc from."""
FAVICON = "https://fastapi.tiangolo.com"

SWAGGER, REDOC, OAUTH2_REDIRECT = "swagger", "redoc", "oauth2-redirect"
_DOC_POLICIES = {
    SWAGGER: {
        "script-src": CDN,
        "style-src": CDN,
        "img-src": f"'self' data: {FAVICON}",
        "connect-src": "'self'",
    },
    REDOC: {
        "script-src": CDN,
        "style-src": "'unsafe-inline' https://fonts.googleapis.com",
        "font-src": "https://fonts.gstatic.com",
        "img-src": f"'self' data: {FAVICON} https://cdn.redoc.ly",
        "connect-src": "'self'",
        "worker-src": "blob:",
    },
    OAUTH2_REDIRECT: {"script-src": ""},
}
_INLINE = re.compile(rb"<(script|style)(\s[^>]*)?>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)

FIXED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
HSTS = "max-age=31536000"


def _hash(content: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'"


def doc_policy(page: str, body: bytes) -> str:
    """The policy of one of FastAPI's documentation pages: its sources, and the hash of
    each inline script (and style, where inline styles are not allowed anyway) it has."""
    directives = dict(_DOC_POLICIES[page])
    for kind, attributes, content in _INLINE.findall(body):
        if b"src=" in (attributes or b"").lower():
            continue  # a script loaded from its source, named by the CDN
        name = "script-src" if kind.lower() == b"script" else "style-src"
        if "'unsafe-inline'" in directives.get(name, ""):
            continue  # a hash would switch 'unsafe-inline' off
        directives[name] = f"{directives.get(name, '')} {_hash(content)}".strip()
    return _policy(directives)


class SecurityHeaders:
    """Pure ASGI, so streamed answers (the console's event stream) pass untouched; headers
    an answer sets itself are kept."""

    def __init__(self, app: ASGIApp, docs: dict[str, str]) -> None:
        self.app = app
        self.docs = docs  # path -> SWAGGER | REDOC | OAUTH2_REDIRECT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        page = self.docs.get(scope["path"])

        def mark(start: Message, policy: str) -> None:
            headers = MutableHeaders(scope=start)
            headers.setdefault("content-security-policy", policy)
            for name, value in FIXED.items():
                headers.setdefault(name, value)
            if https:
                headers.setdefault("strict-transport-security", HSTS)

        if page is None:

            async def send_marked(message: Message) -> None:
                if message["type"] == "http.response.start":
                    mark(message, STRICT_POLICY)
                await send(message)

            await self.app(scope, receive, send_marked)
            return

        # a documentation page: small and sent at once; its policy needs the whole body
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_doc(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            mark(start, doc_policy(page, body))
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, send_doc)
