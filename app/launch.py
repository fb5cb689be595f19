"""``make run``: start every service of the embedded stack on loopback under honcho.

Each service is its own process (model server, API, UI) so that one crash is visible
and one Ctrl-C stops all of them; honcho prefixes and colours their logs. A service is
started only once its module exists, so the stack grows as the packages do.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from app.settings import get_settings as app_settings
from backend.settings import get_settings as backend_settings

logger = logging.getLogger("flywheel")


@dataclass(frozen=True)
class Service:
    """One process of the stack."""

    name: str
    module: str
    command: str
    url: str


def services() -> list[Service]:
    """The services that exist in this checkout, in start order."""
    app, backend = app_settings(), backend_settings()
    py = sys.executable
    candidates = [
        Service("model", "backend.server", f"{py} -m backend.server", backend.base_url),
        Service("api", "app.__main__", f"{py} -m app", app.api_url),
        Service(
            "ui",
            "ui.Home",
            f"{py} -m streamlit run ui/Home.py --server.address {app.ui_host} "
            f"--server.port {app.ui_port} --server.headless true "
            "--browser.gatherUsageStats false --client.toolbarMode minimal",
            app.ui_url,
        ),
    ]
    if app.online_training:  # opt-in: the loop trains on this machine's CPU or GPU
        candidates.append(
            Service("trainer", "rl_trainer.online", f"{py} -m rl_trainer.cli online", "")
        )
    if backend.model_server_url:  # an external server (vLLM) is configured: start none
        candidates = candidates[1:]
    return [s for s in candidates if importlib.util.find_spec(s.module) is not None]


def ensure_admin() -> str | None:
    """Create the local admin on first start; its API key, only when just created."""
    from app.store import open_database
    from app.users import create_user, user_by_name

    settings = app_settings()
    db = open_database(settings.db_url)
    try:
        if user_by_name(db, settings.admin_name) is not None:
            return None
        _, key = create_user(db, settings.admin_name, admin=True)
        return key
    finally:
        db.close()


LABELS = {"model": "Model server", "api": "API", "ui": "UI", "trainer": "Online trainer"}


def main() -> None:
    """Print the URLs and hand over to honcho, which stops every service on Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    found = services()
    if not found:
        logger.error("no service of the embedded stack exists in this checkout yet")
        raise SystemExit(1)
    key = ensure_admin() if any(s.name == "api" for s in found) else None
    for service in found:
        logger.info("%s: %s", LABELS[service.name], service.url or "on (see the Model page)")
    if key:
        logger.info("API key: %s", key)
        logger.info("(the admin's key is shown this once; make more with: python -m app.users)")
    sys.stdout.flush()
    with tempfile.NamedTemporaryFile(
        "w", prefix="flywheel-", suffix=".Procfile", delete=False
    ) as procfile:
        procfile.write("".join(f"{s.name}: {s.command}\n" for s in found))
    honcho = shutil.which("honcho", path=os.path.dirname(sys.executable)) or "honcho"
    os.execv(honcho, [honcho, "start", "-f", procfile.name, "-d", os.getcwd()])


if __name__ == "__main__":
    main()
