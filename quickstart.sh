#!/usr/bin/env bash
# Set up convnet in .venv and run the whole tutorial pipeline on the embedded CIFAR-10 sample:
# show the data, train the tutorial CNN, plot its curves, evaluate it and classify pictures.
# The sample holds 2,500 CIFAR-10 images: training learns from 1,800 of its 2,000 training images,
# validates on the other 200 after each epoch, and evaluate scores the 500 test images.
# Works offline; about two minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/convnet ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,serve,onnx]'
fi
export PATH="$PWD/.venv/bin:$PATH"
run=runs/quickstart-$(date +%Y%m%d-%H%M%S)
sample_test=src/convnet/data/sample/cifar10/test
cats=("$sample_test"/cat/*.jpg)
ships=("$sample_test"/ship/*.jpg)

set -x
convnet summary --model tutorial
convnet show-data --data sample --count 10 --out "$run-samples.png"
convnet train --data sample --name "$(basename "$run")"
convnet evaluate "$run/model.safetensors" --data sample --split test
convnet predict "$run/model.safetensors" "${cats[@]:0:3}" "${ships[@]:0:3}" --top-k 2
set +x
echo "The run folder $run holds the model, config.json, history.csv, curves.png, samples.png and eval-test/ (confusion.png, mistakes.png)."
