"""The console's pages: server-rendered with Jinja2 (autoescape on), every asset served
here (no CDN), charts as inline SVG drawn on the server. Labels in Vietnamese, times in
Asia/Ho_Chi_Minh. A page needs the session cookie (``POST /login`` with a staff token) or
a bearer token; without one a browser gets the login page (401), anything else the JSON
error. Agency users see their own agency's rows, as in the API.
"""

import csv
import html
import io
import re
import unicodedata
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from contracts import console as c
from contracts.agencies import AgencyError, default_book
from services.console import api, domain, store
from services.runtime.acl import SERVICES
from services.runtime.auth import Staff
from services.runtime.service import Runtime

HERE = FsPath(__file__).parent
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
COLOURS = {
    "intake": "#0b7285",
    "routing": "#862e9c",
    "consultation": "#e67700",
    "notification": "#2b8a3e",
    "console": "#495057",
}
STATES = {
    "registered": "Mới đăng ký (chưa tiếp nhận)",
    "received": "Đã tiếp nhận",
    "refused": "Từ chối tiếp nhận",
    "not_received": "Không được tiếp nhận",
    "processing": "Đang xử lý",
    "waiting_supplement": "Chờ bổ sung",
    "waiting_fee": "Chờ nộp phí",
    "withdrawn": "Đã rút",
    "stopped": "Dừng xử lý",
    "result_ready": "Đã có kết quả",
    "returned": "Đã trả kết quả",
}
TIMELINESS = {"early": "Trước hạn", "on_time": "Đúng hạn", "late": "Quá hạn"}
REQUEST_STATUS = {
    "requested": "Đã gửi, chờ trả lời",
    "open": "Đang chờ trả lời",
    "reminded": "Đã nhắc",
    "escalated": "Đã báo cáo cấp trên",
    "lapsed": "Quá hạn, đang chờ trả lời",
    "replied": "Đã trả lời",
    "deemed_consent": "Được coi là đã đồng ý",
    "cancelled": "Đã hủy",
    "extended": "Đã gia hạn",
}


def agency_label(agency_id: Any) -> str:
    """An agency as people read it: its name, with its id after it (or the id alone when
    the registry does not know it)."""
    if not agency_id:
        return ""
    try:
        return f"{default_book().get(str(agency_id)).name} ({agency_id})"
    except AgencyError:
        return str(agency_id)


DL_STATUS = {
    "open": "Chưa xử lý",
    "replay_pending": "Đang phát lại",
    "replayed": "Đã phát lại",
    "replay_failed": "Phát lại lỗi",
    "discarded": "Đã bỏ qua",
}


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["vn"] = domain.local
    env.filters["agency"] = agency_label
    env.globals.update(
        STATES=STATES, TIMELINESS=TIMELINESS, DL_STATUS=DL_STATUS, REQUEST_STATUS=REQUEST_STATUS
    )
    return env


ERROR_TITLES = {
    400: "Yêu cầu không đọc được",
    401: "Cần đăng nhập",
    403: "Không có quyền xem trang này",
    404: "Không tìm thấy",
    409: "Không thực hiện được",
    413: "Dữ liệu gửi lên quá lớn",
    415: "Định dạng không được hỗ trợ",
    422: "Dữ liệu không hợp lệ",
    429: "Quá nhiều yêu cầu, vui lòng thử lại sau",
}
FIELDS = {
    "query.type": "Loại sự kiện",
    "query.agency": "Cơ quan",
    "query.dossier": "Mã hồ sơ",
    "query.hours": "Số giờ",
    "query.minutes": "Số phút",
    "query.procedure": "Thủ tục",
    "query.from_month": "Từ tháng",
    "query.to_month": "Đến tháng",
    "query.q": "Từ khóa tìm kiếm",
    "query.code": "Mã hồ sơ",
    "query.state": "Trạng thái",
    "query.status": "Trạng thái",
    "query.writer": "Dịch vụ ghi",
    "query.event_type": "Loại sự kiện",
    "query.after": "Trang tiếp theo",
    "query.limit": "Số dòng mỗi trang",
    "path.code": "Mã hồ sơ",
    "path.entry_id": "Mã thư chết",
    "agency": "Cơ quan",
    "role": "Vai trò",
}
_ERRORS = None


