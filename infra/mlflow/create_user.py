"""Create the MLflow user that sweeps log as, so Ray containers never hold the admin password.

Run once per `docker compose up` (service `mlflow-init`), as the admin. Idempotent: when the user
already exists its password is reset to the one in the env file, so rotating it there and
re-running `docker compose up -d` is enough.

Environment: MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD,
SALIQ_MLFLOW_USERNAME, SALIQ_MLFLOW_PASSWORD.
"""

import os

from mlflow.exceptions import RestException
from mlflow.server import get_app_client


def main() -> None:
    # The auth client signs its requests with MLFLOW_TRACKING_USERNAME / _PASSWORD: the admin here.
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    user, password = os.environ["SALIQ_MLFLOW_USERNAME"], os.environ["SALIQ_MLFLOW_PASSWORD"]
    try:
        client.create_user(user, password)
        print(f"created MLflow user {user!r}")
    except RestException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(user, password)
        print(f"MLflow user {user!r} exists; its password was reset from the env file")


if __name__ == "__main__":
    main()
