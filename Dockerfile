# One bank of the consortium per container.
#
#   docker build -t consortium .
#   docker run -e BANK_ID=alfa -e CONSORTIUM_SECRET=... -v $PWD/ring.toml:/srv/ring.toml \
#              -v bank-alfa:/srv/var -p 8101:8101 consortium
#
# ring.toml is mounted, not built in: every bank of a ring reads the same file, and each
# bank's url in it must be the address the other banks reach it at. The bank listens on all
# interfaces inside the container (--host 0.0.0.0) at the port of its url.
FROM python:3.11-slim

# Python's assertions guard the ledger and the ring: never run with -O (or PYTHONOPTIMIZE).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv
COPY pyproject.toml README.md ./
COPY tokenring ./tokenring
COPY bank ./bank
COPY scenarios ./scenarios
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin bank \
    && mkdir -p /srv/var \
    && chown bank /srv/var

USER bank
VOLUME ["/srv/var"]
ENV BANK_ID=alfa
# Plain JSON log lines on stdout/stderr (not a terminal); SIGTERM makes the bank hand the
# token on and stop cleanly, which `docker stop` sends.
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec consortium bank \"$BANK_ID\" -c /srv/ring.toml --host 0.0.0.0"]
