"""Every external name the launcher sends to or reads from AWS, in one place."""

PROG = "sagemaker-optuna"

# Hyperparameters the launcher fills in from its own options (docs/hyperparameters.md).
HP_STUDY_NAME = "study-name"
HP_REGION_NAME = "region-name"  # the secret's region, sent when --db-secret is a name (not an ARN)
# Command-line option (dest) -> the hyperparameter it sets; shared by every subcommand.
STUDY_OPTION_HPS = {
    "db_secret": "db-secret",
    "host": "host",
    "db_port": "db-port",
    "db_name": "db-name",
    "db_engine": "db-engine",
    "db_ssl_ca": "db-ssl-ca",
    "db_ssl_verify": "db-ssl-verify",
    "storage": "storage",
}
MAX_HYPERPARAMETERS = 100  # CreateTrainingJob's limit

# The lines every job prints (docs/training-job.md, "Metric lines") -> CloudWatch metrics.
METRIC_DEFINITIONS = (
    {"Name": "train:loss", "Regex": r" loss=([-+0-9.eE]+)"},
    {"Name": "train:accuracy", "Regex": r" accuracy=([-+0-9.eE]+)"},
    {"Name": "validation:loss", "Regex": r" validation_loss=([-+0-9.eE]+)"},
    {"Name": "validation:accuracy", "Regex": r" validation_accuracy=([-+0-9.eE]+)"},
    # The study's best as the job sees it at its end, and the job's own progress and kept model
    # (hpo_study/report.py ProgressLines): what status/best/deploy read without the database.
    {"Name": "best:trial", "Regex": r"best_trial=([0-9]+)"},
    {"Name": "best:value", "Regex": r" best_value=([-+0-9.eE]+)"},
    {"Name": "job:trials", "Regex": r"job_trials=([0-9]+)"},
    {"Name": "model:trial", "Regex": r"model_trial=([0-9]+)"},
    {"Name": "model:value", "Regex": r"model_value=([-+0-9.eE]+)"},
)
METRIC_BEST_TRIAL, METRIC_BEST_VALUE = "best:trial", "best:value"
METRIC_JOB_TRIALS, METRIC_MODEL_TRIAL, METRIC_MODEL_VALUE = "job:trials", "model:trial", "model:value"
# Where SageMaker publishes them while a job runs (what the SDK's TrainingJobAnalytics reads).
CLOUDWATCH_NAMESPACE = "/aws/sagemaker/TrainingJobs"
CLOUDWATCH_JOB_DIMENSION = "TrainingJobName"

# Channels every job needs (entrypoint/trials/data.py).
REQUIRED_CHANNELS = ("train", "test")

# SageMaker names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
NAME_MAX_LEN = 63
NAME_FALLBACK = "optuna"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"

# Training job statuses (DescribeTrainingJob.TrainingJobStatus).
JOB_COMPLETED = "Completed"
JOB_STOPPED = "Stopped"  # StopTrainingJob, MaxRuntimeInSeconds: our jobs save their model first
JOB_FAILED = "Failed"
JOB_TERMINAL = (JOB_COMPLETED, JOB_STOPPED, JOB_FAILED)
JOB_WITH_MODEL = (JOB_COMPLETED, JOB_STOPPED)

# SageMaker's error code for a name it does not know (DescribeTrainingJob, DescribeEndpoint).
SAGEMAKER_NOT_FOUND = "ValidationException"

# Endpoint statuses (DescribeEndpoint.EndpointStatus).
ENDPOINT_IN_SERVICE = "InService"
ENDPOINT_FAILED = "Failed"

# Defaults.
DEFAULT_VOLUME_GB = 30
DEFAULT_MAX_RUNTIME_S = 24 * 3600
SPOT_WAIT_FACTOR = 2  # MaxWaitTimeInSeconds defaults to this many times MaxRuntimeInSeconds
DEFAULT_POLL_S = 30.0
DEFAULT_WAIT_TIMEOUT_S = 3 * 24 * 3600  # jobs: a little more than their own default runtime
DEFAULT_ENDPOINT_TIMEOUT_S = 3600
DEFAULT_SERVING_INSTANCE = "ml.m5.large"
ENDPOINT_VARIANT = "AllTraffic"
MODEL_META_MAX_BYTES = 1024 * 1024  # model.json is a few KB; refuse to read more than this
S3_SCHEME = "s3://"

# Outputs of the stack infra/optuna-hpo.yaml makes (`--stack NAME`), and the option each fills.
STACK_SUBNETS = "SubnetIds"  # comma-separated
STACK_SECURITY_GROUP = "SecurityGroupId"
STACK_ROLE = "ExecutionRoleArn"
STACK_SECRET = "DatabaseSecretArn"
STACK_OUTPUT = "OutputS3Uri"
STACK_CHECKPOINTS = "CheckpointS3Uri"
STACK_IMAGE_REPOSITORY = "ImageRepositoryUri"
STACK_IMAGE_TAG = "latest"  # buildspec.yml moves it to each new build
STACK_ACCESS_INSTANCE = "AccessInstanceId"  # with EnableSsmAccess=true (`tunnel`)
STACK_DB_ENDPOINT = "DatabaseEndpoint"
STACK_DB_PORT = "DatabasePort"
