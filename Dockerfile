# The hashbridge services (producer, trainer, scorer) for compose.yaml: one image, the command
# chooses the part. Kafka itself runs from the pinned apache/kafka image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hashbridge ./hashbridge
COPY shared ./shared
COPY producer ./producer
COPY trainer ./trainer
COPY scorer ./scorer
COPY examples ./examples
RUN pip install .

CMD ["hashbridge", "--help"]
