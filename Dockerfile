# One image for the API, the UI and the trainer. CPU torch by default (the API and UI
# need no GPU); the trainer builds with TORCH_INDEX_URL set to a CUDA wheel index.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MEM0_TELEMETRY=False
WORKDIR /srv/flywheel
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md requirements.lock ./
COPY app ./app
COPY backend ./backend
COPY retriever ./retriever
COPY memory ./memory
COPY rl_trainer ./rl_trainer
COPY ui ./ui
# The locked versions, torch from the chosen index (its line dropped from the lock, since
# the CUDA build has another local version), then the project without resolving anything.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}" \
    && grep -v '^torch==' requirements.lock > /tmp/deps.lock \
    && pip install --no-deps -r /tmp/deps.lock \
    && pip install --no-deps .
EXPOSE 8000 8501
CMD ["python", "-m", "app"]
