"""SDK v3's ModelTrainer in local container mode (training only).

python v3_local.py '{"image": ..., "channels": {...}, "root": ..., "hyperparameters": {...},
                     "source_dir": null | "...", "job": ...}'
"""

import json
import sys

from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, SourceCode
from sagemaker.train.model_trainer import Mode

args = json.loads(sys.argv[1])
trainer = ModelTrainer(
    training_image=args["image"],
    training_mode=Mode.LOCAL_CONTAINER,
    compute=Compute(instance_type="local_cpu", instance_count=args.get("instance_count", 1)),
    role="arn:aws:iam::123456789012:role/optuna-training",
    base_job_name=args["job"],
    hyperparameters=args["hyperparameters"],
    # SourceCode delivers source_dir as the `code` channel and runs `command` there.
    source_code=SourceCode(source_dir=args["source_dir"], command="train")
    if args.get("source_dir")
    else None,
    local_container_root=args["root"],
)
trainer.train(
    input_data_config=[
        InputData(channel_name=name, data_source=path) for name, path in args["channels"].items()
    ]
)
print("RESULT " + json.dumps({"root": args["root"]}), flush=True)
