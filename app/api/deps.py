"""Request dependencies: the services, the signed-in user, the admin check."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.services import Services
from app.store import Role, User
from app.users import user_by_key

_bearer = HTTPBearer(auto_error=False, description="The API key from `python -m app.users`.")


def get_services(request: Request) -> Services:
    """The process's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user whose API key came as ``Authorization: Bearer <key>``; 401 otherwise.

    Keys are looked up on every request (an indexed query), so a revoked or rotated key
    stops working at once. 429 when the address or the key is over its rate limit.
    """
    address = request.client.host if request.client else "unknown"
    if services.limits is not None:
        services.limits.check_address(address)
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send it as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = await asyncio.to_thread(user_by_key, services.db, credentials.credentials)
    if user is None:
        if services.limits is not None:
            services.limits.failed_sign_in(address)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key; an admin makes one with "
            "'python -m app.users create NAME' or 'python -m app.users rotate NAME'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if services.limits is not None:
        services.limits.check_key(user.id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    """The signed-in user if an admin; 403 otherwise."""
    if user.role != Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin's API key")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
