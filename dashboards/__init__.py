"""Reading results back: the MLflow UI launcher now; HTML reports with the cluster and dashboards issue."""
