"""Bearer tokens: signed JWTs carrying the agency id, the person and their role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from fastapi import HTTPException, Request

ALGORITHM = "HS256"
OPERATOR = "operator"


@dataclass(frozen=True)
class Claims:
    agency_id: str
    role: str
    person: str

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR


def mint(
    secret: str,
    *,
    agency_id: str,
    role: str,
    person: str,
    now: datetime,
    ttl: timedelta = timedelta(hours=12),
) -> str:
    return jwt.encode(
        {
            "sub": person,
            "agency_id": agency_id,
            "role": role,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
        },
        secret,
        algorithm=ALGORITHM,
    )


def verify(secret: str, token: str, now: datetime) -> Claims:
    """Check the signature, then ``iat``/``exp`` against the service's clock (which tests and
    demos move), not the wall clock."""
    try:
        data = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub"], "verify_exp": False, "verify_iat": False},
        )
        t = now.timestamp()
        if t >= float(data["exp"]):
            raise jwt.ExpiredSignatureError("Signature has expired")
        if float(data["iat"]) > t + 60:
            raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
        return Claims(
            agency_id=str(data["agency_id"]), role=str(data["role"]), person=str(data["sub"])
        )
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise HTTPException(
            401, detail=f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from None


def bearer(request: Request, secret: str, now: datetime) -> Claims:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401, detail="missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return verify(secret, token, now)
