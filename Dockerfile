# fhirserver with the MongoDB driver. `docker compose up` runs it next to MongoDB
# (docker-compose.yml); alone, it serves from a SQLite file in the /data volume.
#
#   docker build -t fhirserver .
#   docker run -p 8080:8080 -v fhir-data:/data fhirserver

# --- build: the project's wheel and the wheels of everything it needs --------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is made of (pyproject.toml: the package, the README it names,
# and the conformance folders it force-includes); .dockerignore keeps the rest out.
COPY pyproject.toml README.md ./
COPY fhirserver/ fhirserver/
COPY capability/ capability/
COPY searchparams/ searchparams/
COPY extensions/ extensions/
RUN pip wheel --wheel-dir /wheels '.[mongo]'

# --- run -----------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed from the wheels built above only (--no-index): no second download, and no
# chance of a same-named package from an index taking the place of this one.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels 'fhirserver[mongo]'

RUN groupadd --system --gid 10001 fhirserver \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /data --shell /usr/sbin/nologin fhirserver \
    && mkdir /data && chown 10001:10001 /data
WORKDIR /data
VOLUME /data

# Listen on every interface of the container; the SQLite default lives in the volume.
# docker-compose.yml sets FHIRSERVER_STORE to its MongoDB replica set instead.
ENV FHIRSERVER_HOST=0.0.0.0 \
    FHIRSERVER_PORT=8080 \
    FHIRSERVER_BASE_PATH=/fhir \
    FHIRSERVER_STORE=/data/fhir.sqlite
EXPOSE 8080

USER 10001:10001

# Healthy when GET [base]/metadata answers 2xx, on the port and base path configured
# (python's urllib: the slim image has no curl). Reads work even when a MongoDB
# store refuses writes (standalone server), so this says "serving", not "writable".
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; b = os.environ.get('FHIRSERVER_BASE_PATH', '/fhir').strip().strip('/'); urllib.request.urlopen('http://127.0.0.1:%s%s/metadata' % (os.environ.get('FHIRSERVER_PORT', '8080'), '/' + b if b else ''), timeout=4)"]

CMD ["fhirserver", "serve"]
