"""``python -m app``: serve the API on the configured host and port."""

from __future__ import annotations

import logging

import uvicorn

from app.api.main import create_app
from app.settings import get_settings


def main() -> None:
    """Start the API."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info"
    )


if __name__ == "__main__":
    main()
