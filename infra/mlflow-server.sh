#!/usr/bin/env sh
# MLflow tracking server with basic authentication, configured from the environment only:
# no credential is written to the repository. Used by docker-compose.yml and by the
# team-setup integration test. Required:
#   MLFLOW_BACKEND_STORE_URI   e.g. postgresql+psycopg2://mlflow:***@postgres:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI   e.g. postgresql+psycopg2://mlflow:***@postgres:5432/mlflow_auth
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   (read by MLflow itself on first start)
#   MLFLOW_FLASK_SERVER_SECRET_KEY   CSRF key of the auth app (the same on every replica)
# Optional: MLFLOW_ARTIFACTS_DESTINATION (default s3://mlflow), MLFLOW_HOST, MLFLOW_PORT,
# MLFLOW_AUTH_DEFAULT_PERMISSION (default NO_PERMISSIONS: a new user sees nothing until granted).
# Extra arguments are passed to `mlflow server`.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY}"
config_dir="$(mktemp -d)"
umask 077
cat > "$config_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-NO_PERMISSIONS}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
exec "${MLFLOW_BIN:-mlflow}" server \
  --app-name basic-auth \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-s3://mlflow}" \
  "$@"
