"""`make serve-demo`: serve a model locally and send it five test digits, as the AWS sample does.

python -m devtools.demo_client build/demo/model
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from devtools.localjob import digits_channels
from devtools.localserver import LocalServer
from serving import media
from serving.constants import ENV_WORKERS, ROUTE_INVOCATIONS

N_IMAGES = 5
SHADES = " .:-=+*#%@"  # 8x8 pixels in [0, 1] -> characters


def ascii_image(row: np.ndarray, side: int = 8) -> list[str]:
    levels = np.clip((row.reshape(side, side) * (len(SHADES) - 1)).round().astype(int), 0, len(SHADES) - 1)
    return ["".join(SHADES[v] * 2 for v in line) for line in levels]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    x_test, y_test = digits_channels()["test"]
    images, labels = x_test[:N_IMAGES], y_test[:N_IMAGES]
    body = io.BytesIO()
    np.save(body, images.reshape(N_IMAGES, 8, 8), allow_pickle=False)

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(args.model_dir, Path(tmp) / "serve.log", env={ENV_WORKERS: "1"}) as server,
    ):
        print(f"serve is up on port {server.port}; POST {ROUTE_INVOCATIONS} with {N_IMAGES} images as .npy")
        status, _, answer = server.request(
            "POST",
            ROUTE_INVOCATIONS,
            body.getvalue(),
            Content_Type=media.NPY,
            Accept=media.JSON,
        )
        if status != 200:
            raise SystemExit(
                f"/invocations answered {status}: {answer.decode(errors='replace')}\n{server.log()}"
            )
    predictions = json.loads(answer)["predictions"]
    pictures = [ascii_image(image) for image in images]
    gap = "   "
    print()
    for line in zip(*pictures, strict=True):
        print(gap.join(line))
    print(gap.join(f"predicted {p['label']:<6}" for p in predictions))
    print(gap.join(f"true      {int(t):<6}" for t in labels))
    correct = sum(int(p["label"]) == int(t) for p, t in zip(predictions, labels, strict=True))
    print(f"\n{correct}/{N_IMAGES} correct")


if __name__ == "__main__":
    main()
