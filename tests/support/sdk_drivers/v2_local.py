"""SDK v2 in local mode: Estimator.fit, deploy, predict with the numpy serializer, delete_endpoint.

python v2_local.py '{"image": ..., "channels": {...}, "output": ..., "root": ..., "port": ...,
                     "hyperparameters": {...}, "source_dir": null | "...", "entry_point": ...,
                     "predict": null | "x.npy",
                     "transforms": [{"input": dir, "output": dir, "content_type": ..., "accept": ...,
                                     "split_type": "Line" | null, "strategy": ...}, ...]}'
Each transform is a batch transform job with AssembleWith=Line; its output files are returned.
"""

import json
import sys
from pathlib import Path

import boto3
import numpy as np
from sagemaker.deserializers import NumpyDeserializer
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession
from sagemaker.serializers import NumpySerializer

args = json.loads(sys.argv[1])
session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
session.config = {"local": {"local_code": True, "container_root": args["root"], "serving_port": args["port"]}}
estimator = Estimator(
    image_uri=args["image"],
    role="arn:aws:iam::123456789012:role/optuna-training",
    instance_count=args.get("instance_count", 1),
    instance_type="local",
    output_path=args["output"],
    hyperparameters=args["hyperparameters"],
    source_dir=args.get("source_dir"),
    entry_point=args.get("entry_point"),
    sagemaker_session=session,
)
estimator.fit({name: f"file://{path}" for name, path in args["channels"].items()}, job_name=args["job"])
result = {"model_data": estimator.model_data}
if args.get("predict"):
    predictor = estimator.deploy(
        initial_instance_count=1,
        instance_type="local",
        serializer=NumpySerializer(),
        deserializer=NumpyDeserializer(allow_pickle=False),
    )
    try:
        result["predictions"] = np.asarray(predictor.predict(np.load(args["predict"]))).tolist()
    finally:
        predictor.delete_endpoint()
for job in args.get("transforms", []):
    transformer = estimator.transformer(
        instance_count=1,
        instance_type="local",
        strategy=job["strategy"],
        assemble_with="Line",
        accept=job["accept"],
        output_path=f"file://{job['output']}",
    )
    transformer.transform(
        f"file://{job['input']}", content_type=job["content_type"], split_type=job["split_type"]
    )
    transformer.wait()
    outputs = {p.name: p.read_text() for p in sorted(Path(job["output"]).iterdir())}
    result.setdefault("transforms", []).append(outputs)
print("\nRESULT " + json.dumps(result), flush=True)  # a line of its own after the containers' output
