#!/usr/bin/env sh
# First start of the PostgreSQL volume: one database each for MLflow runs, MLflow users and Prefect.
set -eu
for db in mlflow mlflow_auth prefect; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c "CREATE DATABASE $db"
done