def error_page(request: Request, status: int, content: dict[str, Any]) -> HTMLResponse:
    """An error as a page, for a browser that asked for one: what went wrong and which
    field, in Vietnamese, never raw JSON."""
    global _ERRORS
    if _ERRORS is None:
        _ERRORS = environment()
    raw = content.get("detail")
    errors = [e for e in content.get("errors") or [] if isinstance(e, dict)]
    detail = raw if isinstance(raw, str) and raw not in ("invalid request",) else ""
    page = _ERRORS.get_template("error.html.j2").render(
        who=None,
        dev=False,
        path=request.url.path,
        title=ERROR_TITLES.get(status, f"Lỗi {status}"),
        detail=detail,
        errors=errors,
        FIELDS=FIELDS,
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this origin, else ``/``. Refused: anything
    with a scheme or a host (``javascript:``, ``https://…``, ``//evil.example``), a
    backslash (browsers read ``/\\evil`` as ``//evil``), control characters and spaces
    (browsers drop a tab or newline, so slash, tab, slash becomes ``//``), and the login
    page itself."""
    if not value or len(value) > 2000 or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value:
        return "/"
    if any(unicodedata.category(ch)[0] in "CZ" for ch in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path == "/login":
        return "/"
    # dot segments (plain or percent-encoded) are resolved by the browser: "/.//evil"
    # becomes "//evil", another host
    segments = unquote(parts.path).split("/")
    if any(seg in (".", "..") for seg in segments) or re.search(r"%(2e|2f|5c)", value, re.I):
        return "/"
    return value


def _cookie(request: Request) -> dict[str, Any]:
    """The session cookie's attributes: HttpOnly, SameSite=Strict, and Secure whenever the
    request came over HTTPS (directly, or through a proxy uvicorn trusts:
    ``FORWARDED_ALLOW_IPS``)."""
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https"}


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def line_chart(
    series: dict[str, list[tuple[str, float]]],
    *,
    width: int = 940,
    height: int = 220,
    percent: bool = False,
) -> Markup:
    """Lines over shared x labels, as inline SVG (labels escaped); the legend in a column
    on the right, names without the deployment's topic or group prefix."""
    labels = sorted({x for points in series.values() for x, _ in points})
    top = max([v for points in series.values() for _, v in points] + [1.0])
    if percent:
        top = 1.0
    left, bottom, pad, legend = 48, 28, 10, 220
    w, h = width - left - pad - legend, height - bottom - pad
    n = max(len(labels) - 1, 1)

    def xy(label: str, v: float) -> tuple[float, float]:
        return left + labels.index(label) * w / n, pad + h - (v / top) * h

    palette = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#495057"]
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{left}" y1="{pad + h}" x2="{left + w}" y2="{pad + h}" class="axis"/>',
        f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{pad + h}" class="axis"/>',
        f'<text x="{left - 6}" y="{pad + 4}" text-anchor="end" class="tick">'
        f"{'100%' if percent else _esc(int(top))}</text>",
        f'<text x="{left - 6}" y="{pad + h}" text-anchor="end" class="tick">0</text>',
    ]
    step = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % step == 0:
            x, _ = xy(label, 0)
            parts.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="tick">'
                f"{_esc(label)}</text>"
            )
    for k, (name, points) in enumerate(sorted(series.items())):
        colour = palette[k % len(palette)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(a, b) for a, b in sorted(points)))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        for a, b in sorted(points):
            x, y = xy(a, b)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
        short = name.split("lienthong", 1)[-1].lstrip(".-") or name
        parts.append(
            f'<text x="{left + w + 16}" y="{pad + 12 + 16 * k}" fill="{colour}"'
            f' class="legend">■ {_esc(short)}</text>'
        )
    if not labels:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="tick">'
            "Chưa có dữ liệu</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


FIGURES_CSV_HEADER = (
    "Tháng",
    "Mã cơ quan",
    "Cơ quan",
    "Mã thủ tục",
    "Thủ tục",
    "Tiếp nhận",
    "Trực tuyến",
    "Tỷ lệ trực tuyến",
    "Đã giải quyết",
    "Đúng hạn",
    "Quá hạn",
    "Tỷ lệ đúng hạn",
    "Phiếu xin lỗi",
)


def agency_name(agency_id: str) -> str:
    try:
        return default_book().get(agency_id).name
    except AgencyError:
        return ""


def figures_csv(f: c.Figures) -> str:
    """The figures' rows as CSV for Excel: a BOM (so it reads UTF-8 Vietnamese), a header
    row in Vietnamese, names beside ids, numbers plain (rates as fractions, ``.``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(FIGURES_CSV_HEADER)
    for r in f.rows:
        w.writerow(
            [
                r.month,
                r.agency,
                agency_name(r.agency),
                r.procedure_code,
                r.procedure_name or "",
                r.received,
                r.online,
                "" if r.online_share is None else r.online_share,
                r.finished,
                r.on_time,
                r.late,
                "" if r.on_time_rate is None else r.on_time_rate,
                r.apologies,
            ]
        )
    return "\ufeff" + unicodedata.normalize("NFC", out.getvalue())


def figures_csv_response(f: c.Figures) -> Response:
    return Response(
        figures_csv(f).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="chi-so-766.csv"',
            "Cache-Control": "no-store",
        },
    )


def causation_svg(t: c.DossierTimeline) -> Markup:
    """The dossier's events top to bottom in time, each cause linked to its effects."""
    row, x0 = 30, 40
    index = {e.event_id: i for i, e in enumerate(t.events)}
    height = row * len(t.events) + 20
    parts = [
        f'<svg class="chain" viewBox="0 0 900 {height}" xmlns="http://www.w3.org/2000/svg"'
        ' role="img" aria-label="Chuỗi nhân quả">'
    ]
    for link in t.links:
        a, b = index[link.cause], index[link.effect]
        y1, y2 = 20 + a * row, 20 + b * row
        bend = x0 - 10 - min(30, 4 * abs(b - a))
        parts.append(
            f'<path d="M {x0} {y1} C {bend} {y1}, {bend} {y2}, {x0} {y2}" class="link"'
            f' data-cause="{link.cause}" data-effect="{link.effect}"/>'
        )
    for i, e in enumerate(t.events):
        y = 20 + i * row
        colour = COLOURS.get(e.producer, "#495057")
        parts.append(
            f'<circle cx="{x0}" cy="{y}" r="6" fill="{colour}"><title>{_esc(e.event_id)}'
            "</title></circle>"
            f'<text x="{x0 + 14}" y="{y + 4}" class="node">'
            f"{_esc(domain.local(e.occurred_at))} · <tspan class='etype'>{_esc(e.type)}</tspan>"
            f" · {_esc(e.producer)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def build_router(rt: Runtime, monitor: api.Monitor) -> APIRouter:
    env = environment()
    r = APIRouter(include_in_schema=False)
    dev = rt.settings.dev_mode

    async def who(request: Request) -> Staff | Response:
        """The caller of a page, or the login page (401) for a browser without one."""
        dependency = api.caller_dependency(rt)
        from fastapi.security.utils import get_authorization_scheme_param

        header = request.headers.get("authorization")
        scheme, token = get_authorization_scheme_param(header)
        from fastapi.security import HTTPAuthorizationCredentials

        cred = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if header else None
        try:
            return await dependency(request, cred, request.cookies.get(api.COOKIE))
        except HTTPException as exc:
            if "text/html" in request.headers.get("accept", ""):
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return render("login.html.j2", request, None, status=401, next=safe_next(here))
            content = (
                exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail, "errors": []}
            )
            return JSONResponse(content, status_code=exc.status_code, headers=exc.headers)

    def render(
        name: str, request: Request, staff: Staff | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        page = env.get_template(name).render(who=staff, dev=dev, path=request.url.path, **ctx)
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    @r.get("/static/{name}")
    async def static(name: Annotated[str, Path(pattern=r"^[a-z.]{1,40}$")]) -> Response:
        if name not in STATIC:
            raise HTTPException(404, detail="no such file")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

    @r.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        next_ = safe_next(request.query_params.get("next"))
        return render("login.html.j2", request, None, next=next_)

    @r.post("/login")
    async def login(request: Request, body: c.ConsoleLogin) -> JSONResponse:
        """Keep a verified staff token in an HttpOnly, SameSite=Strict session cookie
        (Secure over HTTPS). Where to go next is the page's (``data-next``, checked by
        ``safe_next`` and again by console.js): this answer redirects nowhere."""
        staff = await rt.auth.tokens.verify(body.token, rt.auth.now())
        response = JSONResponse(
            {"person": staff.person, "role": staff.role, "agency_id": staff.agency_id}
        )
        response.set_cookie(api.COOKIE, body.token, max_age=12 * 3600, **_cookie(request))
        return response

    @r.post("/logout")
    async def logout(request: Request) -> JSONResponse:
        response = JSONResponse({"ok": True})
        response.delete_cookie(api.COOKIE, **_cookie(request))
        return response

    if dev:  # exists only in development mode

        @r.post("/login/dev")
        async def login_dev(request: Request) -> JSONResponse:
            """Development mode: sign in as an operator without a token of one's own."""
            token = rt.auth.mint_dev(
                agency_id="000.00.00.H29", role="operator", person="Vận hành viên"
            )
            response = JSONResponse({"person": "Vận hành viên", "role": "operator"})
            max_age = int(rt.auth.dev_token_lifetime.total_seconds())
            response.set_cookie(api.COOKIE, token, max_age=max_age, **_cookie(request))
            return response

    @r.get("/")
    async def stream_page(
        request: Request,
        type_: api.TypeFilter = None,
        agency: api.AgencyFilter = None,
        dossier: api.DossierFilter = None,
    ) -> Response:
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        own = api.scope(staff, agency)
        rows = await store.events(
            rt.pool, type_=type_, agency=own, dossier=dossier, after=None, limit=50
        )
        events = [api.event_view(x) for x in rows]
        last = max((e.seq for e in events), default=None)
        if last is None:
            last = int(await rt.pool.fetchval("SELECT COALESCE(max(seq), 0) FROM events"))
        types = sorted(x["type"] for x in await rt.pool.fetch("SELECT DISTINCT type FROM events"))
        return render(
            "stream.html.j2",
            request,
            staff,
            events=events,
            last=last,
            filters={"type": type_ or "", "agency": agency or "", "dossier": dossier or ""},
            types=types,
        )

    @r.get("/dossiers")
    async def search_page(
        request: Request,
        q: api.SearchText = None,
        code: api.CodePrefix = None,
        state: api.StateFilter = None,
        agency: api.AgencyFilter = None,
        after: api.SearchCursor = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """The dossier search: the top bar's box (``q``) and the form's filters."""
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        found = await api.search_dossiers(
            rt, api.scope(staff, agency), q=q, code=code, state=state, after=after, limit=limit
        )
        filters = {"q": q or "", "code": code or "", "state": state or "", "agency": agency or ""}
        kept = {k: v for k, v in filters.items() if v}
        if limit != 50:
            kept["limit"] = str(limit)
        more = (
            "/dossiers?" + urlencode({**kept, "after": found.next_after})
            if found.next_after
            else None
        )
        return render(
            "dossiers.html.j2",
            request,
            staff,
            found=found,
            filters=filters,
            more=more,
            first="/dossiers?" + urlencode(kept) if after else None,
        )

    @r.get("/dossiers/{code}")
    async def dossier_page(request: Request, code: api.Code) -> Response:
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        t = await api.timeline(rt, staff, code)
        return render("dossier.html.j2", request, staff, t=t, chain=causation_svg(t))

    @r.get("/lag")
    async def lag_page(
        request: Request, minutes: Annotated[int, Query(ge=1, le=240)] = 30
    ) -> Response:
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        if not staff.is_operator:
            raise HTTPException(403, detail={"detail": "operators only", "errors": []})
        report = await api.lag_report(rt, monitor, minutes)
        per_topic: dict[str, list[tuple[str, float]]] = {}
        for p in report.throughput:
            per_topic.setdefault(p.topic, []).append((domain.local(p.minute)[11:16], p.events))
        lag_series: dict[str, list[tuple[str, float]]] = {}
        for s in report.samples:
            lag_series.setdefault(s.group, []).append((domain.local(s.at)[11:19], s.total))
        return render(
            "lag.html.j2",
            request,
            staff,
            report=report,
            throughput=line_chart(per_topic),
            lag_chart=line_chart(lag_series),
            minutes=minutes,
        )

    @r.get("/dead-letters")
    async def dead_letters_page(
        request: Request,
        status: Annotated[c.DeadLetterStatus | Literal[""] | None, Query()] = None,
        writer: api.WriterFilter = None,
        event_type: api.EventTypeFilter = None,
        dossier: api.DossierFilter = None,
        after: api.DeadLetterCursor = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> Response:
        """Dead letters, filtered (empty fields are no filter), a page at a time."""
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        rows = await store.dead_letters(
            rt.pool,
            agency=api.scope(staff),
            status=status or None,
            limit=limit + 1,
            writer=writer or None,
            event_type=event_type or None,
            dossier=dossier or None,
            after=after or None,
        )
        items = [api.summary(x) for x in rows[:limit]]
        filters = {
            "status": status or "",
            "writer": writer or "",
            "event_type": event_type or "",
            "dossier": dossier or "",
        }
        kept = {k: v for k, v in filters.items() if v}
        if limit != 200:
            kept["limit"] = str(limit)
        more = (
            "/dead-letters?" + urlencode({**kept, "after": items[-1].id})
            if len(rows) > limit
            else None
        )
        return render(
            "dead_letters.html.j2",
            request,
            staff,
            items=items,
            filters=filters,
            writers=sorted(SERVICES),
            more=more,
            first="/dead-letters?" + urlencode(kept) if after else None,
        )

    @r.get("/dead-letters/{entry_id}")
    async def dead_letter_page(
        request: Request, entry_id: api.EntryId, reveal: bool = False
    ) -> Response:
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        d = await api.detail(rt, staff, entry_id, reveal)
        import json

        pretty = (
            json.dumps(d.payload, ensure_ascii=False, indent=2)
            if not isinstance(d.payload, str)
            else d.payload
        )
        return render("dead_letter.html.j2", request, staff, d=d, pretty=pretty)

    async def choices(own: str | None) -> dict[str, list[tuple[str, str]]]:
        """The agencies and procedures a filter form offers: those of the caller's rows."""
        where, args = ("", []) if own is None else (" WHERE agency = $1", [own])
        rows = await rt.pool.fetch(
            "SELECT DISTINCT agency, procedure_code, procedure_name FROM dossiers" + where, *args
        )
        agencies = sorted({x["agency"] for x in rows if x["agency"]})
        procedures = {x["procedure_code"]: x["procedure_name"] or "" for x in rows}
        return {
            "agencies": [(a, agency_label(a)) for a in agencies],
            "procedures": sorted((k, v) for k, v in procedures.items() if k),
        }

    @r.get("/sla")
    async def sla_page(
        request: Request,
        hours: Annotated[int, Query(ge=1, le=720)] = 24,
        agency: api.AgencyFilter = None,
        procedure: api.ProcedureFilter = None,
    ) -> Response:
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        own = api.scope(staff, agency)
        board = await api.sla_board(rt, own, hours, procedure or None)
        filters = {"hours": hours, "agency": agency or "", "procedure": procedure or ""}
        return render(
            "sla.html.j2",
            request,
            staff,
            board=board,
            filters=filters,
            choices=await choices(api.scope(staff)),
        )

    async def figures_for(
        request: Request,
        agency: str | None,
        procedure: str | None,
        from_month: str | None,
        to_month: str | None,
    ) -> Response | tuple[Staff, c.Figures]:
        """The caller and the figures it may see (empty fields: no filter), or the login
        page / error for one without a session."""
        staff = await who(request)
        if isinstance(staff, Response):
            return staff
        f = await api.figures_of(
            rt, api.scope(staff, agency), procedure or None, from_month or None, to_month or None
        )
        return staff, f

    @r.get("/figures.csv")
    async def figures_csv_page(
        request: Request,
        agency: api.AgencyFilter = None,
        procedure: api.ProcedureFilter = None,
        from_month: api.Month = None,
        to_month: api.Month = None,
    ) -> Response:
        found = await figures_for(request, agency, procedure, from_month, to_month)
        if isinstance(found, Response):
            return found
        return figures_csv_response(found[1])

    @r.get("/figures")
    async def figures_page(
        request: Request,
        agency: api.AgencyFilter = None,
        procedure: api.ProcedureFilter = None,
        from_month: api.Month = None,
        to_month: api.Month = None,
        format_: Annotated[str | None, Query(alias="format", pattern=r"^(|html|csv)$")] = None,
    ) -> Response:
        found = await figures_for(request, agency, procedure, from_month, to_month)
        if isinstance(found, Response):
            return found
        staff, f = found
        if format_ == "csv":
            return figures_csv_response(f)
        filters = {
            "agency": agency or "",
            "procedure": procedure or "",
            "from_month": from_month or "",
            "to_month": to_month or "",
        }
        query = urlencode({k: v for k, v in filters.items() if v})
        rate = {
            "Tỷ lệ đúng hạn": [
                (t.month, t.on_time_rate or 0.0) for t in f.trend if t.on_time_rate is not None
            ],
            "Tỷ lệ trực tuyến": [
                (t.month, t.online_share or 0.0) for t in f.trend if t.online_share is not None
            ],
        }
        return render(
            "figures.html.j2",
            request,
            staff,
            f=f,
            chart=line_chart(rate, percent=True),
            filters=filters,
            csv_url="/figures.csv" + (f"?{query}" if query else ""),
            choices=await choices(api.scope(staff)),
        )

    return r
