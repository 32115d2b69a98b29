"""Persistence in FengWu's ONNX contract at 721x1440: input (1, 138, 721, 1440) = frames t-6h, t
(FengWu-normalised); output (1, 138, 721, 1440) = [x(t), x(t-6h)] (channels [:69]: the newer frame,
i.e. persistence; 138 channels like the release's extra outputs).

    python results/era5-025-rehearsal/make_onnx.py /tmp/era5-025/fengwu.onnx
"""

import sys

import onnx
import torch


class Persistence(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x[:, 69:138], x[:, 0:69]], dim=1)


def dims(values) -> list:
    return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/era5-025/fengwu.onnx"
    torch.onnx.export(Persistence().eval(), (torch.zeros(1, 138, 721, 1440),), path,
                      input_names=["input"], output_names=["output"], dynamo=True,
                      verbose=False)
    model = onnx.load(path)
    print(dims(model.graph.input), dims(model.graph.output))
