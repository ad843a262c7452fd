# CPU image of hf_mtl: installs exactly as .ci/run does, then runs the offline demo by default.
#   docker build -t hf_mtl . && docker run --rm hf_mtl
#   docker run --rm hf_mtl python -m pytest        # the test suite instead
FROM python:3.11-slim

WORKDIR /hf_mtl
COPY . .
RUN python -m pip install --quiet --upgrade pip
RUN python -m pip install --quiet torch==2.13.0
RUN python -m pip install --quiet -e ".[dev]"

ENV HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
CMD ["python", "run_mtl.py", "configs/demo.json"]
