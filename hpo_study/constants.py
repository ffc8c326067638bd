"""The external names a study's readers share: the training job writes them, the launcher reads them."""

# Hyperparameter keys the SageMaker SDK and automatic model tuning add on their own.
IGNORED_HYPERPARAMETER_PREFIXES = ("sagemaker_", "_")

# Files written to the output data folder (shipped in output.tar.gz).
EMBEDDED_STORAGE_FILE = "optuna-study.db"
TRIALS_CSV_FILE = "trials.csv"
BEST_TRIAL_FILE = "best_trial.json"
PLOTS_DIR = "plots"

# Names of the metrics reported by Chainer's Evaluator/LogReport.
METRIC_KEYS = {
    "accuracy": "validation/main/accuracy",
    "loss": "validation/main/loss",
}

# Trial user attributes.
ATTR_JOB_NAME = "job_name"
ATTR_EPOCHS = "epochs_run"
ATTR_FAIL_REASON = "fail_reason"
ATTR_HOST = "host"  # in a job of several hosts: the host that ran the trial (entrypoint/multihost/)
