# Switchman, the control plane. Envoy runs in its own container (envoyproxy/envoy), see
# docker-compose.yml; this image holds only Python and the `switchman` console script.
#
#   docker build -t switchman .
#   docker run -v "$PWD/examples/canary:/config:ro" -p 18000:18000 -p 9080:9080 switchman

# Builds the wheel in a throwaway stage so the final image has no source tree and no build
# dependencies (setuptools, wheel) beyond what pip itself ships.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets only pyproject.toml, README.md and the two packages into the context.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# Not editable: the package lives in site-packages, like any installed tool.
RUN pip install /wheels/*.whl && rm -rf /wheels

# A fixed, non-root uid, so a read-only config mount only has to be world-readable.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchman
USER 10001:10001
WORKDIR /tmp

# 18000: xDS (ADS over gRPC) for Envoy; 9080: admin HTTP (/healthz, /readyz, /metrics, /debug/…).
EXPOSE 18000 9080

# No curl in the slim image: ask Python. /healthz answers once the admin server is up; it uses the
# admin port from CMD below (change both together).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9080/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["switchman"]
CMD ["serve", "--config-dir", "/config", "--xds-address", "0.0.0.0:18000", "--admin-address", "0.0.0.0:9080"]
