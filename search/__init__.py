"""The search around trials: spaces, MLflow tracking, the CLI."""
