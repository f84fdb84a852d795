"""Routing's HTTP API."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from services.routing import store
from services.runtime.service import Runtime


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/routes/{code}", tags=["routing"])
    async def get(code: str) -> dict[str, object]:
        row = await store.get_route(rt.pool, code)
        if row is None:
            raise HTTPException(404, detail=f"no route for {code}")
        return dict(row)

    return r
