"""Routing's HTTP API: where a dossier went. Staff of its lead agency or of an agency it
consults, and operators; routes hold no personal data."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from services.routing import store
from services.runtime import auth
from services.runtime.auth import responses
from services.runtime.service import Runtime


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1")
    AnyStaff = Annotated[auth.Staff, Depends(rt.guards.staff())]

    @r.get("/routes/{code}", tags=["routing"], responses=responses(401, 403, 404, 422))
    async def get(code: str, who: AnyStaff) -> dict[str, object]:
        row = await store.get_route(rt.pool, code)
        if row is None:
            raise HTTPException(404, detail=f"no route for {code}")
        consulted = [c.get("agency_id") for c in (row["consult"] or [])]
        auth.require_agency(who, (row["lead_agency"], *consulted), operators=True)
        return dict(row)

    return r
