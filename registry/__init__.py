"""Every MLflow call of the project lives in this package."""
