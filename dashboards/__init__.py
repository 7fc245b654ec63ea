"""Reading results back: report.py (search_data -> tables, figures; registry: best model -> Model Registry) and
ui.py (the MLflow UI and optuna-dashboard on the stores search/stores.py names)."""
