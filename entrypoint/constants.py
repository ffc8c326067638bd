"""Every external name the entry point reads or writes, in one place."""

# Environment variables set by SageMaker or by our image.
ENV_TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
LOCAL_JOB_NAME = "local"  # the job name outside SageMaker, when TRAINING_JOB_NAME is not set

# Hyperparameter keys the SageMaker SDK and automatic model tuning add on their own.
IGNORED_HYPERPARAMETER_PREFIXES = ("sagemaker_", "_")
SUBMIT_DIRECTORY_HYPERPARAMETER = "sagemaker_submit_directory"  # the SDK's source_dir on S3

# Channels (folders under /opt/ml/input/data).
CHANNEL_TRAIN = "train"
CHANNEL_TEST = "test"
CHANNEL_CODE = "code"  # SDK v3's SourceCode delivers source_dir here (/opt/ml/input/data/code)

# Array names accepted inside the channels' .npz files, in order of preference.
FEATURE_ARRAY_NAMES = ("x", "X", "features")
LABEL_ARRAY_NAMES = ("y", "Y", "labels")

# Managed spot checkpoints (/opt/ml/checkpoints, synced to checkpoint_s3_uri).
CHECKPOINT_DIR = "checkpoints"  # under the base dir (/opt/ml)
CHECKPOINT_PROGRESS_FILE = "progress.json"
CHECKPOINT_MODEL_DIR = "model"

# Under /opt/ml/output: its first 1024 characters are the job's FailureReason.
FAILURE_FILE = "failure"

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

# Several hosts in one job (instance_count > 1: entrypoint/multihost/hosts.py, entrypoint/multihost/proxy.py).
PROXY_PORT = 13000  # the leader's gRPC storage proxy (Optuna's default); infra/optuna-hpo.yaml opens it
HOST_SUMMARY_FILE = "host.json"  # output/data/<host>/host.json: what this host ran and kept
ATTR_HOST = "host"  # trial user attribute: the host that ran the trial
