#!/usr/bin/env bash
# Starts one SWMS service in a container (the image's default command).
#
#   SWMS_SERVICE    which service: identity, profile, registration, review, certificate,
#                   notification (the folder name under services/); or pass it as the first argument
#   RUN_MIGRATIONS  "true": upgrade the service's database to head before starting (default false)
#   MIGRATION_ATTEMPTS  tries for that upgrade before giving up (default 5); a retry covers replicas
#                   that start together and race for the first upgrade, and a database still starting
#
# Everything else (AMQP_URI, <SERVICE>_DB_URL, ...) is read by services/<name>/config.yaml.
set -euo pipefail

# Paths below are relative to the application root (this script lives in <root>/deploy/).
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

service="${SWMS_SERVICE:-${1:-}}"

if [[ ! "$service" =~ ^[a-z][a-z0-9_]*$ ]] || [[ ! -f "services/${service}/service.py" ]]; then
    available=$(cd services && for d in */; do [[ -f "${d}service.py" ]] && printf '%s ' "${d%/}"; done)
    echo "entrypoint: SWMS_SERVICE='${service}' is not a service; available: ${available}" >&2
    exit 64
fi

if [[ "${RUN_MIGRATIONS:-false}" == "true" ]]; then
    max_attempts="${MIGRATION_ATTEMPTS:-5}"
    attempt=1
    until python -m swms.migrations "$service"; do
        if (( attempt >= max_attempts )); then
            echo "entrypoint: ${service}: migrations failed ${attempt} times, giving up" >&2
            exit 1
        fi
        echo "entrypoint: ${service}: migrations failed (attempt ${attempt}/${max_attempts}), retrying" >&2
        sleep $(( attempt * 2 ))
        attempt=$(( attempt + 1 ))
    done
fi

# exec: nameko becomes the process that receives SIGTERM and stops its workers gracefully.
exec nameko run --config "services/${service}/config.yaml" "services.${service}.service"
