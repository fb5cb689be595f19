"""Chinese, English and mixed documents uploaded through the API and found by chat questions."""

from __future__ import annotations

import httpx
import pytest

from tests.app.conftest import Api, auth, create_user, wait_ingested
from tests.app.sse import chat_stream

pytestmark = pytest.mark.slow

DOCUMENTS = {
    "great-wall.md": "# 长城\n\n长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，"
    "全长两万一千多公里，修建历时两千多年。\n",
    "octopus.md": "# Octopuses\n\nAn octopus has three hearts and blue, copper-based blood. "
    "Two hearts pump blood through the gills.\n",
    "espresso.md": "# 咖啡 Coffee\n\nEspresso 是一种浓缩咖啡，起源于意大利 (Italy)。"
    "Baristas pull a shot in about 25 seconds at nine bar of pressure.\n",
}
QUESTIONS = {
    "长城全长多少公里？": "great-wall.md",
    "How many hearts does an octopus have?": "octopus.md",
    "Espresso 起源于哪个国家？": "espresso.md",
}


def test_chinese_english_and_mixed_documents_are_found(api: Api) -> None:
    key = create_user(api, "multilingual")
    with httpx.Client(timeout=120) as client:
        ids = {}
        for name, body in DOCUMENTS.items():
            response = client.post(
                f"{api.url}/documents",
                headers=auth(key),
                files=[("files", (name, body.encode("utf-8")))],
            )
            assert response.status_code == 202, response.text
            ids[name] = response.json()["documents"][0]["id"]
        for doc_id in ids.values():
            assert wait_ingested(client, api.url, key, doc_id)["status"] == "ready"
        for question, expected in QUESTIONS.items():
            # A first question in a new thread is searched as asked.
            events = chat_stream(client, api.url, key, question)
            sources = events[-2][1]["sources"]
            assert sources, question
            assert sources[0]["document_id"] == ids[expected], (question, sources)
