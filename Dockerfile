# The PayStream image: API, Faust worker, connector registration and localstripe.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY paystream paystream
COPY api api
COPY streams streams
COPY connectors connectors
COPY stack/__init__.py stack/errors.py stack/procs.py stack/
COPY stack/localstripe stack/localstripe
RUN pip install --no-cache-dir '.[dev]'
ENV PYTHONUNBUFFERED=1
CMD ["paystream", "--help"]
