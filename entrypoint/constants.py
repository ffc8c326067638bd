"""Every external name the training job alone reads or writes, in one place (the names the launcher
also reads, of the study and its output files: hpo_study/constants.py)."""

# Environment variables set by SageMaker or by our image.
ENV_TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
LOCAL_JOB_NAME = "local"  # the job name outside SageMaker, when TRAINING_JOB_NAME is not set

# Hyperparameters the SageMaker SDK adds (hpo_study/constants.py: the prefixes settings ignore).
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

# Several hosts in one job (instance_count > 1: entrypoint/multihost/hosts.py, entrypoint/multihost/proxy.py).
PROXY_PORT = 13000  # the leader's gRPC storage proxy (Optuna's default); infra/optuna-hpo.yaml opens it
HOST_SUMMARY_FILE = "host.json"  # output/data/<host>/host.json: what this host ran and kept
