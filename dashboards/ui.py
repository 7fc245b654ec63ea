#!/usr/bin/env python
"""Start the MLflow UI against the search's tracking store, on loopback only.

    python dashboards/ui.py                  # MLFLOW_TRACKING_URI, default sqlite:///mlflow.db
    python dashboards/ui.py --port 5001
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def ui_command(uri: str, port: int) -> list[str]:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    command = ui_command(args.tracking_uri, args.port)
    print(" ".join(command), flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
