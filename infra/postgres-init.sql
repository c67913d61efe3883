-- Runs once, when the postgres volume is first initialised: a separate database for MLflow's
-- basic-auth user store, so its tables never mix with the tracking store's migrations.
CREATE DATABASE mlflow_auth;
