# syntax=docker/dockerfile:1
# One image for every process of the product (cookiecutter-django style): the API
# (the default CMD), and, with another command, the Celery worker, beat and Flower.
# See docker-compose.yml for how each is started.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=core.settings \
    DJANGO_DEBUG=0 \
    API_BIND=0.0.0.0:8000

WORKDIR /app

# A fixed uid/gid so mounted volumes and Kubernetes securityContext can name it. The
# home directory is the user's only writable place besides /tmp.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

# Dependencies first: this layer is rebuilt only when requirements.txt changes. It holds
# what production runs and nothing else (no test, benchmark or lint package: those are
# in requirements-dev.txt, which the image never installs).
# On x86_64 every pinned package installs from a wheel (psycopg-binary bundles libpq),
# so no compiler or -dev packages are needed.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# settings.py refuses to load without a secret key when debug is off. The key below
# exists only for this RUN step (not ARG/ENV, so it is neither kept in the image's
# environment nor able to stand in for a missing DJANGO_SECRET_KEY at run time).
# collectstatic reads no database and no Redis.
RUN DJANGO_SECRET_KEY=collectstatic-build-step-only-not-a-secret \
    python manage.py collectstatic --noinput

# The code and the collected static files stay owned by root: the app only reads them.
USER app

EXPOSE 8000

CMD ["python", "-m", "core.serve"]
